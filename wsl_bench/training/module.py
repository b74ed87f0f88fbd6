"""`ClassifierModule`: a LightningModule that trains `net(images) -> logits [B,14]` with BCE.

Subclasses add their own losses by overriding `compute_loss(batch, outputs)`; when `net` returns
more than logits (a dict, a tuple), override `logits_of(outputs)` too. Validation logs
`val_loss` and `val_mean_auroc` (mean over the findings whose validation labels hold both values).
Under DDP the validation predictions of all ranks are gathered and each image (by its batch "index")
counts once, so the AUROC — and the best checkpoint it picks — is the 1-process figure on the same weights.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from wsl_bench.training.schedules import warmup_cosine_config


def mean_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean AUROC over the columns whose labels contain both 0 and 1; 0.5 when no column does.

    Non-finite scores count as the lowest score, so a diverged model is ranked, not crashed on.
    """
    probs = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=-1e300, posinf=1e300, neginf=-1e300)
    labels = np.asarray(labels) > 0.5
    aucs = [
        roc_auc_score(labels[:, c], probs[:, c])
        for c in range(labels.shape[1])
        if 0 < labels[:, c].sum() < labels.shape[0]
    ]
    return float(np.mean(aucs)) if aucs else 0.5


class ClassifierModule(L.LightningModule):
    """Multi-label classifier training for weakly-supervised methods.

    Args:
      net: an `nn.Module`; `net(images [B,1,H,W]) -> logits [B,14]` (or richer outputs, see `logits_of`).
      lr, weight_decay: AdamW settings (override `configure_optimizers` for more).
      warmup_frac: None for a constant rate; else linear warm-up over this fraction of the fit's steps, then
        cosine decay (`warmup_cosine`, spanning the epoch cap), as CLARiTy trains.
      pos_weight: optional [14] tensor of BCE positive weights (class imbalance).
    Batches are the dataset's dicts: ``{"image", "labels", "index", ...}`` (synth adds "lung_mask").
    """

    def __init__(self, net: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4, pos_weight=None,
                 warmup_frac: float | None = None):
        super().__init__()
        self.net = net
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_frac = None if warmup_frac is None else float(warmup_frac)
        if self.warmup_frac is not None and not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"config key 'warmup_frac' must be in [0, 1) (or null for a constant rate), got {warmup_frac!r}")
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._val_index: list[torch.Tensor] = []

    # -- hooks subclasses override ----------------------------------------------------------
    def forward(self, images: torch.Tensor) -> Any:
        return self.net(images)

    def logits_of(self, outputs: Any) -> torch.Tensor:
        """The [B,14] logits inside whatever `forward` returns (tensor, dict with "logits", or tuple)."""
        if isinstance(outputs, torch.Tensor):
            return outputs
        if isinstance(outputs, dict):
            return outputs["logits"]
        if isinstance(outputs, (tuple, list)):
            return outputs[0]
        raise TypeError(f"cannot find logits in net outputs of type {type(outputs).__name__}; override logits_of")

    def compute_loss(self, batch: dict, outputs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss and scalars to log. Default: BCE-with-logits on the 14 labels."""
        logits = self.logits_of(outputs).float()
        loss = F.binary_cross_entropy_with_logits(logits, batch["labels"].float(), pos_weight=self.pos_weight)
        return loss, {"bce": loss.detach()}

    # -- Lightning ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        outputs = self(batch["image"])
        loss, logs = self.compute_loss(batch, outputs)
        bs = batch["image"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=bs, sync_dist=False)
        for k, v in logs.items():
            self.log(f"train_{k}", v, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        outputs = self(batch["image"])
        loss, _ = self.compute_loss(batch, outputs)
        self.log("val_loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        self._val_probs.append(torch.sigmoid(self.logits_of(outputs).detach().float()))
        self._val_labels.append(batch["labels"].detach().float())
        if isinstance(batch, dict) and "index" in batch:
            self._val_index.append(torch.as_tensor(batch["index"]).detach().reshape(-1).long())

    def on_validation_epoch_start(self):
        self._val_probs, self._val_labels, self._val_index = [], [], []

    def on_validation_epoch_end(self):
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs)
        labels = torch.cat(self._val_labels)
        index = torch.cat(self._val_index) if len(self._val_index) == len(self._val_probs) else None
        if self.trainer is not None and self.trainer.world_size > 1:
            probs = self.all_gather(probs).reshape(-1, probs.shape[-1])
            labels = self.all_gather(labels).reshape(-1, labels.shape[-1])
            if index is not None:
                index = self.all_gather(index).reshape(-1)
        if index is not None:
            # DDP's sampler pads the last shard with repeated images: score each validation image once
            _, first = np.unique(index.cpu().numpy(), return_index=True)
            probs, labels = probs[torch.as_tensor(first)], labels[torch.as_tensor(first)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = mean_auroc(probs.cpu().numpy(), labels.cpu().numpy())
        if not math.isfinite(auc):
            auc = 0.5
        # identical on every rank (computed from gathered tensors), so no further sync is needed
        self.log("val_mean_auroc", auc, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self._val_probs, self._val_labels, self._val_index = [], [], []

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return opt if self.warmup_frac is None else warmup_cosine_config(self, opt, self.warmup_frac)
