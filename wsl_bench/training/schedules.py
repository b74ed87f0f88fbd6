"""Learning-rate schedules shared by the trainable methods (one home, so every method warms up the same way)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 over `warmup_frac * total_steps` steps, then cosine decay to 0."""
    warm = int(warmup_frac * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine_config(module, optimizer: torch.optim.Optimizer, warmup_frac: float, total_steps: int | None = None):
    """What a LightningModule's `configure_optimizers` returns for `warmup_cosine` stepped per batch.

    `total_steps` defaults to the attached trainer's `estimated_stepping_batches`; a module with no
    trainer (a bare optimisation step in a test) gets the optimizer alone.
    """
    if total_steps is None:
        if module._trainer is None:
            return optimizer
        total_steps = int(module.trainer.estimated_stepping_batches)
    sched = warmup_cosine(optimizer, max(1, int(total_steps)), warmup_frac)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
