"""Scorer speed on the 984 real NIH boxes (geometry from the torchxrayvision wheel) with 32x32 maps.

Targets on a 2-core CPU: wang2017 <= 20 s, maxboxacc <= 60 s, peak memory < 2 GB. With
``--benchmark-disable`` (the default) each test runs once on a 60-box subset so CI stays quick;
run ``pytest tests/benchmarks/test_bench_scoring.py --benchmark-enable`` for the full figures.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from wsl_bench.heatmaps import bundle_key
from wsl_bench.metrics import read_bbox_csv, score

SUBSET = 60


def _nih_box_file() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")  # locate the wheel's data without importing it
    path = Path(spec.origin).parent / "data" / "BBox_List_2017.csv.gz" if spec else None
    if path is None or not path.is_file():
        pytest.skip("torchxrayvision does not ship BBox_List_2017.csv.gz")
    return path


def cam_like_maps(boxes: pd.DataFrame, side: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """A CAM-like 32x32 map per (image, label): a blurred, jittered box bump, a distractor, noise."""
    rng = np.random.default_rng(seed)
    s = 1024 / side
    maps = {}
    for (image_id, label), g in boxes.groupby(["image_id", "label"], sort=False):
        m = rng.random((side, side)).astype(np.float32) * 0.3
        for x, y, w, h in g[["x", "y", "w", "h"]].to_numpy() / s:
            dx, dy = rng.normal(0, 0.2 * w), rng.normal(0, 0.2 * h)
            c0, r0 = int(max(0, x + dx)), int(max(0, y + dy))
            m[r0 : max(r0 + 1, int(y + dy + h)), c0 : max(c0 + 1, int(x + dx + w))] += 1.0
        r, c = rng.integers(0, side, 2)
        m[r, c] += rng.uniform(0.3, 1.2)
        maps[bundle_key(image_id, label)] = ndi.gaussian_filter(m, 1.0)
    return maps


@pytest.fixture(scope="module")
def nih_case(request):
    boxes = read_bbox_csv(_nih_box_file())
    assert len(boxes) == 984
    opt = request.config.getoption
    if opt("benchmark_disable") and not opt("benchmark_enable"):
        boxes = boxes.iloc[:: len(boxes) // SUBSET].reset_index(drop=True)
    return boxes, cam_like_maps(boxes)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


@pytest.mark.parametrize("policy", ["wang2017", "maxboxacc"])
def test_bench_scoring_nih_boxes(benchmark, nih_case, policy):
    boxes, maps = nih_case
    cpu0 = time.process_time()
    result = benchmark.pedantic(
        score, args=(maps, boxes, 1024), kwargs=dict(policy=policy, n_boot=1000), rounds=1, iterations=1
    )
    cpu_s = time.process_time() - cpu0
    s = result.summary
    assert s["n_boxes"] == len(boxes) and s["n_missing"] == 0
    assert 0.0 < s["iou_acc"]["macro"]["0.1"] <= 1.0
    benchmark.extra_info.update(
        n_boxes=len(boxes), cpu_s=round(cpu_s, 2), peak_rss_gb=round(_peak_rss_gb(), 3), cpus=os.cpu_count(),
        load_avg_1min=round(os.getloadavg()[0], 2),
    )
    if not benchmark.disabled:  # alone (--benchmark-enable), the process peak is this scoring's; in the suite it is every earlier test's
        assert _peak_rss_gb() < 2.0
