"""CAN's balance and attention losses on tiny inputs whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.can import attention_agreement_loss, balance_loss, class_balance_weights, can_loss


def test_class_balance_weights_by_hand():
    w_pos, w_neg = class_balance_weights(torch.tensor([0.5, 0.25, 0.001]), max_weight=20.0)
    assert torch.allclose(w_pos, torch.tensor([1.0, 2.0, 20.0]))  # 1/(2p), clipped
    assert torch.allclose(w_neg, torch.tensor([1.0, 2 / 3, 0.5 / 0.999]))


def test_balance_loss_single_entries_by_hand():
    pos_frac = torch.tensor([0.25])
    zero = torch.zeros(1, 1)
    # positive at logit 0: w+ = 2, focal (1 - .5)^2 = .25, -log .5 -> 2 * .25 * ln2
    pos = balance_loss(zero, torch.ones(1, 1), pos_frac, gamma=2.0)
    assert pos.item() == pytest.approx(0.5 * math.log(2), rel=1e-6)
    # negative at logit 0: w- = 2/3, focal .5^2, -log .5
    neg = balance_loss(zero, torch.zeros(1, 1), pos_frac, gamma=2.0)
    assert neg.item() == pytest.approx(2 / 3 * 0.25 * math.log(2), rel=1e-6)
    # the mean over a [1,2]-shaped batch of one positive and one negative entry
    both = balance_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([0.25, 0.25]), gamma=2.0)
    assert both.item() == pytest.approx((pos.item() + neg.item()) / 2, rel=1e-6)


def test_balance_loss_without_balance_or_focus_is_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 14, generator=g) * 3
    labels = (torch.rand(6, 14, generator=g) < 0.3).float()
    ours = balance_loss(logits, labels, gamma=0.0, mode="none")
    assert ours.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, labels).item(), rel=1e-6)
    # balanced classes (p = .5) weigh 1, so mode "dataset" equals BCE too
    half = torch.full((14,), 0.5)
    assert balance_loss(logits, labels, half, gamma=0.0).item() == pytest.approx(ours.item(), rel=1e-6)


def test_focal_factor_down_weights_easy_samples():
    labels = torch.ones(1, 2)
    logits = torch.tensor([[4.0, -1.0]])  # easy and hard positives
    bce = -F.logsigmoid(logits)[0]
    focal = torch.stack([balance_loss(logits[:, i:i + 1], labels[:, :1], gamma=2.0, mode="none") for i in range(2)])
    assert (focal / bce)[0] < (focal / bce)[1]  # the easy one keeps a smaller share of its loss
    p = torch.sigmoid(logits[0, 0])
    assert focal[0].item() == pytest.approx(((1 - p) ** 2 * bce[0]).item(), rel=1e-6)


def test_balance_loss_batch_mode_and_errors():
    labels = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    # batch mode: p = (1 + 1) / (4 + 2) = 1/3 -> w+ = 1.5, w- = .75
    got = balance_loss(torch.zeros(4, 1), labels, gamma=0.0, mode="batch")
    assert got.item() == pytest.approx((1.5 + 3 * 0.75) * math.log(2) / 4, rel=1e-6)
    with pytest.raises(ValueError, match="pos_frac"):
        balance_loss(torch.zeros(1, 1), torch.ones(1, 1), None, mode="dataset")
    with pytest.raises(ValueError, match="balance mode"):
        balance_loss(torch.zeros(1, 1), torch.ones(1, 1), mode="bogus")


def test_attention_agreement_by_hand():
    a = torch.zeros(1, 2, 2, 2)
    b = torch.zeros(1, 2, 2, 2)
    a[0, 0, 0, 0] = 1.0  # class 0: branch a attends top-left,
    b[0, 0, 0, 0] = 2.0  # branch b too (scale does not matter) -> cos 1
    a[0, 1, 0, 0] = 1.0  # class 1: disjoint attention -> cos 0
    b[0, 1, 1, 1] = 1.0
    both = torch.tensor([[1.0, 1.0]])
    assert attention_agreement_loss(a, b, both).item() == pytest.approx(0.5)  # mean of (0, 1)
    assert attention_agreement_loss(a, b, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-7)
    assert attention_agreement_loss(a, b, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)
    assert attention_agreement_loss(a, b, torch.zeros(1, 2)).item() == 0.0
    # negative evidence is rectified away: -map counts as no attention
    assert attention_agreement_loss(a, -b, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(1.0)


def test_can_loss_switches():
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(2, 14, generator=g) for k in ("logits", "logits_a", "logits_b")}
    out.update({k: torch.randn(2, 14, 3, 3, generator=g) for k in ("cam_a", "cam_b")})
    labels = (torch.rand(2, 14, generator=g) < 0.5).float()
    cfg = {"focal_gamma": 0.0, "balance": "none", "max_weight": 20.0, "w_branch": 0.0, "w_agree": 0.0}
    plain, logs = can_loss(out, labels, cfg, None)
    assert plain.item() == pytest.approx(F.binary_cross_entropy_with_logits(out["logits"], labels).item(), rel=1e-6)
    assert set(logs) == {"balance"}
    full, logs = can_loss(out, labels, {**cfg, "w_branch": 0.5, "w_agree": 0.1}, None)
    expect = plain + 0.5 * 0.5 * (F.binary_cross_entropy_with_logits(out["logits_a"], labels)
                                  + F.binary_cross_entropy_with_logits(out["logits_b"], labels)) \
        + 0.1 * attention_agreement_loss(out["cam_a"], out["cam_b"], labels)
    assert full.item() == pytest.approx(expect.item(), rel=1e-6)
    assert set(logs) == {"balance", "branch", "agree"}
