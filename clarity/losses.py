"""CLARiTy's losses. The abstract names them (orthogonal class-token loss, SegmentCAM with an
anatomical prior, ConvNeXtV2 distillation); every formula and weight here is ours.

Total loss = BCE(logits) + segcam_cls_weight * BCE(seg_logits) + fg_weight * BCE(fg, prior)
           + bg_weight * background + orth_weight * orthogonal + distill_weight * distillation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ClarityConfig


def orthogonal_loss(tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal entry of the Gram matrix of L2-normalised class tokens.

    tokens: [C,D] or [B,C,D]. 0 when the tokens are mutually orthogonal, 1 when all are parallel.
    """
    t = F.normalize(tokens, dim=-1)
    gram = t @ t.transpose(-2, -1)
    c = gram.shape[-1]
    off = gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))
    return off.pow(2).sum((-2, -1)).mean() / (c * (c - 1))


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-label distillation for multi-label outputs: per-class Bernoulli KL(teacher || student)
    at temperature T, scaled by T^2 (Hinton), averaged over batch and classes. 0 iff they agree."""
    t = temperature
    p = torch.sigmoid(teacher_logits.detach() / t)
    bce = F.binary_cross_entropy_with_logits(student_logits / t, p, reduction="none")
    entropy = F.binary_cross_entropy(p, p, reduction="none")
    return (bce - entropy).mean() * t * t


def prior_on_grid(prior: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """An image-size prior [B,1,H,W] in [0,1] -> the patch grid by area averaging (soft targets)."""
    return F.adaptive_avg_pool2d(prior.float(), grid).clamp(0, 1)


def foreground_loss(fg_logits: torch.Tensor, prior_grid: torch.Tensor) -> torch.Tensor:
    """BCE between the predicted foreground [B,1,g,g] and the prior on the same grid."""
    return F.binary_cross_entropy_with_logits(fg_logits, prior_grid)


def background_loss(seg_maps: torch.Tensor, prior_grid: torch.Tensor) -> torch.Tensor:
    """Mean class probability outside the prior's foreground, per image and class, averaged.

    seg_maps: [B,C,g,g] logits; prior_grid: [B,1,g,g] in [0,1]. 0 when every class is off outside."""
    bg = 1 - prior_grid
    act = torch.sigmoid(seg_maps) * bg
    return (act.flatten(2).sum(-1) / bg.flatten(2).sum(-1).clamp_min(1e-6)).mean()


def clarity_losses(
    out: dict,
    labels: torch.Tensor,
    cfg: ClarityConfig,
    *,
    prior: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    class_tokens_param: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """All of CLARiTy's training losses from one ClarityNet output; returns (total, parts)."""
    labels = labels.float()
    parts: dict[str, torch.Tensor] = {}
    parts["bce"] = F.binary_cross_entropy_with_logits(out["cls_logits"], labels, pos_weight=pos_weight)
    total = parts["bce"]
    if cfg.orth_weight > 0:
        tokens = out["class_tokens"] if cfg.orth_target == "output" else class_tokens_param
        parts["orth"] = orthogonal_loss(tokens)
        total = total + cfg.orth_weight * parts["orth"]
    if out.get("seg_maps") is not None:
        parts["seg_bce"] = F.binary_cross_entropy_with_logits(out["seg_logits"], labels, pos_weight=pos_weight)
        total = total + cfg.segcam_cls_weight * parts["seg_bce"]
        if prior is not None:
            grid = prior_on_grid(prior, tuple(out["fg_logits"].shape[-2:]))
            parts["fg"] = foreground_loss(out["fg_logits"], grid)
            parts["bg"] = background_loss(out["seg_maps"], grid)
            total = total + cfg.fg_weight * parts["fg"] + cfg.bg_weight * parts["bg"]
    if teacher_logits is not None and cfg.distill != "none":
        student = out["dist_logits"] if cfg.distill == "token" else out["cls_logits"]
        parts["distill"] = distillation_loss(student, teacher_logits, cfg.distill_temperature)
        total = total + cfg.distill_weight * parts["distill"]
    parts["total"] = total
    return total, parts
