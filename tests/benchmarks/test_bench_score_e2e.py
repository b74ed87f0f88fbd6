"""`wsl_bench.metrics.score` end to end against plain references, side by side in one process.

The 984 real NIH boxes (geometry from the torchxrayvision wheel) and the CAM-like 32x32 maps of
test_bench_scoring, upsampled to 1024x1024, 1,000 bootstrap replicates, one process (workers=1).

- wang2017: the whole `score` (upsampling, pointing, mIoU/CNR, boxes, bootstrap, summary) against a
  plain loop over the same maps: `prepare` (torch bilinear + min-max) and, per threshold,
  `scipy.ndimage.label` + `find_objects` and the best IoU per box. The per-box best IoU, best IoBB
  and candidate counts must be identical.
- maxboxacc (exact, sweep_size 0): the whole `score` against (a) wsolevaluation's box code as
  written in its `compute_bboxes_from_scoremaps` (cv2.resize, min-max, uint8 scoremap,
  cv2.threshold + cv2.findContours(RETR_TREE) + boundingRect at 100 thresholds, all contours) on every
  map, and (b) the plain scipy loop at all 100 thresholds on every 16th map (it takes about 1.5 s a
  map; its time is scaled to all maps and reported as such). The sweep of (b) must equal ours.

    pytest tests/benchmarks/test_bench_score_e2e.py --benchmark-enable -s   # 984 boxes
    pytest tests/benchmarks/test_bench_score_e2e.py -s                       # 62 boxes, once
"""

from __future__ import annotations

import importlib.util
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from wsl_bench.heatmaps import bundle_key
from wsl_bench.localize import SWEEP_GRID, WANG2017_THRESHOLDS, overlaps, prepare, xywh_to_xyxy
from wsl_bench.localize.maps import single_thread
from wsl_bench.localize.policies import sweep_overlaps
from wsl_bench.metrics import read_bbox_csv, score

