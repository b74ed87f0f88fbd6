"""The exact shortcuts of the enlarged-map path give today's numbers bit for bit: thresholds applied to
the upsampled map at their levels, the binned level lookup, rows upsampled in strips, the tiled
component tree with its signs read from the source map, and the vectorised bootstrap intervals."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from wsl_bench.localize import SWEEP_GRID, WANG2017_THRESHOLDS, prepare, sweep_overlaps, upsample
from wsl_bench.localize.components import level_candidates
from wsl_bench.localize.maps import ROUNDING, RowStrips, _bilinear_weights, exact_axes, prepare_map, row_strips
from wsl_bench.localize.tiles import Levels, tiled_candidates
from wsl_bench.metrics.bootstrap import percentile_ci
from wsl_bench.metrics.pixel import MIOU_THRESHOLDS

EIGHT = np.ones((3, 3), bool)
GEOMETRIES = [((32, 32), (1024, 1024)), ((7, 7), (224, 224)), ((14, 14), (224, 224)), ((16, 24), (512, 768)),
              ((9, 13), (288, 832)), ((6, 9), (200, 300)), ((32, 20), (1024, 900)), ((4, 4), (256, 256)),
              ((2, 3), (64, 96))]


def _map(rng, shape, kind):
    m = rng.random(shape).astype(np.float32) * 0.3
    r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    m[r : r + 3, c : c + 4] += 1.0
    if kind in ("smooth", "flat"):
        m = ndi.gaussian_filter(m, 1.0)
    if kind == "flat":  # an exactly flat plateau: float noise in the upsampled map
        m[: shape[0] // 2, : shape[1] // 2] = 0.3
    elif kind == "ties":
        m = np.round(m * 4) / 4
    elif kind == "signed":
        m = (m - 0.6) * 1e4 + 3e3
    elif kind == "offset":  # a small range far from zero
        m = m * 1e-3 + 1000
    return m.astype(np.float32)


def _labelled(mask):
    lab, _ = ndi.label(mask, structure=EIGHT)
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndi.find_objects(lab)]


def _as_set(boxes, level):
    return sorted(zip(np.asarray(level).tolist(), map(tuple, np.asarray(boxes).astype(int).tolist())))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 300), st.booleans(), st.booleans())
def test_levels_table_equals_binary_search(seed, k, ties, wide):
    rng = np.random.default_rng(seed)
    thr = np.sort(rng.normal(0, 10 if wide else 0.01, k)).astype(np.float32)
    if ties:
        thr = np.sort(np.repeat(thr[: max(1, k // 3)], 3))
    v = np.r_[rng.normal(0, 12 if wide else 0.02, 5000), thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf),
              -np.inf, np.inf, 1e30, -1e30].astype(np.float32)
    np.testing.assert_array_equal(Levels(thr)(v), np.searchsorted(thr, v, side="left"))


@pytest.mark.parametrize("kind", ["smooth", "ties", "signed", "offset"])
def test_levels_threshold_the_upsampled_map_as_the_normalised_one(kind):
    rng = np.random.default_rng(len(kind))
    ts = np.r_[SWEEP_GRID, WANG2017_THRESHOLDS, MIOU_THRESHOLDS, rng.random(30), -0.5, 0.0, 1.0, 1.5, 0.99999994]
    for src, out in GEOMETRIES[:4]:
        m = _map(rng, src, kind)
        norm, _ = prepare(m, out)
        pm = prepare_map(m, out)
        for t, v in zip(ts, pm.levels(ts)):
            np.testing.assert_array_equal(pm.u > v, norm > np.float32(t))
        np.testing.assert_array_equal(pm.norm, norm)


@pytest.mark.parametrize("src, out", GEOMETRIES)
def test_row_strips_equal_the_whole_map(src, out):
    rng = np.random.default_rng(src[0] * 7 + out[1])
    m = _map(rng, src, "signed")
    full = upsample(m, out)
    strips = row_strips(m, out)
    if strips is None:  # rows not enlarged by a power of two: the whole map is upsampled at once
        assert out[0] % src[0] or (out[0] // src[0]) & (out[0] // src[0] - 1)
        return
    n = len(strips.done)
    for _ in range(6):  # bands in random runs and orders, in place and through a buffer
        p = int(rng.integers(0, n))
        q = int(rng.integers(p + 1, n + 1))
        ax = strips.axis
        strips.rows(int(ax.starts[p]), int(ax.ends[q - 1]))
        done = np.repeat(strips.done, ax.ends - ax.starts)
        np.testing.assert_array_equal(strips.out[done], full[done])
    strips.all()
    np.testing.assert_array_equal(strips.out, full)


@pytest.mark.parametrize("src, out", GEOMETRIES[:5])
def test_prefetched_and_deferred_maps_equal_prepare(src, out):
    rng = np.random.default_rng(3)
    for kind in ("smooth", "ties", "signed", "offset"):
        m = _map(rng, src, kind)
        norm, informative = prepare(m, out)
        for hint in (None, [0.6], [0.0, 0.99], [0.5]):
            pm = prepare_map(m, out)
            if hint is not None:
                pm.prefetch(hint, [(0, 3), (out[0] // 2, out[0] // 2 + 40)])
            assert pm.informative == informative
            assert pm.peak == tuple(int(v) for v in np.unravel_index(int(np.argmax(norm)), norm.shape))
            np.testing.assert_array_equal(pm.norm, norm)
    flat = prepare_map(np.full(src, 2.5, np.float32), out)
    flat.prefetch([0.5])
    assert not flat.informative and not flat.norm.any()


def test_exact_axes_and_the_rounding_bound():
    assert exact_axes((32, 32), (1024, 1024)) is not None and exact_axes((7, 7), (224, 224)) is not None
    assert exact_axes((14, 14), (1000, 1000)) is None  # not a power-of-two enlargement
    assert exact_axes((32, 32), (64, 64)) is None  # too little enlargement for tiles
    rng = np.random.default_rng(0)
    for src, out in GEOMETRIES[:4]:
        for scale in (1e-3, 1.0, 1e4):
            s = (rng.standard_normal(src) * scale + rng.choice([0.0, 10 * scale])).astype(np.float32)
            exact = _bilinear_weights(out[0], src[0]) @ s.astype(np.float64) @ _bilinear_weights(out[1], src[1]).T
            err = np.abs(upsample(s, out).astype(np.float64) - exact).max()
            assert err <= ROUNDING / 4 * np.abs(s).max()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(GEOMETRIES[:5]),
       st.sampled_from(["smooth", "flat", "ties", "signed", "noise"]), st.booleans())
def test_tiled_with_source_signs_equals_plain_labelling(seed, geometry, kind, sweep):
    src, out = geometry
    rng = np.random.default_rng(seed)
    m = _map(rng, src, kind)
    pm = prepare_map(m, out)
    if not pm.informative:
        return
    grid = np.asarray(SWEEP_GRID if sweep else WANG2017_THRESHOLDS)
    levels = pm.levels(grid)
    ref = sorted((k, b) for k, t in enumerate(grid) for b in _labelled(pm.norm > np.float32(t)))
    got = tiled_candidates(pm.u, levels, m.shape, source=pm.source)
    if got is not None:  # None: a property failed on the pixels, labelling takes over
        assert _as_set(*got) == ref
        plain = tiled_candidates(pm.u, levels, m.shape)  # signs from the pixels: the same boxes
        assert plain is not None and _as_set(*plain) == ref
    c = level_candidates(pm.u, levels.astype(np.float64), source_shape=m.shape, source=pm.source)
    assert _as_set(c.boxes, c.level) == ref


def test_sweep_on_the_upsampled_map_equals_the_normalised_sweep():
    rng = np.random.default_rng(11)
    gt = np.array([[100.0, 200.0, 400.0, 500.0], [600.0, 50.0, 700.0, 300.0]])
    for kind in ("smooth", "ties", "signed", "offset"):
        m = _map(rng, (32, 32), kind)
        norm, informative = prepare(m, (1024, 1024))
        pm = prepare_map(m, (1024, 1024))
        ref = sweep_overlaps(norm, informative, gt, (1024, 1024), SWEEP_GRID, ("all", "largest"), source_shape=m.shape)
        got = sweep_overlaps(pm.u, True, gt, (1024, 1024), SWEEP_GRID, ("all", "largest"), source_shape=m.shape,
                             levels=pm.levels(SWEEP_GRID), source=pm.source)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)


def test_row_strips_leave_uncomputed_rows_alone():
    m = _map(np.random.default_rng(5), (32, 32), "smooth")
    strips = row_strips(m, (1024, 1024))
    assert isinstance(strips, RowStrips)
    ax = strips.axis
    strips.rows(int(ax.starts[10]), int(ax.ends[12]))
    strips.rows(int(ax.starts[14]), int(ax.ends[14]))  # a neighbour-free band, written in place
    strips.rows(int(ax.starts[13]), int(ax.ends[13]))  # between two computed bands: through a buffer
    full = upsample(m, (1024, 1024))
    r0, r1 = int(ax.starts[10]), int(ax.ends[14])
    np.testing.assert_array_equal(strips.out[r0:r1], full[r0:r1])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.001, 0.05]), st.booleans())
def test_percentile_ci_equals_nanquantile(seed, p_nan, all_nan_column):
    rng = np.random.default_rng(seed)
    x = rng.random((300, 6, 5))
    x[rng.random(x.shape) < p_nan] = np.nan
    if all_nan_column:
        x[:, 2, 3] = np.nan
    lo, hi = percentile_ci(x, 0.95)
    a = (1 - 0.95) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(lo, np.nanquantile(x, a, axis=0))
        np.testing.assert_array_equal(hi, np.nanquantile(x, 1 - a, axis=0))


def test_row_strips_do_not_depend_on_torch_threads():
    import torch

    m = _map(np.random.default_rng(9), (32, 32), "signed")
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        full = upsample(m, (1024, 1024))
        torch.set_num_threads(2)
        strips = row_strips(m, (1024, 1024))
        ax = strips.axis
        strips.rows(int(ax.starts[5]), int(ax.ends[9]))
        strips.all()
    finally:
        torch.set_num_threads(prev)
    np.testing.assert_array_equal(strips.out, full)
