"""CLARiTy's losses, pooling, map aggregation and fusion on tiny hand-checked inputs."""

from __future__ import annotations

import math

import pytest
import torch

from clarity.config import ClarityConfig
from clarity.losses import (
    background_loss,
    clarity_losses,
    distillation_loss,
    foreground_loss,
    orthogonal_loss,
    prior_on_grid,
)
from clarity.model import aggregate_maps
from clarity.segmentcam import fuse_maps, lse_pool


def test_orthogonal_loss_known_values():
    assert orthogonal_loss(torch.eye(3, 5)).item() == pytest.approx(0.0, abs=1e-7)
    assert orthogonal_loss(torch.ones(4, 6)).item() == pytest.approx(1.0)  # all parallel
    # two tokens at 60 degrees: cos = 0.5, off-diagonal squares 2 * 0.25 over c(c-1) = 2 entries
    t = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    assert orthogonal_loss(t).item() == pytest.approx(0.25)
    # scale-invariant (tokens are normalised) and batched = mean over images
    assert orthogonal_loss(3 * t).item() == pytest.approx(0.25)
    assert orthogonal_loss(torch.stack([t, torch.eye(2)])).item() == pytest.approx(0.125)


def test_orthogonal_loss_gradient_pushes_tokens_apart():
    t = torch.tensor([[1.0, 0.2], [1.0, -0.1]], requires_grad=True)
    before = orthogonal_loss(t).item()
    orthogonal_loss(t).backward()
    with torch.no_grad():
        t -= 0.5 * t.grad
    assert orthogonal_loss(t).item() < before


def test_distillation_loss_known_values():
    s = torch.tensor([[0.3, -1.0]])
    assert distillation_loss(s, s.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # one class, T=1: KL(Bern(p) || Bern(q)) with p = sigmoid(0) = .5, q = sigmoid(2)
    q = 1 / (1 + math.exp(-2.0))
    kl = 0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q))
    assert distillation_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), 1.0).item() == pytest.approx(kl, rel=1e-5)
    # temperature: logits divided by T, loss scaled by T^2
    assert distillation_loss(torch.tensor([[4.0]]), torch.tensor([[0.0]]), 2.0).item() == pytest.approx(4 * kl, rel=1e-5)
    # the teacher gets no gradient
    t = torch.tensor([[1.0]], requires_grad=True)
    distillation_loss(torch.tensor([[0.0]], requires_grad=True), t, 1.0).backward()
    assert t.grad is None


def test_prior_on_grid_is_area_average():
    prior = torch.zeros(1, 1, 4, 4)
    prior[0, 0, :2, :2] = 1
    prior[0, 0, 2:, 2:3] = 1
    g = prior_on_grid(prior, (2, 2))
    assert g[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.5]]


def test_foreground_and_background_losses_known_values():
    prior = torch.tensor([[[[1.0, 0.0]]]])  # [1,1,1,2]: left is lung
    fg = torch.tensor([[[[0.0, 0.0]]]])  # p = .5 everywhere
    assert foreground_loss(fg, prior).item() == pytest.approx(math.log(2))
    # class activation: class 0 on only inside, class 1 on (p=.5) outside too
    seg = torch.tensor([[[[5.0, -30.0]], [[5.0, 0.0]]]])  # [1,2,1,2]
    assert background_loss(seg, prior).item() == pytest.approx((0.0 + 0.5) / 2, abs=1e-6)
    assert background_loss(torch.full((1, 2, 1, 2), -30.0), prior).item() == pytest.approx(0.0, abs=1e-6)


def test_lse_pool_between_mean_and_max():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    assert lse_pool(torch.full((1, 1, 3, 3), 2.5), 5.0).item() == pytest.approx(2.5)
    assert lse_pool(x, 1e-4).item() == pytest.approx(1.5, abs=1e-3)  # mean
    assert lse_pool(x, 200.0).item() == pytest.approx(3.0, abs=0.01)  # max
    v = lse_pool(x, 5.0).item()
    assert 1.5 < v < 3.0


