"""The one-pass tiled path gives exactly the per-threshold labelling's boxes, and the scorer's
results do not depend on the path or on the worker count."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from wsl_bench.localize import SWEEP_GRID, WANG2017_THRESHOLDS, prepare
from wsl_bench.localize import components as comp_mod
from wsl_bench.localize.components import labelled_candidates, threshold_candidates
from wsl_bench.localize.tiles import tiled_candidates
from wsl_bench.metrics import score


def _as_set(boxes, level):
    return sorted(zip(np.asarray(level).tolist(), map(tuple, np.asarray(boxes).tolist())))


def _reference(norm, thr):
    """Plain labelling of every threshold at full resolution (no cropping, no tiles)."""
    out = []
    for k, t in enumerate(thr):
        lab, _ = ndi.label(norm > np.float32(t), structure=np.ones((3, 3)))
        out += [(k, (float(s[1].start), float(s[0].start), float(s[1].stop), float(s[0].stop))) for s in ndi.find_objects(lab)]
    return sorted(out)


def _smooth_map(rng, shape, sigma=1.0, flat=False):
    m = rng.random(shape).astype(np.float32) * 0.3
    r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    m[r : r + 3, c : c + 4] += 1.0
    m = ndi.gaussian_filter(m, sigma) if sigma else m
    if flat:  # an exactly flat plateau: float noise in the upsampled map, constant for thresholding
        m[: shape[0] // 2, : shape[1] // 2] = 0.3
    return m


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(8, 8), (7, 7), (6, 9), (14, 14), (32, 32)]),
       st.sampled_from([(96, 96), (128, 160), (224, 224), (256, 256)]), st.booleans(), st.booleans())
def test_tiled_equals_plain_labelling(seed, src, out, flat, sweep):
    rng = np.random.default_rng(seed)
    m = _smooth_map(rng, src, sigma=rng.choice([0.0, 0.7, 1.5]), flat=flat)
    norm, informative = prepare(m, out)
    assert informative
    thr = np.asarray(SWEEP_GRID if sweep else WANG2017_THRESHOLDS)
    got = tiled_candidates(norm, thr, m.shape)  # None: a property failed on the pixels, labelling takes over
    if got is not None:
        assert _as_set(*got) == _reference(norm, thr)
    c = threshold_candidates(norm, thr, source_shape=m.shape)
    assert _as_set(c.boxes, c.level) == _reference(norm, thr)  # whichever path it takes


def test_saddle_tiles_are_cut_and_still_exact():
    m = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.2], [0.7, 0.1, 0.9]], np.float32)  # saddles between peaks
    norm, _ = prepare(m, (96, 96))
    got = tiled_candidates(norm, np.asarray(SWEEP_GRID), m.shape)
    assert got is not None
    assert _as_set(*got) == _reference(norm, SWEEP_GRID)
    # two diagonal peaks of a 2x2 map meet at the saddle value 0.5: one box below it, two above
    norm, _ = prepare(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), (64, 64))
    boxes, level = tiled_candidates(norm, np.array([0.4, 0.6]), (2, 2))
    assert (level == 0).sum() == 1 and (level == 1).sum() == 2
    assert _as_set(boxes, level) == _reference(norm, [0.4, 0.6])


def test_known_answer_single_bump():
    """A 4x4 map with one bright cell, x16: the box at tau is where the bilinear tent exceeds tau."""
    m = np.zeros((4, 4), np.float32)
    m[1, 2] = 1.0
    norm, _ = prepare(m, (64, 64))
    boxes, level = tiled_candidates(norm, np.array([0.5]), m.shape)
    # along x the tent is 1 - |x - 40| / 16 at pixel centres x = c + 0.5: > 0.5 for c in 32..47
    assert boxes.tolist() == [[32.0, 16.0, 48.0, 32.0]] and level.tolist() == [0]


def test_fallbacks_to_labelling():
    rng = np.random.default_rng(0)
    m = rng.random((64, 64)).astype(np.float32)
    norm, _ = prepare(m, (64, 64))  # not upsampled: nothing to exploit
    assert tiled_candidates(norm, np.asarray(SWEEP_GRID), m.shape) is None
    norm, _ = prepare(m, (128, 128))  # x2: tiles too small
    assert tiled_candidates(norm, np.asarray(SWEEP_GRID), m.shape) is None
    c = threshold_candidates(norm, SWEEP_GRID, source_shape=m.shape)
    assert _as_set(c.boxes, c.level) == _reference(norm, SWEEP_GRID)
    # a map that is not a bilinear upsampling of `source_shape` fails the checks instead of guessing
    noisy = (prepare(_smooth_map(rng, (8, 8)), (128, 128))[0] + rng.random((128, 128)).astype(np.float32) * 0.2)
    noisy /= noisy.max()
    assert tiled_candidates(noisy, np.asarray(SWEEP_GRID), (8, 8)) is None
    # areas ("largest" rule) come from the labelling path
    c = threshold_candidates(norm, [0.5], need_area=True, source_shape=m.shape)
    assert c.areas.sum() > 0


# --- scorer level: NIH-geometry maps, old path vs new path, 1 vs 2 workers ---------------------


@pytest.fixture(scope="module")
def nih_small():
    import importlib.util
    from pathlib import Path

    from wsl_bench.metrics import read_bbox_csv

    path = Path(__file__).parent / "benchmarks" / "test_bench_scoring.py"
    spec = importlib.util.spec_from_file_location("_bench_scoring", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    boxes = read_bbox_csv(bench._nih_box_file())
    cam_like_maps = bench.cam_like_maps
    boxes = boxes.iloc[::41].reset_index(drop=True)  # 24 boxes, every class
    return boxes, cam_like_maps(boxes)


@pytest.mark.parametrize("policy", ["maxboxacc", "wang2017", "threshold"])
def test_new_exact_path_equals_old_exact_path(nih_small, policy, monkeypatch):
    boxes, maps = nih_small
    new = score(maps, boxes.copy(), 1024, policy=policy, n_boot=50)
    monkeypatch.setattr(comp_mod, "tiled_candidates", lambda *a, **k: None)  # the per-threshold labelling
    old = score(maps, boxes.copy(), 1024, policy=policy, n_boot=50)
    assert new.summary["policy_options"].get("sweep_size", 0) == 0
    assert new.per_box.equals(old.per_box)
    assert json.dumps(new.summary, sort_keys=True) == json.dumps(old.summary, sort_keys=True)


@pytest.mark.parametrize("policy", ["maxboxacc", "calibrated"])
def test_results_do_not_depend_on_workers(nih_small, policy, tmp_path):
    boxes, maps = nih_small
    for n in (1, 2):
        score(maps, boxes.copy(), 1024, policy=policy, n_boot=100, workers=n, out_dir=tmp_path / str(n))
    for name in ("per_box.csv", "summary.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_workers_option_is_checked(nih_small):
    boxes, maps = nih_small
    with pytest.raises(ValueError, match="workers"):
        score(maps, boxes.copy(), 1024, n_boot=0, workers=-1)
