"""Patch stems for ViTs trained from scratch on a few thousand images: the convolutional stem that
CLARiTy's standard preset and the ViT baselines' standard preset use (docs/clarity.md, "Patch stem")."""

from __future__ import annotations

import math

from torch import nn

PATCH_STEMS = ("linear", "conv")


def conv_stem(in_chans: int, dim: int, patch: int) -> nn.Sequential:
    """A convolutional patchify with the linear one's stride: log2(patch) stride-2 3x3 conv + BN + ReLU
    layers (widths doubling up to dim), then a 1x1 projection to `dim` (Xiao et al. 2021)."""
    n = int(round(math.log2(patch)))
    if 2**n != patch:
        raise ValueError(f"patch_stem='conv' needs a power-of-two patch size, got {patch}")
    widths = [max(8, dim // 2 ** (n - 1 - i)) for i in range(n)]
    layers: list[nn.Module] = []
    prev = in_chans
    for w in widths:
        layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        prev = w
    layers.append(nn.Conv2d(prev, dim, 1))
    return nn.Sequential(*layers)


def check_patch_stem(stem: str) -> str:
    """`stem` if it names a patch stem, else a ValueError naming the config key."""
    if stem not in PATCH_STEMS:
        raise ValueError(f"config key 'patch_stem' must be one of {', '.join(PATCH_STEMS)}, got {stem!r}")
    return stem


def set_patch_stem(vit: nn.Module, stem: str) -> nn.Module:
    """Give a timm ViT the named patch stem in place (`linear` keeps its own); returns the ViT."""
    if check_patch_stem(stem) == "conv":
        proj = vit.patch_embed.proj
        vit.patch_embed.proj = conv_stem(proj.in_channels, proj.out_channels, vit.patch_embed.patch_size[0])
    return vit