_spec = importlib.util.spec_from_file_location("_bench_scoring", Path(__file__).with_name("test_bench_scoring.py"))
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
EIGHT = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def nih(request):
    boxes = read_bbox_csv(_bench._nih_box_file())
    opt = request.config.getoption
    if opt("benchmark_disable") and not opt("benchmark_enable"):
        boxes = boxes.iloc[:: len(boxes) // _bench.SUBSET].reset_index(drop=True)
    maps = _bench.cam_like_maps(boxes)
    keys = [bundle_key(i, l) for i, l in zip(boxes["image_id"], boxes["label"])]
    gt = xywh_to_xyxy(boxes[["x", "y", "w", "h"]].to_numpy())
    groups = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return boxes, maps, {k: np.asarray(v) for k, v in groups.items()}, gt


def plain_scipy(maps, groups, gt, thr):
    """Per box: best IoU, best IoBB, candidate count at the thresholds `thr` together (wang2017), and
    the best IoU at each threshold [n_boxes, len(thr)] (the sweep)."""
    n = len(gt)
    best_iou, best_iobb, n_cand = np.zeros(n), np.zeros(n), np.zeros(n)
    per_t = np.zeros((n, len(thr)))
    for key, rows in groups.items():
        norm, _ = prepare(maps[key], (1024, 1024))
        boxes, level = [], []
        for k, t in enumerate(thr):
            lab, _ = ndi.label(norm > np.float32(t), structure=EIGHT)
            for s in ndi.find_objects(lab):
                boxes.append((s[1].start, s[0].start, s[1].stop, s[0].stop))
                level.append(k)
        n_cand[rows] = len(boxes)
        if boxes:
            iou, iobb = overlaps(gt[rows], np.asarray(boxes, np.float64))
            best_iou[rows], best_iobb[rows] = iou.max(axis=1), iobb.max(axis=1)
            np.maximum.at(per_t, (rows[:, None], np.asarray(level)[None, :]), iou)
    return best_iou, best_iobb, n_cand, per_t


def wsolevaluation_boxes(maps, groups, gt, n_thresholds=100):
    """wsolevaluation (clovaai, wsol/util + evaluation.py) box path, multi_contour_eval=True: the
    scoremap resized with cv2, min-max normalised, as uint8; per threshold cv2.threshold at
    int(t * max), cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE), a boundingRect per contour.
    Returns the best IoU per box and threshold [n_boxes, n_thresholds]."""
    per_t = np.zeros((len(gt), n_thresholds))
    thresholds = np.arange(0, 1, 1 / n_thresholds)
    for key, rows in groups.items():
        cam = cv2.resize(maps[key], (1024, 1024), interpolation=cv2.INTER_CUBIC)
        cam = cam - cam.min()
        cam = cam / max(cam.max(), 1e-12)
        img = np.expand_dims((cam * 255).astype(np.uint8), 2)
        for k, t in enumerate(thresholds):
            _, thr = cv2.threshold(img, int(t * np.max(img)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(thr, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if not contours:
                continue
            b = np.array([cv2.boundingRect(c) for c in contours], np.float64)
            b[:, 2:] += b[:, :2]
            per_t[rows, k] = np.maximum(per_t[rows, k], overlaps(gt[rows], b)[0].max(axis=1))
    return per_t


def _timed(fn, *args, **kwargs):
    """(result, wall s, CPU s, peak RSS of the process so far in GB). No tracemalloc while timing: its
    bookkeeping on every allocation slows the side with more (smaller) allocations."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _report(benchmark, name, figures):
    figures.update(load_avg_1min=round(os.getloadavg()[0], 2), cpus=os.cpu_count(),
                   peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3))
    benchmark.extra_info.update(figures)
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


def test_bench_score_wang2017_vs_plain_scipy(benchmark, nih):
    boxes, maps, groups, gt = nih
    with single_thread():
        (ref_iou, ref_iobb, ref_n, _), ref_wall, ref_cpu, ref_mem = _timed(plain_scipy, maps, groups, gt, WANG2017_THRESHOLDS)
    res, wall, cpu, mem = _timed(benchmark.pedantic, score, args=(maps, boxes, 1024),
                                 kwargs=dict(policy="wang2017", n_boot=1000, workers=1), rounds=1, iterations=1)
    pb = res.per_box
    np.testing.assert_array_equal(pb["best_iou"].to_numpy(), ref_iou)
    np.testing.assert_array_equal(pb["best_iobb"].to_numpy(), ref_iobb)
    np.testing.assert_array_equal(pb["n_candidates"].to_numpy(), ref_n)
    _report(benchmark, "wang2017", dict(
        n_boxes=len(boxes), n_maps=len(groups), score_wall_s=round(wall, 2), score_cpu_s=round(cpu, 2),
        plain_wall_s=round(ref_wall, 2), plain_cpu_s=round(ref_cpu, 2), ratio_wall=round(ref_wall / wall, 2),
        ratio_cpu=round(ref_cpu / cpu, 2), peak_rss_after_plain_gb=round(ref_mem, 3),
        peak_rss_after_score_gb=round(mem, 3)))
    if not benchmark.disabled:  # alone, the process peak is this scoring's; in the suite, every earlier test's
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2 < 2.0


def test_bench_score_maxboxacc_vs_wsolevaluation_and_plain_scipy(benchmark, nih):
    boxes, maps, groups, gt = nih
    res, wall, cpu, mem = _timed(benchmark.pedantic, score, args=(maps, boxes, 1024),
                                 kwargs=dict(policy="maxboxacc", n_boot=1000, workers=1), rounds=1, iterations=1)
    with single_thread():
        wsol, wsol_wall, wsol_cpu, _ = _timed(wsolevaluation_boxes, maps, groups, gt)
        keys = list(groups)[::16]
        sub = {k: groups[k] for k in keys}
        (_, _, _, ref_t), sub_wall, sub_cpu, _ = _timed(plain_scipy, maps, sub, gt, SWEEP_GRID)
    for k in keys:  # our sweep equals plain labelling at every threshold
        norm, inf = prepare(maps[k], (1024, 1024))
        ours, _ = sweep_overlaps(norm, inf, gt[groups[k]], (1024, 1024), SWEEP_GRID, ("all",), source_shape=maps[k].shape)
        np.testing.assert_array_equal(ours[0], ref_t[groups[k]])
    scale = len(groups) / len(keys)
    mb = res.summary["maxboxacc"]["macro"]["maxboxacc_v2"]
    wsol_mb = float(np.mean([(wsol[:, :, None] > np.array([0.3, 0.5, 0.7])).mean(axis=0).max(axis=0)]))
    _report(benchmark, "maxboxacc", dict(
        n_boxes=len(boxes), n_maps=len(groups), score_wall_s=round(wall, 2), score_cpu_s=round(cpu, 2),
        wsolevaluation_wall_s=round(wsol_wall, 2), wsolevaluation_cpu_s=round(wsol_cpu, 2),
        ratio_wsol_wall=round(wsol_wall / wall, 2), ratio_wsol_cpu=round(wsol_cpu / cpu, 2),
        plain_maps=len(keys), plain_wall_s_scaled=round(sub_wall * scale, 1), plain_cpu_s_scaled=round(sub_cpu * scale, 1),
        ratio_plain_cpu=round(sub_cpu * scale / cpu, 2), peak_rss_after_score_gb=round(mem, 3),
        maxboxacc_v2_macro=round(mb, 4), wsolevaluation_pooled_v2=round(wsol_mb, 4)))
    if not benchmark.disabled:  # alone, the process peak is this scoring's; in the suite, every earlier test's
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2 < 2.0
