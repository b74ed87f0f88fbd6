"""Heatmaps per second of every registered method at 224 px: batch 8, the 8 box findings.

    pytest tests/benchmarks/test_bench_methods.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,stddev,rounds

Untrained networks (speed does not depend on the weights): the `paper` preset of each method (ResNet-50,
ViT-S/16, DenseNet-121, ... at 224 px), except CLARiTy, measured as `clarity-s16-224`, its 224 px
variant. `extra_info` holds heatmaps_per_s (8 images x 8 findings / mean seconds per batch) and the
process CPU seconds per batch, the figure to trust on a loaded machine.
With the suite's default `--benchmark-disable` each method runs once on 1 image, 1 finding, `quick` preset.
Related benchmarks elsewhere: SynthCXR images/s in test_bench_synth.py, scoring the 984 NIH boxes in
test_bench_scoring.py, the quick end-to-end run in test_bench_e2e.py.
"""

from __future__ import annotations

import time

import pytest
import torch

from wsl_bench.labels import BOX_FINDING_INDICES
from wsl_bench.methods import available_methods, create_method, load_entry_points

SIZE, BATCH = 224, 8
load_entry_points()
METHODS = sorted(available_methods())
# Speed of a 224 px model; the 512 px CLARiTy variants are the same network at a larger size.
FULL_SIZE_NAME = {"clarity": "clarity-s16-224", "clarity-s16-512": "clarity-s16-224"}


def untrained(name: str, preset: str):
    """The method with freshly initialised weights, ready to explain (no fit)."""
    torch.manual_seed(0)
    method = create_method(name, preset=preset)
    build = getattr(method, "build", None)
    if getattr(method, "net", "absent") is None and build is not None:
        if name == "afloc":  # prompt embeddings stay zero: speed only, the text encoder runs at fit time
            build(384)
        else:
            build()
    return method


@pytest.mark.parametrize("name", METHODS)
def test_heatmaps_per_second(benchmark, name):
    full = not benchmark.disabled
    n, classes = (BATCH, list(BOX_FINDING_INDICES)) if full else (1, list(BOX_FINDING_INDICES)[:1])
    try:
        method = untrained(FULL_SIZE_NAME.get(name, name) if full else name, "paper" if full else "quick")
    except Exception as exc:  # noqa: BLE001 - report which methods cannot be built, never crash the suite
        pytest.skip(f"{name} could not be built untrained: {type(exc).__name__}: {exc}")
    images = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    cpu = []

    def explain():
        start = time.process_time()
        maps = method.explain(images, classes)
        cpu.append(time.process_time() - start)
        return maps

    try:
        maps = benchmark.pedantic(explain, rounds=3 if full else 1, iterations=1, warmup_rounds=1 if full else 0)
    except RuntimeError as exc:
        if "not trained" in str(exc) or "no trained" in str(exc):
            pytest.skip(f"{name} cannot explain without fit: {exc}")
        raise
    assert maps.shape[:2] == (n, len(classes)) and maps.ndim == 4
    assert torch.isfinite(maps).all()
    benchmark.group = "heatmaps per second (224 px)"
    benchmark.extra_info.update(method=FULL_SIZE_NAME.get(name, name) if full else name, images=n,
                                classes=len(classes), threads=torch.get_num_threads(),
                                cpu_s_per_batch=round(sum(cpu) / len(cpu), 3))
    if full:
        benchmark.extra_info["heatmaps_per_s"] = round(n * len(classes) / benchmark.stats.stats.mean, 2)
        benchmark.extra_info["heatmaps_per_cpu_s"] = round(n * len(classes) / (sum(cpu) / len(cpu)), 2)
