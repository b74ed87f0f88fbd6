"""Heatmaps per second: CLARiTy (all class maps from one forward pass) against Grad-CAM (one
forward + backward per class, grad-cam library) on a CNN of similar size, same batch, side by side.

With benchmarks enabled: CLARiTy-S-16-224 (ViT-S/16) against a ResNet-50 at 224 px, batch 8,
the 8 box findings. With --benchmark-disable (the default in CI): the quick-preset CLARiTy (ViT-Ti/16, 6 blocks, 3.0 M
parameters, 128-px images seen at 192 px) against a ResNet-10t (4.9 M) at 128 px, batch 2, run once.
Compare the two rows' `heatmaps_per_s` (extra_info) in the benchmark table; docs/clarity.md
records a measurement.
"""

from __future__ import annotations

import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from wsl_bench.labels import BOX_FINDING_INDICES
from wsl_bench.methods import create_method


def _setting(benchmark) -> dict:
    if benchmark.disabled:
        return {"clarity": {"arch": "t16-128", "input_size": 192, "segcam_hidden": 96}, "cnn": "resnet10t", "size": 128, "batch": 2}
    return {"clarity": {"arch": "s16-224"}, "cnn": "resnet50", "size": 224, "batch": 8}


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.benchmark(group="clarity-vs-gradcam-heatmaps")
def test_bench_clarity_heatmaps(benchmark):
    s = _setting(benchmark)
    torch.manual_seed(0)
    method = create_method("clarity", config={**s["clarity"], "explain_batch_size": s["batch"]})
    x = torch.rand(s["batch"], 1, s["size"], s["size"])
    classes = list(BOX_FINDING_INDICES)
    maps = benchmark(method.explain, x, classes)
    assert maps.shape[:2] == (s["batch"], len(classes)) and torch.isfinite(maps).all()
    benchmark.extra_info["n_params"] = _n_params(method.ensure_net())
    if benchmark.stats is not None:
        benchmark.extra_info["heatmaps_per_s"] = s["batch"] * len(classes) / benchmark.stats.stats.mean


@pytest.mark.benchmark(group="clarity-vs-gradcam-heatmaps")
def test_bench_gradcam_heatmaps(benchmark):
    s = _setting(benchmark)
    torch.manual_seed(0)
    cnn = timm.create_model(s["cnn"], pretrained=False, num_classes=14, in_chans=1).eval()
    cam = GradCAM(model=cnn, target_layers=[cnn.layer4[-1]])
    x = torch.rand(s["batch"], 1, s["size"], s["size"])
    classes = list(BOX_FINDING_INDICES)

    def explain():
        # Grad-CAM needs one backward pass per class: one call per finding over the whole batch
        return [cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x)) for c in classes]

    maps = benchmark(explain)
    assert len(maps) == len(classes) and maps[0].shape[0] == s["batch"]
    n_clarity = _n_params(create_method("clarity", config=s["clarity"]).ensure_net())
    # "a backbone of similar size": within a factor of 2 of CLARiTy's parameter count
    assert 0.5 < _n_params(cnn) / n_clarity < 2.0
    benchmark.extra_info["n_params"] = _n_params(cnn)
    if benchmark.stats is not None:
        benchmark.extra_info["heatmaps_per_s"] = s["batch"] * len(classes) / benchmark.stats.stats.mean
