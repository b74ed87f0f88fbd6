"""The scorer's fast paths give today's numbers exactly: `prepare_map` (peak and extremes from the
tiles a source map allows, the same `norm` as `prepare`), the tile rectangles that hold every pixel
above a level, component boxes from OpenCV's border following against scipy's labelling, and
`score` end to end against the plain full-pass path."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from wsl_bench.localize import SWEEP_GRID, WANG2017_THRESHOLDS, prepare
from wsl_bench.localize import components as comp_mod
from wsl_bench.localize.components import contour_boxes, threshold_candidates
from wsl_bench.localize.maps import PreparedMap, TileBounds, prepare_map, upsample
from wsl_bench.metrics import evaluator, score
from wsl_bench.metrics.pixel import MIOU_THRESHOLDS, pointing_hits, region_stats

EIGHT = np.ones((3, 3), bool)


def _scipy_boxes(mask):
    lab, _ = ndi.label(mask, structure=EIGHT)
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndi.find_objects(lab)]


def _cam_map(rng, shape, kind):
    m = rng.random(shape).astype(np.float32) * 0.3
    r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    m[r : r + 3, c : c + 4] += 1.0
    if kind == "smooth":
        m = ndi.gaussian_filter(m, 1.0)
    elif kind == "ties":  # two equal maxima, a plateau: the first one in row-major order wins
        m[:] = 0.2
        m[1, shape[1] - 2] = m[shape[0] - 2, 1] = 1.0
        m[: shape[0] // 2, : shape[1] // 3] = 1.0
    elif kind == "signed":  # negative, offset and large values
        m = (m - 0.6) * 1e4 + 3e3
    elif kind == "border":  # the maximum and minimum on the image border
        m[0, 0], m[-1, -1] = 5.0, -5.0
    return m.astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(32, 32), (7, 7), (14, 14), (6, 9), (20, 30)]),
       st.sampled_from([(1024, 1024), (224, 224), (256, 192), (1000, 900)]),
       st.sampled_from(["smooth", "noise", "ties", "signed", "border"]))
def test_prepare_map_equals_prepare(seed, src, out, kind):
    rng = np.random.default_rng(seed)
    m = _cam_map(rng, src, kind)
    norm, informative = prepare(m, out)
    pm = prepare_map(m, out)
    np.testing.assert_array_equal(pm.norm, norm)  # bit for bit
    assert pm.informative == informative
    assert pm.peak == tuple(int(v) for v in np.unravel_index(int(np.argmax(norm)), norm.shape))
    for t in (0.0, 0.1, 60 / 255, 0.5, 0.55, 0.7, 180 / 255, 0.75, 0.99):
        rect = pm.rect_above(t)
        above = norm > np.float32(t)
        if rect is None:
            assert not above.any()
        else:  # every pixel above t is inside the rectangle
            r0, r1, c0, c1 = rect
            assert np.count_nonzero(above[r0:r1, c0:c1]) == np.count_nonzero(above)


def test_tile_bounds_hold_every_pixel_and_skip_most_tiles():
    rng = np.random.default_rng(0)
    m = _cam_map(rng, (32, 32), "smooth")
    u = upsample(m, (1024, 1024))
    tb = TileBounds.of(m, (1024, 1024))
    assert tb is not None and tb.hi.shape == (32, 32)
    for i in range(32):
        for j in range(32):
            sub = u[tb.rows[i] : tb.rows[i + 1], tb.cols[j] : tb.cols[j + 1]]
            assert tb.lo[i, j] <= sub.min() and sub.max() <= tb.hi[i, j]
    assert tb.extremes(u) == (u.min(), u.max())
    pm = prepare_map(m, (1024, 1024))
    r0, r1, c0, c1 = pm.rect_above(0.7)
    assert (r1 - r0) * (c1 - c0) < 0.2 * 1024 * 1024  # the lesion's tiles, not the image


def test_no_bounds_without_enlargement():
    m = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    assert TileBounds.of(m, (64, 64)) is None and TileBounds.of(m, (128, 128)) is None  # x2: tiles too small
    pm = prepare_map(m, (64, 64))
    assert pm.bounds is None and pm.rect_above(0.5) == (0, 64, 0, 64)
    flat = prepare_map(np.zeros((8, 8), np.float32), (256, 256))
    assert not flat.informative and flat.peak is None and flat.rect_above(0.0) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 40), st.floats(0.05, 0.95), st.booleans())
def test_contour_boxes_equal_scipy_labelling(seed, h, w, p, dilate):
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < p
    if dilate:
        mask = ndi.binary_dilation(mask)
    assert [tuple(b) for b in contour_boxes(mask).tolist()] == _scipy_boxes(mask)  # same boxes, same order


def test_contour_boxes_island_in_hole_and_edges():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    mask[2:7, 2:7] = False  # a ring
    mask[4, 4] = True  # an island in its hole: a component of its own
    mask[0, 8] = True  # diagonal neighbour of the ring: 8-connected to it
    assert contour_boxes(mask).tolist() == [[1, 0, 9, 8], [4, 4, 5, 5]] == [list(b) for b in _scipy_boxes(mask)]
    assert contour_boxes(np.zeros((3, 4), bool)).shape == (0, 4)
    assert contour_boxes(np.ones((1, 1), bool)).tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize("thr", [WANG2017_THRESHOLDS, (0.5,), MIOU_THRESHOLDS, SWEEP_GRID[::7]])
@pytest.mark.parametrize("kind", ["smooth", "noise", "ties", "signed"])
def test_candidates_with_rectangles_equal_plain_labelling(monkeypatch, thr, kind):
    rng = np.random.default_rng(len(thr) * 7 + len(kind))
    for src, out in (((32, 32), (1024, 1024)), ((7, 7), (224, 224)), ((12, 9), (200, 300))):
        m = _cam_map(rng, src, kind)
        pm = prepare_map(m, out)
        fast = threshold_candidates(pm.norm, thr, rect_above=pm.rect_above)
        ref = [(k, b) for k, t in enumerate(thr) for b in _scipy_boxes(pm.norm > np.float32(t))]
        assert list(zip(fast.level.tolist(), map(tuple, fast.boxes.astype(int).tolist()))) == ref
        monkeypatch.setattr(comp_mod, "cv2", None)  # scipy labelling: same boxes
        slow = threshold_candidates(pm.norm, thr)
        monkeypatch.undo()
        np.testing.assert_array_equal(slow.boxes, fast.boxes)
        np.testing.assert_array_equal(slow.level, fast.level)
        gt = np.array([[100.0, 50.0, 180.0, 150.0], [10.0, 10.0, 40.0, 30.0]])
        assert region_stats(pm.norm, gt, rect_above=pm.rect_above) == region_stats(pm.norm, gt)
        np.testing.assert_array_equal(pointing_hits(pm.norm, pm.informative, gt, peak=pm.peak),
                                      pointing_hits(pm.norm, pm.informative, gt))


def _plain_prepare_map(heatmap, size):
    norm, informative = prepare(heatmap, size)
    return PreparedMap(norm, informative, None)


@pytest.mark.parametrize("policy", ["wang2017", "threshold", "maxboxacc", "calibrated"])
def test_score_equals_plain_full_pass_path(monkeypatch, policy):
    """End to end: the per-box table and the summary equal those of the plain path (full passes for
    the extremes, peak and foreground counts, scipy labelling of every threshold)."""
    rng = np.random.default_rng(3)
    rows, maps = [], {}
    for i in range(24):
        label = ["Mass", "Nodule", "Effusion"][i % 3]
        x, y = rng.uniform(0, 700, 2)
        w, h = rng.uniform(20, 300, 2)
        rows.append((f"img{i:03d}.png", label, x, y, w, h))
        kind = ["smooth", "noise", "ties", "signed"][i % 4]
        maps[f"img{i:03d}.png::{label}"] = _cam_map(rng, (32, 32), kind)
    boxes = pd.DataFrame(rows, columns=["image_id", "label", "x", "y", "w", "h"])
    fast = score(maps, boxes.copy(), 1024, policy=policy, n_boot=50)
    monkeypatch.setattr(evaluator, "prepare_map", _plain_prepare_map)
    monkeypatch.setattr(comp_mod, "cv2", None)
    plain = score(maps, boxes.copy(), 1024, policy=policy, n_boot=50)
    exact = [c for c in fast.per_box.columns if c != "cnr"]
    pd.testing.assert_frame_equal(fast.per_box[exact], plain.per_box[exact], check_exact=True)
    # CNR: closed-form float64 sums of the whole map against float32 accumulation over its pixels
    np.testing.assert_allclose(fast.per_box["cnr"], plain.per_box["cnr"], rtol=1e-4, atol=1e-6)
    for key in ("iou_acc", "iobb_acc", "pointing", "miou", "maxboxacc", "calibration"):
        assert fast.summary.get(key) == plain.summary.get(key)


def test_closed_form_sums_match_the_pixels():
    rng = np.random.default_rng(5)
    for src, out, kind in (((32, 32), (1024, 1024), "smooth"), ((7, 7), (224, 224), "signed"), ((6, 9), (200, 300), "noise")):
        m = _cam_map(rng, src, kind)
        pm = prepare_map(m, out)
        s, q = pm.sums()
        norm = prepare(m, out)[0].astype(np.float64)
        assert s == pytest.approx(norm.sum(), rel=1e-6) and q == pytest.approx((norm * norm).sum(), rel=1e-6)
