"""CLARiTy's Lightning module: the harness's `ClassifierModule` plus CLARiTy's losses.

The frozen teacher and the prior are held outside the module's parameters and state dict, so
checkpoints hold the student only and the optimizer never sees the teacher.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wsl_bench.training import ClassifierModule

from .config import ClarityConfig
from .losses import clarity_losses
from .model import ClarityNet
from .priors import PriorFn


class ClarityModule(ClassifierModule):
    """Trains a ClarityNet with BCE + SegmentCAM + orthogonal + distillation losses."""

    def __init__(self, net: ClarityNet, cfg: ClarityConfig, *, teacher: nn.Module | None = None,
                 prior: PriorFn | None = None, pos_weight=None, teacher_table: torch.Tensor | None = None):
        # lr_schedule='cosine' (ours): per-step linear warm-up over `warmup_frac` of the steps, then cosine decay to
        # 0 (a ViT trained from scratch for a few epochs needs both); 'constant': AdamW alone
        super().__init__(net, lr=cfg.lr, weight_decay=cfg.weight_decay, pos_weight=pos_weight,
                         warmup_frac=cfg.warmup_frac if cfg.lr_schedule == "cosine" else None)
        self.cfg = cfg
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.prior = prior
        self._teacher_table = teacher_table  # [N_train,14] logits by dataset index (teacher_cache)

    def teacher_logits(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor | None:
        """The frozen teacher's logits for a training batch: looked up in the precomputed table
        when there is one (and the batch carries its dataset indices), else a teacher forward."""
        if self.cfg.distill == "none":
            return None
        if self._teacher_table is not None and index is not None:
            return self._teacher_table[index.long().cpu()].to(images.device)
        if not self._teacher:
            return None
        teacher = self._teacher[0]
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        with torch.no_grad():
            return teacher.eval()(images).float()

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch["image"]
        prior = self.prior(batch, self.training) if (self.prior is not None and self.cfg.segmentcam) else None
        teacher = self.teacher_logits(images, batch.get("index")) if self.training else None
        outputs = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in outputs.items()}
        loss, parts = clarity_losses(
            outputs, batch["labels"], self.cfg, prior=prior, teacher_logits=teacher,
            class_tokens_param=self.net.class_tokens[0], pos_weight=self.pos_weight,
        )
        return loss, {k: v.detach() for k, v in parts.items() if k != "total"}

