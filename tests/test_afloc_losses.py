"""AFLoc's losses and map smoothing on tiny inputs whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from baselines.afloc import (
    gaussian_smooth,
    global_contrastive_loss,
    mask_margin,
    local_contrastive_loss,
    local_similarity,
    reports_from_labels,
)


def test_global_loss_orthogonal_pairs_by_hand():
    # cos matrix = identity, x temp3 10 -> each row CE = log(1 + e^-10); two rows averaged, two directions
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = global_contrastive_loss(img, img.clone(), temp3=10.0)
    assert loss.item() == pytest.approx(2 * math.log(1 + math.exp(-10)), rel=1e-5)


def test_global_loss_asymmetric_by_hand():
    # image 0 = text 0 = e1; image 1 = e2; text 1 = (e1+e2)/sqrt2 -> cos = [[1, r],[0, r]], r = 1/sqrt2
    r = 1 / math.sqrt(2)
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = 2.0
    s = torch.tensor([[1.0, r], [0.0, r]]) * t
    i2t = (-(s[0, 0] - torch.logsumexp(s[0], 0)) - (s[1, 1] - torch.logsumexp(s[1], 0))) / 2
    t2i = (-(s[0, 0] - torch.logsumexp(s[:, 0], 0)) - (s[1, 1] - torch.logsumexp(s[:, 1], 0))) / 2
    assert global_contrastive_loss(img, txt, temp3=t).item() == pytest.approx((i2t + t2i).item(), rel=1e-6)


def test_duplicate_reports_only_raise_the_floor():
    # images 0 and 1 share one report (identical text embeddings), image 2 has its own. Rows 0 and 1 see
    # logits [10, 10, 0] -> CE log(2 + e^-10); row 2 sees [0, 0, 10] -> log(1 + 2 e^-10); columns alike.
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    txt = img.clone()
    expected = 2 * (2 * math.log(2 + math.exp(-10)) + math.log(1 + 2 * math.exp(-10))) / 3
    assert global_contrastive_loss(img, txt, temp3=10.0).item() == pytest.approx(expected, rel=1e-9)
    # and the two duplicate images get no gradient pushing them apart
    img = img.clone().requires_grad_(True)
    global_contrastive_loss(img, txt, temp3=10.0).backward()
    assert torch.allclose(img.grad[0], img.grad[1])


def test_local_similarity_one_unit_two_regions_by_hand():
    # regions e1, e2; unit e1. dots [1, 0]; softmax over the single unit -> [1, 1]; x temp1 4 -> [4, 4];
    # softmax over regions -> [.5, .5]; context (.5, .5); cos(e1, context) = 1/sqrt2; one unit -> temp2 * cos
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    units = torch.tensor([[[1.0, 0.0]]])
    mask = torch.tensor([[True]])
    sim = local_similarity(regions, units, mask, temp1=4.0, temp2=5.0)
    assert sim.shape == (1, 1)
    assert sim.item() == pytest.approx(5.0 / math.sqrt(2), rel=1e-6)


def test_local_similarity_two_units_by_hand():
    # regions e1, e2; units e1 and 2*e2. Per region the softmax over units:
    # region e1: dots [1, 0] -> [e/(e+1), 1/(e+1)]; region e2: dots [0, 2] -> [1/(1+e^2), e^2/(1+e^2)].
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    units = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    mask = torch.tensor([[True, True]])
    e = math.e
    a = np.array([[e / (e + 1), 1 / (1 + e**2)], [1 / (e + 1), e**2 / (1 + e**2)]])  # [unit, region]
    t1, t2 = 4.0, 5.0
    w = np.exp(t1 * a) / np.exp(t1 * a).sum(1, keepdims=True)  # softmax over regions
    ctx = w @ np.eye(2)  # context of each unit
    u = np.array([[1.0, 0.0], [0.0, 2.0]])
    cos = (ctx * u).sum(1) / (np.linalg.norm(ctx, axis=1) * np.linalg.norm(u, axis=1))
    expected = math.log(np.exp(t2 * cos).sum())
    assert local_similarity(regions, units, mask, t1, t2).item() == pytest.approx(expected, rel=1e-6)


def test_local_similarity_ignores_padding_and_chunks_consistently():
    g = torch.Generator().manual_seed(0)
    regions = torch.randn(3, 5, 4, generator=g)
    units = torch.randn(3, 2, 4, generator=g)
    mask = torch.tensor([[True, False], [True, True], [True, True]])
    full = local_similarity(regions, units, mask)
    # replacing the padded unit by garbage changes nothing
    garbage = units.clone()
    garbage[0, 1] = 100.0
    assert torch.allclose(local_similarity(regions, garbage, mask), full)
    # text 0 alone equals its one real unit
    assert torch.allclose(local_similarity(regions, units[:1, :1], mask[:1, :1]), full[:, :1], atol=1e-6)
    # chunking over texts gives the same scores
    assert torch.allclose(local_similarity(regions, units, mask, chunk_elems=1), full, atol=1e-6)


def test_local_similarity_mean_aggregation_subtracts_log_units():
    # log mean_n exp(.) = log sum_n exp(.) - log N: texts with 3, 1 and 2 real units
    g = torch.Generator().manual_seed(2)
    regions = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    units = torch.randn(3, 3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    total = local_similarity(regions, units, mask, agg="sum")
    mean = local_similarity(regions, units, mask, agg="mean")
    expected = torch.log(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))[None].expand(2, 3)
    assert torch.allclose(total - mean, expected, atol=1e-12)
    with pytest.raises(ValueError, match="aggregation"):
        local_similarity(regions, units, mask, agg="max")


def test_local_loss_with_one_region_reduces_to_scaled_cosine():
    # one region per image: the attended context is that region, so scores = temp3 * temp2 * cos
    regions = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]])
    units = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    cos = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # [image, text]
    scores = cos * 5.0 * 10.0
    labels = torch.arange(2)
    expected = F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels)
    got = local_contrastive_loss(regions, units, mask, temp1=4.0, temp2=5.0, temp3=10.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_local_loss_prefers_matched_pairs():
    g = torch.Generator().manual_seed(1)
    units = F.normalize(torch.randn(4, 3, 8, generator=g), dim=-1)
    mask = torch.ones(4, 3, dtype=torch.bool)
    matched = torch.cat([units, torch.randn(4, 2, 8, generator=g) * 0.1], dim=1)  # regions contain the words
    shuffled = matched[torch.tensor([1, 2, 3, 0])]
    assert local_contrastive_loss(matched, units, mask) < local_contrastive_loss(shuffled, units, mask)


def test_gaussian_smooth_matches_scipy_nearest():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    ours = gaussian_smooth(maps, 1.5).numpy()
    ref = np.stack([[gaussian_filter(m, 1.5, mode="nearest", truncate=3.0) for m in b] for b in maps.numpy()])
    assert np.allclose(ours, ref, atol=1e-10)
    const = torch.full((1, 1, 5, 5), 3.0)
    assert torch.allclose(gaussian_smooth(const, 1.5), const)
    assert torch.equal(gaussian_smooth(const, 0.0), const)


def test_mask_margin_by_hand():
    # 4x4 map 0..15, margin 0.25 -> one cell per border; the inner 2x2 is [[5, 6], [9, 10]], its minimum 5
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    out = mask_margin(maps, 0.25)
    expected = torch.full((4, 4), 5.0)
    expected[1:3, 1:3] = torch.tensor([[5.0, 6.0], [9.0, 10.0]])
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(mask_margin(maps, 0.0), maps) and torch.equal(mask_margin(maps, 0.1), maps)  # < half a cell
    with pytest.raises(ValueError, match="loc_margin"):
        mask_margin(maps, 0.5)


def test_reports_from_labels_name_every_positive_and_are_seeded():
    labels = np.zeros((3, 14), dtype=np.float32)
    labels[0, 2] = 1  # Effusion
    labels[1, [0, 7]] = 1  # Atelectasis, Pneumothorax
    reports = reports_from_labels(labels, seed=3)
    assert "pleural effusion" in reports[0].lower()
    assert "atelectasis" in reports[1].lower() and "pneumothorax" in reports[1].lower()
    assert any(s in reports[2] for s in ("No acute", "clear", "normal"))
    assert reports == reports_from_labels(labels, seed=3)
    # negatives name absent findings only
    for sent in reports[1].split("."):
        if sent.strip().startswith("No "):
            assert "atelectasis" not in sent.lower() and "pneumothorax" not in sent.lower()
