"""A small lung segmenter trained on SynthCXR's exact lung masks: the `prior="segmenter"` source
for data without masks (e.g. NIH). Ours: a 3-level conv encoder-decoder (U-Net style), BCE + Dice,
trained through the harness's `train_module` and cached in the run folder like the other stages.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from wsl_bench.checkpoints import load_checkpoint, save_checkpoint
from wsl_bench.methods import FitContext

from wsl_bench import caches

from .stages import is_done, mark_done, stage_dir

CHECKPOINT = "segmenter"  # the wsl_bench.checkpoints pair WEIGHTS + META, sealed with the stage
WEIGHTS, META = "segmenter.safetensors", "segmenter.json"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.GELU())


class LungSegmenter(nn.Module):
    """[B,1,S,S] image in [0,1] -> [B,1,S,S] lung logits (S divisible by 4)."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.dec2, self.dec1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1((x - 0.5) / 0.25)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        return self.out(d1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Lung probability [B,1,H,W] at the images' size (run at a multiple of 4, resized back)."""
        self.to(images.device).eval()
        h, w = images.shape[-2:]
        s = (max(4, (h // 4) * 4), max(4, (w // 4) * 4))
        x = images if (h, w) == s else F.interpolate(images, size=s, mode="bilinear", align_corners=False)
        p = torch.sigmoid(self(x))
        return p if (h, w) == s else F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)


def dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice per image, averaged: 2|P.T| / (|P| + |T|)."""
    inter = (prob * target).flatten(1).sum(-1)
    return (2 * inter / (prob.flatten(1).sum(-1) + target.flatten(1).sum(-1)).clamp_min(1e-6)).mean()


class SegmenterModule(L.LightningModule):
    """BCE + (1 - Dice) against the batch's "lung_mask"; logs val_dice for selection."""

    def __init__(self, net: LungSegmenter, lr: float = 2e-3):
        super().__init__()
        self.net, self.lr = net, lr

    def _loss(self, batch):
        logits = self.net(batch["image"])
        target = batch["lung_mask"].reshape(logits.shape).float()
        prob = torch.sigmoid(logits)
        return F.binary_cross_entropy_with_logits(logits, target) + 1 - dice(prob, target), dice(prob, target)

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        _, d = self._loss(batch)
        self.log("val_dice", d, batch_size=batch["image"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr)


def train_segmenter(train, val, ctx: FitContext, *, epochs: int = 3, batch_size: int = 32, key: dict | None = None) -> LungSegmenter:
    """Train (or load from the run-folder cache) a segmenter on splits whose items carry "lung_mask"."""
    if "lung_mask" not in train[0]:
        raise ValueError("clarity: the lung segmenter trains on splits whose items carry 'lung_mask' (SynthCXR)")
    key = {"epochs": epochs, "batch_size": batch_size, "seed": ctx.seed, **(key or {})}
    directory = stage_dir(ctx, "lung-segmenter", key)
    with caches.building(directory, ctx):  # fits running at once train it once
        return _segmenter(directory, key, train, val, ctx, epochs, batch_size)


def _segmenter(directory: Path, key: dict, train, val, ctx: FitContext, epochs: int, batch_size: int) -> LungSegmenter:
    from wsl_bench.training import train_module

    net = LungSegmenter()
    if is_done(directory, WEIGHTS, META):  # checksums verified (clarity/stages.py)
        net.load_state_dict(load_checkpoint(directory, CHECKPOINT)[0])
        caches.record_use(ctx, directory, WEIGHTS)
        return net.eval()
    torch.manual_seed(ctx.seed)
    net = LungSegmenter()
    stage_ctx = replace(ctx, checkpoint_dir=directory, max_epochs=None, batch_size=None)
    train_module(SegmenterModule(net), train, val, stage_ctx, max_epochs=epochs, batch_size=batch_size, monitor="val_dice")
    info = {"stage": "lung-segmenter", **key}
    save_checkpoint(directory, net.state_dict(), info, CHECKPOINT)
    mark_done(directory, info, WEIGHTS, META)
    caches.record_use(ctx, directory, WEIGHTS)
    return net.eval()


def get_segmenter(image_size: int, ctx: FitContext, n_train: int = 800) -> LungSegmenter:
    """The segmenter for `prior="segmenter"`: trained on a SynthCXR cohort rendered at `image_size`."""
    from wsl_bench.data.synth import SynthConfig, load_synth

    cohort = load_synth(SynthConfig(n_train=n_train, n_val=max(32, n_train // 8), n_test=0,
                                    image_size=image_size, seed=ctx.seed))
    return train_segmenter(cohort.train, cohort.val, ctx, key={"synth": cohort.fingerprint, "image_size": image_size})
