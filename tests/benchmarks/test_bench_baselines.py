"""Batched Grad-CAM (one forward per batch, all classes in one vectorised backward) against the
grad-cam library called once per (image, class), side by side: ResNet-18 at 224 px, the 8 box
findings. Heatmaps per second land in each benchmark's extra_info.

    pytest tests/benchmarks/test_bench_baselines.py --benchmark-enable --benchmark-group-by=group

With the suite's default --benchmark-disable each function runs once on a tiny input.
"""

from __future__ import annotations

import time

import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from baselines._cam_engine import cam_maps, normalize_maps
from wsl_bench.labels import BOX_FINDING_INDICES

SIZE = 224
CLASSES = list(BOX_FINDING_INDICES)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=14).eval()


def _images(benchmark) -> torch.Tensor:
    n = 1 if benchmark.disabled else 8
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _classes(benchmark) -> list[int]:
    return CLASSES[:2] if benchmark.disabled else CLASSES


def _run(benchmark, fn, n_maps: int):
    rounds = 1 if benchmark.disabled else 3
    started = time.perf_counter()
    out = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if benchmark.disabled else 1)
    if not benchmark.disabled:
        benchmark.extra_info["heatmaps_per_s"] = round(n_maps / benchmark.stats.stats.mean, 2)
    benchmark.extra_info["n_images"], benchmark.extra_info["n_classes"] = n_maps // len(out[0]), len(out[0])
    benchmark.extra_info["threads"] = torch.get_num_threads()
    return out, time.perf_counter() - started


@pytest.mark.benchmark(group="gradcam-resnet18-224px-8-classes")
def test_bench_gradcam_batched(benchmark, resnet18):
    x, classes = _images(benchmark), _classes(benchmark)

    def batched():
        return normalize_maps(cam_maps("gradcam", resnet18, resnet18.layer4, x, classes))

    maps, _ = _run(benchmark, batched, len(x) * len(classes))
    assert maps.shape == (len(x), len(classes), SIZE // 32, SIZE // 32)
    assert bool(torch.isfinite(maps).all())


@pytest.mark.benchmark(group="gradcam-resnet18-224px-8-classes")
def test_bench_gradcam_library_per_image_and_class(benchmark, resnet18):
    x, classes = _images(benchmark), _classes(benchmark)

    def per_pair():
        with GradCAM(model=resnet18, target_layers=[resnet18.layer4]) as cam:
            return [[cam(input_tensor=x[i : i + 1], targets=[ClassifierOutputTarget(c)])[0] for c in classes]
                    for i in range(len(x))]

    maps, _ = _run(benchmark, per_pair, len(x) * len(classes))
    assert len(maps) == len(x) and maps[0][0].shape == (SIZE, SIZE)
