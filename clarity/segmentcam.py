"""SegmentCAM: a small convolutional head on the ViT patch grid (ours; the abstract names only
"foreground segmentation and background suppression using explicit anatomical priors" and
"convolutional background suppression").

It predicts 14 class maps and one foreground (anatomy) map; the foreground is trained against an
anatomical prior (clarity/priors.py), and class evidence is suppressed outside it: in logit space
``s_c = m_c + log sigmoid(fg)``, pooled by log-sum-exp into per-class scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def lse_pool(x: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling over the spatial dims of [B,C,h,w]: (1/r) log mean exp(r x).

    Between mean (r -> 0) and max (r -> inf) pooling; r=5 is our default."""
    flat = x.flatten(2)
    return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r


class SegmentCAM(nn.Module):
    """Conv head: patch grid [B,D,g,g] -> seg_maps [B,C,g,g], fg_logits [B,1,g,g], seg_logits [B,C]."""

    def __init__(self, dim: int, hidden: int, n_classes: int, lse_r: float = 5.0):
        super().__init__()
        groups = math.gcd(8, hidden)
        self.trunk = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1),
            nn.GroupNorm(groups, hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GroupNorm(groups, hidden),
            nn.GELU(),
        )
        self.cls_conv = nn.Conv2d(hidden, n_classes, 1)
        self.fg_conv = nn.Conv2d(hidden, 1, 1)
        self.lse_r = lse_r

    def forward(self, grid: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(grid)
        seg_maps = self.cls_conv(h)
        fg_logits = self.fg_conv(h)
        suppressed = seg_maps + F.logsigmoid(fg_logits)
        return {"seg_maps": seg_maps, "fg_logits": fg_logits, "seg_logits": lse_pool(suppressed, self.lse_r)}


def _unit_max(m: torch.Tensor) -> torch.Tensor:
    """Scale each map of [B,C,h,w] to max 1 (maps are non-negative)."""
    return m / m.flatten(2).amax(-1)[..., None, None].clamp_min(1e-12)


def fuse_maps(out: dict, fusion: str, suppress: bool, fg_floor: float = 0.0) -> torch.Tensor:
    """Final heatmaps [B,14,g,g] from a ClarityNet output.

    Attention maps and SegmentCAM probabilities are each scaled to max 1 per map, then fused:
    geomean (default: high only where both agree), mean, max, attention or segmentcam alone.
    With `suppress`, the result is multiplied by the foreground probability, after lifting the
    fused map to `fg_floor + (1 - fg_floor) * fused` (ours: a floor keeps the whole predicted
    anatomy in the map at a low level, under the class evidence). Without a SegmentCAM head the
    attention map is returned as is (scaled to max 1).
    """
    att = _unit_max(out["class_maps"])
    if out.get("seg_maps") is None:
        return att
    fg = torch.sigmoid(out["fg_logits"])
    seg = _unit_max(torch.sigmoid(out["seg_maps"]) * fg)
    if fusion == "geomean":
        fused = (att * seg).clamp_min(0).sqrt()
    elif fusion == "mean":
        fused = (att + seg) / 2
    elif fusion == "max":
        fused = torch.maximum(att, seg)
    elif fusion == "attention":
        fused = att
    elif fusion == "segmentcam":
        fused = seg
    else:
        raise ValueError(f"clarity: unknown fusion {fusion!r}")
    if not suppress:
        return fused
    if fg_floor > 0:
        fused = fg_floor + (1 - fg_floor) * fused
    return fused * fg
