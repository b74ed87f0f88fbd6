"""Heatmap -> boxes: geometry conventions, components, nested-threshold shortcut, policies."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from wsl_bench.localize import (
    SWEEP_GRID,
    box_mask,
    overlaps,
    prepare,
    sweep_overlaps,
    threshold,
    threshold_candidates,
    upsample,
    wang2017,
    xywh_to_xyxy,
)


def test_iou_known_answers():
    gt = xywh_to_xyxy([100, 200, 256, 128])
    iou, iobb = overlaps(gt, gt)
    assert iou[0, 0] == 1.0 and iobb[0, 0] == 1.0
    shifted = xywh_to_xyxy([100 + 128, 200, 256, 128])
    iou, iobb = overlaps(gt, shifted)
    assert iou[0, 0] == 1 / 3  # exactly: intersection w/2*h over union 3w/2*h
    assert iobb[0, 0] == 0.5
    inside = xywh_to_xyxy([150, 220, 10, 20])
    iou, iobb = overlaps(gt, inside)
    assert iobb[0, 0] == 1.0 and iou[0, 0] == pytest.approx(200 / (256 * 128))
    iou, iobb = overlaps(gt, xywh_to_xyxy([0, 0, 10, 10]))
    assert iou[0, 0] == 0 and iobb[0, 0] == 0


def test_box_mask_uses_pixel_centres():
    m = box_mask(xywh_to_xyxy([1.4, 0, 2, 1]), (2, 5))  # centres 1.5 and 2.5 lie in [1.4, 3.4)
    assert m[0].tolist() == [False, True, True, False, False] and not m[1].any()
    tiny = box_mask(xywh_to_xyxy([2.1, 1.1, 0.2, 0.2]), (4, 4))  # thinner than a pixel: its centre pixel
    assert tiny.sum() == 1 and tiny[1, 2]


def test_components_are_8_connected_boxes_with_exclusive_ends():
    m = np.zeros((10, 12), np.float32)
    m[2:4, 3:6] = 1.0
    m[4, 6] = 1.0  # touches the first blob diagonally -> same component
    m[8, 10] = 0.5
    c = threshold_candidates(m, [0.0, 0.6], need_area=True)
    by_level = {k: sorted(map(tuple, c.at(k).boxes.tolist())) for k in (0, 1)}
    assert by_level[0] == [(3, 2, 7, 5), (10, 8, 11, 9)]
    assert by_level[1] == [(3, 2, 7, 5)]
    assert sorted(c.at(0).areas.tolist()) == [1, 7]
    assert len(c.largest_per_level().at(0)) == 1
    assert tuple(c.largest_per_level().at(0).boxes[0]) == (3, 2, 7, 5)


def test_threshold_is_strict():
    m = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert len(threshold_candidates(m, [0.5]).boxes) == 1
    assert tuple(threshold_candidates(m, [0.5]).boxes[0]) == (2, 0, 3, 1)
    with pytest.raises(ValueError, match="increasing"):
        threshold_candidates(m, [0.5, 0.2])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 40))
def test_nested_cropping_equals_plain_labelling(seed, side):
    rng = np.random.default_rng(seed)
    norm, _ = prepare(rng.random((side // 4 + 2, side // 4 + 2)), (side, side + 3))
    thr = [0.0, 0.1, 0.35, 0.6, 0.9]
    fast = threshold_candidates(norm, thr)
    for k, t in enumerate(thr):
        lab, n = ndi.label(norm > np.float32(t), structure=np.ones((3, 3)))
        ref = sorted((s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndi.find_objects(lab))
        assert sorted(map(tuple, fast.at(k).boxes.astype(int).tolist())) == ref


def test_constant_and_zero_maps_are_uninformative():
    for m in (np.zeros((8, 8)), np.full((8, 8), 3.5)):
        norm, informative = prepare(m, (64, 64))
        assert not informative and not norm.any()
        assert len(wang2017().candidates(norm, informative)) == 0


def test_normalised_map_spans_exactly_0_1():
    rng = np.random.default_rng(1)
    norm, informative = prepare(rng.normal(size=(32, 32)) * 1e3 + 7, (1024, 1024))
    assert informative and norm.min() == 0.0 and norm.max() == 1.0 and norm.dtype == np.float32


def test_upsample_is_pixel_centre_aligned():
    u = upsample(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(u[0], [0.0, 0.25, 0.75, 1.0])


@pytest.mark.parametrize("policy", [wang2017(), threshold(0.5), threshold(0.2, "largest")])
def test_filled_rectangle_gives_iou_one(policy):
    m = np.zeros((1024, 1024), np.float32)
    m[300:420, 200:456] = 1.0
    norm, inf = prepare(m, (1024, 1024))
    c = policy.candidates(norm, inf)
    iou, _ = overlaps(xywh_to_xyxy([200, 300, 256, 120]), c.boxes)
    assert iou.max() == 1.0


def _grid_box_map(n, cell_box):
    m = np.zeros((n, n), np.float32)
    c0, r0, c1, r1 = cell_box
    m[r0:r1, c0:c1] = 1.0
    return m


@pytest.mark.parametrize("cells", [(8, 8, 16, 12), (0, 4, 6, 30), (20, 20, 32, 32), (3, 10, 7, 14)])
def test_32_map_matches_1024_map_within_tolerance(cells):
    """Documented tolerance: a 32x32 map of a grid-aligned box (cell = 32 px) gives the exact box at
    tau = 0.5, and box edges within ceil((0.5 - 60/255) * 32) = 9 px under wang2017."""
    gt = xywh_to_xyxy(np.array([cells[0], cells[1], cells[2] - cells[0], cells[3] - cells[1]]) * 32)
    small = _grid_box_map(32, cells)
    big = np.kron(small, np.ones((32, 32), np.float32))  # the same box drawn at 1024 x 1024
    for pol in (threshold(0.5), wang2017()):
        res = {}
        for name, m in (("small", small), ("big", big)):
            norm, inf = prepare(m, (1024, 1024))
            c = pol.candidates(norm, inf)
            res[name] = (c, overlaps(gt, c.boxes)[0].max())
        assert res["big"][1] == 1.0
        if pol.name == "threshold":
            assert res["small"][1] == 1.0
        else:
            for b in res["small"][0].boxes:
                assert np.abs(b - gt[0]).max() <= 9
            grown = gt[0] + np.array([-9, -9, 9, 9])
            floor = overlaps(gt, np.clip(grown, 0, 1024)[None])[0][0, 0]
            assert res["small"][1] >= floor - 1e-12


def test_sweep_equals_policy_at_each_threshold():
    rng = np.random.default_rng(3)
    norm, inf = prepare(rng.random((6, 6)), (96, 96))
    gt = xywh_to_xyxy([[10, 20, 30, 30], [50, 5, 20, 60]])
    grid = SWEEP_GRID[::7]
    iou, iobb = sweep_overlaps(norm, inf, gt, (96, 96), grid, ("all", "largest"))
    for r, rule in enumerate(("all", "largest")):
        for k, t in enumerate(grid):
            c = threshold(t, rule).candidates(norm, inf)
            i2, b2 = overlaps(gt, c.boxes)
            exp_iou = i2.max(axis=1) if len(c) else np.zeros(2)
            exp_iobb = b2.max(axis=1) if len(c) else np.zeros(2)
            np.testing.assert_allclose(iou[r, :, k], exp_iou)
            np.testing.assert_allclose(iobb[r, :, k], exp_iobb)


def test_sweep_on_coarse_working_grid_scales_boxes():
    m = np.zeros((1024, 1024), np.float32)
    m[256:512, 128:640] = 1
    gt = xywh_to_xyxy([128, 256, 512, 256])
    norm, inf = prepare(m, (256, 256))
    iou, _ = sweep_overlaps(norm, inf, gt, (1024, 1024), (0.5,), ("all",))
    assert iou[0, 0, 0] == 1.0


def test_sweep_working_grid_tolerance():
    """Documented: a sweep on a grid 4x coarser than the image gives per-(box, tau) best IoUs within
    0.01 at the median and 0.06 at the 99th percentile of the full-resolution sweep (CAM-like maps)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(4):
        m = rng.random((16, 16)).astype(np.float32) * 0.3
        x, y = rng.integers(0, 10, 2)
        w, h = rng.integers(2, 6, 2)
        m[y : y + h, x : x + w] += 1
        m = ndi.gaussian_filter(m, 1.0)
        gt = xywh_to_xyxy(np.array([x, y, w, h]) * 32)
        res = []
        for side in (128, 512):
            norm, inf = prepare(m, (side, side))
            res.append(sweep_overlaps(norm, inf, gt, (512, 512), SWEEP_GRID, ("all",))[0][0, 0])
        diffs.append(np.abs(res[0] - res[1]))
    d = np.concatenate(diffs)
    assert np.median(d) <= 0.01 and np.quantile(d, 0.99) <= 0.06