def test_aggregate_maps_renormalises_and_combines():
    # 1 image, 2 blocks, 1 head, prefix 2 (2 class tokens), 2 patches
    b1 = torch.tensor([[[[0.2, 0.2, 0.3, 0.3], [0.1, 0.1, 0.8, 0.0]]]])
    b2 = torch.tensor([[[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.8]]]])
    m = aggregate_maps([b1, b2], n_cls=2, n_prefix=2, head_agg="mean", block_agg="mean")
    torch.testing.assert_close(m[0], torch.tensor([[0.5, 0.5], [0.6, 0.4]]))
    last = aggregate_maps([b1, b2], 2, 2, "mean", "last")
    torch.testing.assert_close(last[0], torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
    prod = aggregate_maps([b1, b2], 2, 2, "mean", "product")
    assert prod[0, 1, 1].item() == pytest.approx(0.0, abs=1e-5)  # one block says zero -> near zero
    heads = torch.cat([b1, b2], dim=1)  # two heads in one block
    mx = aggregate_maps([heads], 2, 2, "max", "mean")
    assert mx[0, 1].tolist() == pytest.approx([1 / 1.8, 0.8 / 1.8])  # max(1,.2), max(0,.8) renormalised


def _fake_out(att, seg=None, fg=None):
    out = {"class_maps": att}
    if seg is not None:
        out.update(seg_maps=seg, fg_logits=fg)
    return out


def test_fuse_maps_rules():
    att = torch.tensor([[[[0.1, 0.3]]]])  # scaled to max 1 -> [1/3, 1]
    assert fuse_maps(_fake_out(att), "geomean", True)[0, 0, 0].tolist() == pytest.approx([1 / 3, 1.0])
    seg = torch.tensor([[[[0.0, 0.0]]]])  # sigmoid .5 everywhere
    fg = torch.tensor([[[[30.0, -30.0]]]])  # fg 1 left, 0 right
    # SegmentCAM map = sigmoid(seg)*fg scaled to max 1 -> [1, 0]
    out = _fake_out(att, seg, fg)
    assert fuse_maps(out, "segmentcam", False)[0, 0, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert fuse_maps(out, "mean", False)[0, 0, 0].tolist() == pytest.approx([2 / 3, 0.5], abs=1e-6)
    assert fuse_maps(out, "max", False)[0, 0, 0].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert fuse_maps(out, "geomean", False)[0, 0, 0].tolist() == pytest.approx([math.sqrt(1 / 3), 0.0], abs=1e-6)
    # suppression multiplies by the foreground: the right half goes to 0 for every rule
    assert fuse_maps(out, "attention", True)[0, 0, 0].tolist() == pytest.approx([1 / 3, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="fusion"):
        fuse_maps(out, "bogus", True)
    # a floor lifts the fused map before suppression: fg * (f + (1 - f) * fused)
    assert fuse_maps(out, "attention", True, 0.25)[0, 0, 0].tolist() == pytest.approx([0.25 + 0.75 / 3, 0.0], abs=1e-6)
    assert fuse_maps(out, "attention", False, 0.25)[0, 0, 0].tolist() == pytest.approx([1 / 3, 1.0], abs=1e-6)


def test_warmup_cosine_schedule_known_values():
    from wsl_bench.training import warmup_cosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_frac=0.2)  # 2 warm-up steps, then 8 of cosine
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[6] == pytest.approx(0.5)  # halfway through the cosine part
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.05


def _outputs(b=2, c=14, g=2, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return {
        "cls_logits": r(b, c), "dist_logits": r(b, c), "class_tokens": r(b, c, d),
        "seg_maps": r(b, c, g, g), "fg_logits": r(b, 1, g, g), "seg_logits": r(b, c),
    }


def test_clarity_losses_total_is_weighted_sum_and_switches_drop_terms():
    out = _outputs()
    labels = (torch.arange(28).reshape(2, 14) % 3 == 0).float()
    prior = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    teacher = torch.randn(2, 14, generator=torch.Generator().manual_seed(2))
    cfg = ClarityConfig(orth_weight=0.3, segcam_cls_weight=0.7, fg_weight=0.2, bg_weight=0.9, distill_weight=0.4)
    total, p = clarity_losses(out, labels, cfg, prior=prior, teacher_logits=teacher)
    expect = p["bce"] + 0.3 * p["orth"] + 0.7 * p["seg_bce"] + 0.2 * p["fg"] + 0.9 * p["bg"] + 0.4 * p["distill"]
    assert total.item() == pytest.approx(expect.item())
    assert p["distill"].item() == pytest.approx(distillation_loss(out["cls_logits"], teacher, 2.0).item())
    # switches: no orth, no prior, no teacher, no SegmentCAM outputs
    bare = {k: v for k, v in out.items() if k not in ("seg_maps", "fg_logits", "seg_logits")}
    total, p = clarity_losses(bare, labels, ClarityConfig(orth_weight=0.0))
    assert set(p) == {"bce", "total"} and total.item() == pytest.approx(p["bce"].item())
    # distillation token: the KD term is computed on the distillation head
    _, p = clarity_losses(out, labels, ClarityConfig(distill="token"), teacher_logits=teacher)
    assert p["distill"].item() == pytest.approx(distillation_loss(out["dist_logits"], teacher, 2.0).item())
    # orthogonality on the learned tokens instead of the per-image outputs
    param = torch.eye(14, 4)
    _, p = clarity_losses(out, labels, ClarityConfig(orth_target="params"), class_tokens_param=param)
    assert p["orth"].item() == pytest.approx(orthogonal_loss(param).item())
