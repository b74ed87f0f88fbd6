"""captum saliency baselines on the same timm ResNet as the CAM family: Integrated Gradients and
Occlusion, batched over images and classes.

With the default ``share_checkpoint="auto"`` and matching presets these reuse the ResNet that
`gradcam` trained in the same run. Maps are pixel-level; we average-pool them by `pool` (our
choice: pixel attributions are speckled, and box extraction works on regions).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from baselines.cam import _RESNET_PRESETS, TimmCNNMethod
from wsl_bench.methods import register_method


def _signed(attr: torch.Tensor, sign: str) -> torch.Tensor:
    if sign == "positive":
        return attr.clamp_min(0)
    if sign == "absolute":
        return attr.abs()
    raise ValueError(f"unknown attribution sign {sign!r} (config key 'sign'); use positive or absolute")


def _pool(maps: torch.Tensor, pool: int) -> torch.Tensor:
    return F.avg_pool2d(maps, pool) if pool and pool > 1 else maps


class CaptumAttribution(TimmCNNMethod):
    """Shared plumbing: ResNet training (as the CAM family), sign handling, pooling."""

    base_defaults = {**TimmCNNMethod.base_defaults, "sign": "positive", "pool": 4}

    def explain_batch(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        net = self.ensure_net().eval()
        flags = [p.requires_grad for p in net.parameters()]
        for p in net.parameters():
            p.requires_grad_(False)  # captum only needs input gradients
        try:
            attr = self.attribute(net, images, list(classes))  # [B,C,H,W]
        finally:
            for p, f in zip(net.parameters(), flags):
                p.requires_grad_(f)
        return _pool(_signed(attr.float(), str(self.config.get("sign", "positive"))), int(self.config.get("pool") or 1))

    def attribute(self, net, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
        raise NotImplementedError


@register_method("integrated-gradients")
class IntegratedGradientsMethod(CaptumAttribution):
    """captum Integrated Gradients (black-image baseline) on a timm ResNet trained on the cohort."""

    paper = "Sundararajan et al., Axiomatic attribution for deep networks, ICML 2017"
    base_defaults = {**CaptumAttribution.base_defaults, "n_steps": 32, "internal_batch_size": 128}
    presets = {
        "quick": {**_RESNET_PRESETS["quick"], "n_steps": 8, "internal_batch_size": 128},
        "paper": {**_RESNET_PRESETS["paper"], "n_steps": 50, "internal_batch_size": 256, "pool": 8},
    }

    def attribute(self, net, images, classes):
        from captum.attr import IntegratedGradients

        b, c = images.shape[0], len(classes)
        # every (image, class) pair is one captum example; captum batches their interpolation steps
        inputs = images.repeat_interleave(c, dim=0)
        targets = torch.tensor(classes * b, device=images.device)
        attr = IntegratedGradients(net).attribute(
            inputs,
            baselines=torch.zeros_like(inputs),
            target=targets,
            n_steps=int(self.config["n_steps"]),
            internal_batch_size=int(self.config["internal_batch_size"]),
        )
        return attr.reshape(b, c, *images.shape[-2:])


@register_method("occlusion")
class OcclusionMethod(CaptumAttribution):
    """captum Occlusion (sliding black patch) on a timm ResNet; one sweep scores all classes."""

    paper = "Zeiler & Fergus, Visualizing and understanding convolutional networks, ECCV 2014"
    base_defaults = {**CaptumAttribution.base_defaults, "window": 16, "stride": 8, "perturbations_per_eval": 64,
                     "pool": 1}
    presets = {
        "quick": {**_RESNET_PRESETS["quick"], "window": 32, "stride": 16, "perturbations_per_eval": 64, "pool": 1},
        "paper": {**_RESNET_PRESETS["paper"], "window": 32, "stride": 16, "perturbations_per_eval": 64, "pool": 4},
    }

    @torch.no_grad()
    def attribute(self, net, images, classes):
        from captum.attr import Occlusion

        b, c = images.shape[0], len(classes)
        win, stride = int(self.config["window"]), int(self.config["stride"])
        # forward returns [B,C]: captum then attributes every output element in the same sweep,
        # laid out (image, class)-major (checked against per-class calls in the tests)
        attr = Occlusion(lambda x: net(x)[:, classes]).attribute(
            images,
            sliding_window_shapes=(images.shape[1], win, win),
            strides=(images.shape[1], stride, stride),
            baselines=0.0,
            perturbations_per_eval=int(self.config["perturbations_per_eval"]),
        )
        return attr.reshape(b, c, *images.shape[-2:])