boxes_st = st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0.5, 300), st.floats(0.5, 300))


@settings(max_examples=200, deadline=None)
@given(boxes_st, boxes_st)
def test_overlap_properties(a, b):
    ga, gb = xywh_to_xyxy(a), xywh_to_xyxy(b)
    iou_ab, iobb_ab = overlaps(ga, gb)
    iou_ba, _ = overlaps(gb, ga)
    assert 0.0 <= iou_ab[0, 0] <= 1.0 + 1e-12 and 0.0 <= iobb_ab[0, 0] <= 1.0 + 1e-12
    assert iou_ab[0, 0] == pytest.approx(iou_ba[0, 0])
    assert iobb_ab[0, 0] >= iou_ab[0, 0] - 1e-12  # the union is never smaller than the predicted box


def test_pointing_tolerance_in_pixels():
    from wsl_bench.metrics.pixel import pointing_hits

    m = np.zeros((100, 100), np.float32)
    m[50, 40] = 1.0  # centre (40.5, 50.5), 4.5 px left of the box
    gt = xywh_to_xyxy([[45, 45, 10, 10]])
    assert not pointing_hits(m, True, gt, 0.0)[0]
    assert not pointing_hits(m, True, gt, 4.0)[0]
    assert pointing_hits(m, True, gt, 5.0)[0]
