"""timm backbones for the baselines: built offline, grayscale in, 14 logits out.

Every network takes images [B,1,H,W] in [0,1] (the wsl-bench contract) and normalises them
itself, so checkpoints, predict and explain never disagree about preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from wsl_bench.checkpoints import read_state_dict
from wsl_bench.labels import NUM_FINDINGS

# Grey-level statistics used to centre inputs. Our choice: ImageNet's mean/std averaged over RGB,
# which keeps optional ImageNet weights (converted to one input channel) in their home range.
GRAY_MEAN = 0.449
GRAY_STD = 0.226


class GrayscaleNet(nn.Module):
    """Wraps a timm model: normalises [0,1] grayscale input, then returns the model's logits."""

    def __init__(self, model: nn.Module, mean: float = GRAY_MEAN, std: float = GRAY_STD):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def create_timm(arch: str, image_size: int | None = None, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """A timm model with one input channel and 14 outputs; never downloads anything.

    `weights` is an optional local file (safetensors or a weights_only torch state dict) whose
    tensors are loaded where names and shapes match (3-channel stems are summed to one channel).
    """
    if arch not in timm.list_models():
        raise ValueError(f"unknown timm architecture {arch!r} (config key 'arch'); see timm.list_models()")
    kw: dict[str, Any] = {"pretrained": False, "in_chans": 1, "num_classes": NUM_FINDINGS, **kwargs}
    if image_size is not None and _takes_img_size(arch):
        kw["img_size"] = int(image_size)
    model = timm.create_model(arch, **kw)
    if weights:
        load_local_weights(model, weights)
    return model


def _takes_img_size(arch: str) -> bool:
    return arch.startswith(("vit_", "deit", "eva", "beit"))


def load_local_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a user-named local weights file into `model` where names and shapes agree.

    Returns {"loaded": [...], "skipped": [...]}. A missing file is a clear error: wsl-bench is
    offline by design and never fetches weights itself.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} (config key 'weights') does not exist; wsl-bench never downloads "
            "weights: save a timm state dict (safetensors or torch .pth) there, or drop the 'weights' key"
        )
    state = read_state_dict(path, nested=("state_dict",))
    own = model.state_dict()
    loaded, skipped, new = [], [], {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("model.")
        if key not in own:
            skipped.append(key)
            continue
        target = own[key]
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)  # RGB stem -> grayscale stem
        if value.shape != target.shape:
            skipped.append(key)
            continue
        new[key] = value
        loaded.append(key)
    if not loaded:
        raise ValueError(f"weights file {str(path)!r} shares no tensor names/shapes with the model; wrong 'arch'?")
    model.load_state_dict(new, strict=False)
    return {"loaded": loaded, "skipped": skipped}


def cnn_target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional stage of a timm CNN: where CAMs are taken (ResNet layer4,
    DenseNet features incl. its final norm, ConvNeXt last stage)."""
    if hasattr(model, "layer4"):  # ResNet family
        return model.layer4
    if hasattr(model, "features") and hasattr(model.features, "norm5"):  # DenseNet
        return model.features
    if hasattr(model, "stages"):  # ConvNeXt(V2), ResNetV2, EfficientNet-like stage lists
        return model.stages[-1]
    if hasattr(model, "blocks") and hasattr(model, "conv_head"):  # EfficientNet/MobileNet
        return model.conv_head
    raise ValueError(
        f"cannot find a CAM target layer in {type(model).__name__}; supported families: "
        "ResNet, DenseNet, ConvNeXt(V2), ResNetV2, EfficientNet"
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
