"""The expensive explainers, reference against batched engine, side by side on the quick setting:
ResNet-18 (quick preset: IG and Occlusion on the stride-32 net, Score-CAM on the a-trous stride-16
net), 128-px images, the 8 box findings, the quick preset's n_steps / window / stride / channels.

- integrated-gradients: captum (`engine: captum`) vs ours (`engine: batched`)
- occlusion: captum (`engine: captum`) vs ours (`engine: batched`)
- scorecam: masked images scored on the network (`score_cam_fast: false`) vs on its inference copy

    pytest tests/benchmarks/test_bench_explainers.py --benchmark-enable --benchmark-group-by=group

Maps per second and CPU seconds per map land in each benchmark's extra_info. With the suite's
default --benchmark-disable each function runs once on one image and two classes.
"""

from __future__ import annotations

import time

import pytest
import torch

import baselines  # noqa: F401 - registers the methods
from wsl_bench.labels import BOX_FINDING_INDICES
from wsl_bench.methods import create_method

SIZE = 128
CLASSES = list(BOX_FINDING_INDICES)

CASES = {
    # method, config switch, value for the reference, value for the batched engine
    "integrated-gradients": ("engine", "captum", "batched"),
    "occlusion": ("engine", "captum", "batched"),
    "scorecam": ("score_cam_fast", False, True),
}


def _method(name: str):
    torch.manual_seed(0)
    m = create_method(name, preset="quick")
    m.image_size = SIZE
    m.ensure_net().eval()
    return m


def _bench(benchmark, name: str, which: str):
    key, ref_value, new_value = CASES[name]
    m = _method(name)
    m.config[key] = ref_value if which == "reference" else new_value
    n = 1 if benchmark.disabled else 4
    x = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    classes = CLASSES[:2] if benchmark.disabled else CLASSES
    cpu: list[float] = []

    def run():
        t0 = time.process_time()
        out = m.explain(x, classes)
        cpu.append(time.process_time() - t0)
        return out

    if not benchmark.disabled:
        m.explain(x[:1], classes[:1])  # builds the inference copy once, as the first batch of a run does
    maps = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 2, iterations=1,
                              warmup_rounds=0 if benchmark.disabled else 1)
    n_maps = n * len(classes)
    if not benchmark.disabled:
        benchmark.extra_info["maps_per_s"] = round(n_maps / benchmark.stats.stats.mean, 3)
        benchmark.extra_info["cpu_s_per_map"] = round(min(cpu[1:] or cpu) / n_maps, 4)
    benchmark.extra_info["threads"] = torch.get_num_threads()
    assert maps.shape[:2] == (n, len(classes)) and bool(torch.isfinite(maps).all())
    return maps


@pytest.mark.parametrize("which", ["reference", "batched"])
@pytest.mark.benchmark(group="integrated-gradients-resnet18-128px-8-classes")
def test_bench_integrated_gradients(benchmark, which):
    _bench(benchmark, "integrated-gradients", which)


@pytest.mark.parametrize("which", ["reference", "batched"])
@pytest.mark.benchmark(group="occlusion-resnet18-128px-8-classes")
def test_bench_occlusion(benchmark, which):
    _bench(benchmark, "occlusion", which)


@pytest.mark.parametrize("which", ["reference", "batched"])
@pytest.mark.benchmark(group="scorecam-resnet18-a-trous-128px-8-classes")
def test_bench_scorecam(benchmark, which):
    _bench(benchmark, "scorecam", which)
