"""Exact full-resolution candidate boxes: our scorer's path against a plain scipy reference, side by side.

The NIH-geometry maps of test_bench_scoring (32x32 CAM-like maps upsampled to 1024x1024). Both sides
prepare each map the same way (bilinear upsampling, min-max normalisation) and return every box's best
IoU at every threshold; the reference labels ``norm > t`` with `scipy.ndimage.label` + `find_objects`
at each threshold. The results must be identical; the ratio of the wall times is the figure.

    pytest tests/benchmarks/test_bench_exact_boxes.py --benchmark-enable   # 240 maps per side
    pytest tests/benchmarks/test_bench_exact_boxes.py                      # 24 maps, once
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from wsl_bench.localize import SWEEP_GRID, WANG2017_THRESHOLDS, overlaps, prepare, threshold_candidates, xywh_to_xyxy
from wsl_bench.localize.maps import single_thread
from wsl_bench.metrics import read_bbox_csv

_spec = importlib.util.spec_from_file_location("_bench_scoring", Path(__file__).with_name("test_bench_scoring.py"))
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)


@pytest.fixture(scope="module")
def nih_maps(request):
    boxes = read_bbox_csv(_bench._nih_box_file())
    opt = request.config.getoption
    step = 41 if opt("benchmark_disable") and not opt("benchmark_enable") else 4
    boxes = boxes.iloc[::step].reset_index(drop=True)
    maps = _bench.cam_like_maps(boxes)
    gts = {k: xywh_to_xyxy(g[["x", "y", "w", "h"]].to_numpy())
           for k, g in boxes.assign(key=[f"{i}::{l}" for i, l in zip(boxes.image_id, boxes.label)]).groupby("key")}
    return maps, gts


def _best(gt, boxes, level, k):
    out = np.zeros((len(gt), k))
    if len(boxes):
        iou, _ = overlaps(gt, boxes)
        np.maximum.at(out, (np.arange(len(gt))[:, None], level[None, :]), iou)
    return out


def ours(maps, gts, thr):
    res = {}
    for key, m in maps.items():
        norm, _ = prepare(m, (1024, 1024))
        c = threshold_candidates(norm, thr, source_shape=m.shape)
        res[key] = _best(gts[key], c.boxes, c.level, len(thr))
    return res


def plain_scipy(maps, gts, thr):
    res = {}
    for key, m in maps.items():
        norm, _ = prepare(m, (1024, 1024))
        boxes, level = [], []
        for k, t in enumerate(thr):
            lab, _ = ndi.label(norm > np.float32(t), structure=np.ones((3, 3), bool))
            for s in ndi.find_objects(lab):
                boxes.append((s[1].start, s[0].start, s[1].stop, s[0].stop))
                level.append(k)
        res[key] = _best(gts[key], np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(level, np.int64), len(thr))
    return res


@pytest.mark.parametrize("which", ["sweep100", "wang2017"])
def test_bench_exact_boxes_vs_plain_scipy(benchmark, nih_maps, which):
    maps, gts = nih_maps
    thr = SWEEP_GRID if which == "sweep100" else WANG2017_THRESHOLDS
    with single_thread():
        t0 = time.perf_counter()
        ref = plain_scipy(maps, gts, thr)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        new = benchmark.pedantic(ours, args=(maps, gts, thr), rounds=1, iterations=1)
        t_new = time.perf_counter() - t0
    for key in maps:
        np.testing.assert_array_equal(new[key], ref[key])
    benchmark.extra_info.update(
        n_maps=len(maps), ours_s=round(t_new, 2), plain_scipy_s=round(t_ref, 2), ratio=round(t_ref / t_new, 2),
        cpus=os.cpu_count(), load_avg_1min=round(os.getloadavg()[0], 2),
    )
    print(f"\n{which}: {len(maps)} maps, ours {t_new:.2f} s, plain scipy {t_ref:.2f} s, ratio {t_ref / t_new:.1f}x, "
          f"load {os.getloadavg()[0]:.1f}")
