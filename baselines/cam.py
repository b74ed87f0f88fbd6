"""The CAM family on timm CNNs (grad-cam library formulas, batched over images and classes) and
the original CAM of Wang et al. 2017 (transition layer + LSE pooling), the historical NIH baseline.

All CAM variants of one backbone are one class registered under several names with another
`cam` default; with ``share_checkpoint="auto"`` they train the backbone once per run.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from baselines._backbones import GrayscaleNet, cnn_target_layer, create_timm
from baselines._cam_engine import CAM_NAMES, cam_maps
from baselines._fast_forward import cached_inference_copy
from baselines._trainable import TrainedNetMethod
from wsl_bench.methods import register_method

_CAM_PAPERS = {
    "gradcam": "Selvaraju et al., Grad-CAM, ICCV 2017",
    "gradcam++": "Chattopadhay et al., Grad-CAM++, WACV 2018",
    "xgradcam": "Fu et al., Axiom-based Grad-CAM (XGrad-CAM), BMVC 2020",
    "hirescam": "Draelos & Carin, HiResCAM, arXiv 2011.08891",
    "layercam": "Jiang et al., LayerCAM, IEEE TIP 2021",
    "eigencam": "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020",
    "scorecam": "Wang et al., Score-CAM, CVPR-W 2020",
}


class TimmCNNMethod(TrainedNetMethod):
    """A timm CNN (grayscale in, 14 logits) trained on the cohort; base of the CNN baselines."""

    base_defaults = {
        **TrainedNetMethod.base_defaults,
        "arch": "resnet18",
        "output_stride": None,  # None: the architecture's own (32); 16 or 8 dilate the last stage(s)
        # Explain with the trained weights run a-trous at this stride (DeepLab's trick: same weights,
        # last stage dilated instead of strided, so maps are denser); None: as trained. Our choice.
        "explain_output_stride": None,
        "drop_rate": 0.0,
    }
    train_keys = TrainedNetMethod.train_keys + ("output_stride", "drop_rate")

    def share_family(self) -> str:
        return "timm-cnn"

    def build_net(self, output_stride: int | None = None) -> nn.Module:
        kwargs: dict[str, Any] = {"drop_rate": float(self.config.get("drop_rate") or 0.0)}
        stride = output_stride or self.config.get("output_stride")
        if stride:
            kwargs["output_stride"] = int(stride)
        weights = None if output_stride else self.config.get("weights")
        return GrayscaleNet(create_timm(self.config["arch"], weights=weights, **kwargs))

    def explain_net(self) -> nn.Module:
        """The trained net, or the same weights run at `explain_output_stride` (built once per load)."""
        net = self.ensure_net()
        stride = self.config.get("explain_output_stride")
        if not stride or int(stride) == int(self.config.get("output_stride") or 32):
            return net
        cached = getattr(self, "_explain_net", None)
        if cached is None or cached[0] is not net:
            dense = self.build_net(output_stride=int(stride))
            dense.load_state_dict(net.state_dict())
            cached = (net, dense.to(self.device).eval())
            self._explain_net = cached
        return cached[1]


_RESNET_PRESETS = {
    # SynthCXR at 128 px on 2 CPU cores: ResNet-18 trained at stride 32, explained a-trous at
    # stride 16 (8x8 maps instead of 4x4).
    "quick": {"arch": "resnet18", "output_stride": None, "explain_output_stride": 16, "max_epochs": 2,
              "batch_size": 32, "lr": 1e-3, "score_cam_channels": 32},
    # SynthCXR at 224 px: the quick network and explainers, trained until validation mean AUROC has not
    # improved for `patience` epochs (at most `max_epochs`); stride-16 explain gives 14x14 maps.
    "standard": {"arch": "resnet18", "output_stride": None, "explain_output_stride": 16, "max_epochs": 20,
                 "batch_size": 32, "lr": 1e-3, "patience": 3, "score_cam_channels": 32},
    # NIH at 512 px on a GPU: ResNet-50 (the Wang et al. 2017 backbone), all Score-CAM channels.
    "paper": {"arch": "resnet50", "output_stride": 32, "max_epochs": 20, "batch_size": 32,
              "lr": 1e-4, "weight_decay": 1e-5, "patience": 4, "score_cam_channels": None, "explain_batch_size": 16},
}


def _register_cams(cls, suffix: str = "", backbone_note: str = ""):
    for cam in CAM_NAMES:
        register_method(
            cam + suffix,
            cam=cam,
            description=f"{_CAM_PAPERS[cam].split(',')[1].strip()} on a {backbone_note} trained on the cohort",
            paper=_CAM_PAPERS[cam],
        )(cls)
    return cls


class CNNCAM(TimmCNNMethod):
    """CAM variants (grad-cam library formulas) on a timm ResNet trained from image-level labels."""

    paper = _CAM_PAPERS["gradcam"]
    base_defaults = {
        **TimmCNNMethod.base_defaults,
        "cam": "gradcam",
        "score_cam_channels": 64,  # Score-CAM: top channels by mean activation (None: all)
        "score_cam_batch": 64,  # masked images per forward in Score-CAM (the memory bound)
        # Score-CAM scores masked images on an inference copy of the net (BN folded, convolutions fused
        # with their add and ReLU; same logits to float rounding, baselines/_fast_forward.py); False: the net
        "score_cam_fast": True,
    }
    presets = _RESNET_PRESETS

    def explain_batch(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        channels = self.config.get("score_cam_channels")
        net = self.explain_net()
        fast = self.config["cam"] == "scorecam" and bool(self.config.get("score_cam_fast", True))
        return cam_maps(
            str(self.config["cam"]),
            net,
            cnn_target_layer(net.model),
            images,
            classes,
            score_cam_channels=None if channels is None else int(channels),
            score_cam_batch=int(self.config.get("score_cam_batch", 64)),
            score_model=cached_inference_copy(self, net) if fast else None,
        )


_register_cams(CNNCAM, "", "timm ResNet")


@register_method("gradcam-densenet121", cam="gradcam", paper="Rajpurkar et al., CheXNet, arXiv 1711.05225 (+ Grad-CAM)",
                 description="Grad-CAM on DenseNet-121 (the CheXNet backbone) trained on the cohort")
@register_method("gradcam++-densenet121", cam="gradcam++", paper="Rajpurkar et al., CheXNet + Grad-CAM++",
                 description="Grad-CAM++ on DenseNet-121 (the CheXNet backbone) trained on the cohort")
class DenseNetCAM(CNNCAM):
    """Grad-CAM family on DenseNet-121, the CheXNet backbone, trained on the cohort."""

    base_defaults = {**CNNCAM.base_defaults, "arch": "densenet121"}
    presets = {
        "quick": {"arch": "densenet121", "max_epochs": 1, "batch_size": 32, "lr": 1e-3},
        # timm's DenseNet has no output_stride: 7x7 maps at 224 px
        "standard": {"arch": "densenet121", "max_epochs": 20, "batch_size": 32, "lr": 1e-3, "patience": 3},
        # CheXNet: DenseNet-121 at 224 px, Adam lr 1e-3 in the paper (pretrained); 1e-4 from scratch
        # weights here is our choice, with batch 16 as in CheXNet.
        "paper": {"arch": "densenet121", "max_epochs": 20, "batch_size": 16, "lr": 1e-4,
                  "weight_decay": 1e-5, "patience": 4, "explain_batch_size": 32},
    }


@register_method("gradcam-convnextv2", cam="gradcam", paper="Woo et al., ConvNeXt V2, CVPR 2023 (+ Grad-CAM)",
                 description="Grad-CAM on ConvNeXt V2 (the CLARiTy teacher's family) trained on the cohort")
@register_method("layercam-convnextv2", cam="layercam", paper="Woo et al., ConvNeXt V2 + LayerCAM",
                 description="LayerCAM on ConvNeXt V2 (the CLARiTy teacher's family) trained on the cohort")
class ConvNeXtCAM(CNNCAM):
    """Grad-CAM family on a ConvNeXt V2 (the CLARiTy teacher's family), trained on the cohort."""

    base_defaults = {**CNNCAM.base_defaults, "arch": "convnextv2_atto", "lr": 2e-3, "weight_decay": 0.05}
    presets = {
        "quick": {"arch": "convnextv2_atto", "max_epochs": 2, "batch_size": 32, "lr": 2e-3},
        "standard": {"arch": "convnextv2_atto", "explain_output_stride": 16, "max_epochs": 20, "batch_size": 32,
                     "lr": 2e-3, "patience": 3},
        # The CLARiTy paper's ConvNeXtV2-B baseline at 512 px.
        "paper": {"arch": "convnextv2_base", "max_epochs": 20, "batch_size": 16, "lr": 1e-4,
                  "weight_decay": 0.05, "patience": 4, "explain_batch_size": 8},
    }


# --------------------------------------------------------------------------------------------
# Wang et al. 2017 (ChestX-ray8): backbone -> transition layer -> LSE pooling -> linear; CAM.


def lse_pool(x: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling over the spatial axes: (1/r) log(mean(exp(r x))) (Wang et al. 2017,
    eq. 1; r -> 0 is average pooling, r -> inf max pooling). Stable via logsumexp."""
    flat = x.flatten(2)
    return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r


class Wang2017Net(nn.Module):
    """timm trunk (no head) -> transition conv to D channels -> LSE pooling -> 14 logits."""

    def __init__(self, arch: str, transition_dim: int, lse_r: float, weights: str | None = None,
                 output_stride: int | None = None):
        super().__init__()
        extra = {"output_stride": int(output_stride)} if output_stride else {}
        trunk = create_timm(arch, weights=weights, num_classes=0, global_pool="", **extra)
        self.trunk = GrayscaleNet(trunk)
        self.transition = nn.Sequential(
            nn.Conv2d(trunk.num_features, transition_dim, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(transition_dim),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(transition_dim, 14)
        self.lse_r = float(lse_r)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.transition(self.trunk(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(lse_pool(self.features(images), self.lse_r))

    def cam(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """CAM_c = sum_d w_cd T_d (Zhou et al. 2016 / Wang et al. 2017): the prediction layer's
        weights applied to the transition activations, before pooling."""
        feats = self.features(images)
        return torch.einsum("cd,bdhw->bchw", self.fc.weight[list(classes)], feats)


@register_method("cam-wang2017")
class Wang2017CAM(TimmCNNMethod):
    """Original CAM of Wang et al. 2017: transition layer + LSE pooling (r=10), ChestX-ray8's baseline."""

    paper = "Wang et al., ChestX-ray8, CVPR 2017"
    base_defaults = {**TimmCNNMethod.base_defaults, "transition_dim": 256, "lse_r": 10.0}
    train_keys = TimmCNNMethod.train_keys + ("transition_dim", "lse_r")
    presets = {
        "quick": {"arch": "resnet18", "transition_dim": 256, "explain_output_stride": 16, "max_epochs": 2,
                  "batch_size": 32, "lr": 1e-3},
        "standard": {"arch": "resnet18", "transition_dim": 256, "explain_output_stride": 16, "max_epochs": 20,
                     "batch_size": 32, "lr": 1e-3, "patience": 3},
        # The paper: ResNet-50 trunk, D=1024 transition layer, r=10; 512 px input (our reading).
        "paper": {"arch": "resnet50", "transition_dim": 1024, "max_epochs": 20,
                  "batch_size": 32, "lr": 1e-4, "weight_decay": 1e-5, "patience": 4},
    }

    def share_family(self) -> str:
        return "wang2017"

    def build_net(self, output_stride: int | None = None) -> nn.Module:
        return Wang2017Net(
            self.config["arch"], int(self.config["transition_dim"]), float(self.config["lse_r"]),
            weights=None if output_stride else self.config.get("weights"),
            output_stride=output_stride or self.config.get("output_stride"),
        )

    @torch.no_grad()
    def explain_batch(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        return self.explain_net().eval().cam(images, classes)
