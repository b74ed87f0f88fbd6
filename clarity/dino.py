"""DINO pretraining as a stage of its own (Caron et al. 2021), on the run's training images.

The abstract ablates "DINO pretraining" without saying whether it means ImageNet DINO weights or
DINO on chest X-rays; we run self-distillation on the training images themselves (no labels), and
also accept a local file of DINO weights (config dino='file'). Ours: the image embedding is the mean
of the normed patch tokens (CLARiTy has 14 class tokens, no [CLS]); head, crops, temperatures and
the momentum schedule follow DINO at a smaller scale.

The stage trains through the harness's `train_module` (checkpoints, resume, determinism) and is
cached in the run folder; every variant of the run reuses it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from wsl_bench.checkpoints import load_checkpoint, read_state_dict, save_checkpoint
from wsl_bench.methods import FitContext

from .config import ClarityConfig
from .model import build_backbone, encode_image
from wsl_bench import caches

from .stages import data_key, is_done, mark_done, stage_dir, stage_epochs

CHECKPOINT = "backbone"  # the wsl_bench.checkpoints pair WEIGHTS + META, sealed with the stage
WEIGHTS, META = "backbone.safetensors", "backbone.json"


class DinoHead(nn.Module):
    """DINO projection head: 3-layer MLP, L2-normalised bottleneck, weight-normalised prototypes."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).t()


def random_crops(images: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """One random-resized crop per image, batched (roi_align), with flips and intensity jitter."""
    B, _, H, W = images.shape
    u = torch.rand(B, 8, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1])
    w = (torch.sqrt(area * ratio) * W).clamp(4, W)
    h = (torch.sqrt(area / ratio) * H).clamp(4, H)
    x0, y0 = (W - w) * u[:, 2], (H - h) * u[:, 3]
    boxes = torch.stack([torch.arange(B, dtype=torch.float32), x0, y0, x0 + w, y0 + h], 1).to(images)
    crops = roi_align(images, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip = (u[:, 4] < 0.5).to(images.device)[:, None, None, None]
    crops = torch.where(flip, crops.flip(-1), crops)
    contrast = (0.8 + 0.4 * u[:, 5]).to(images)[:, None, None, None]
    bright = (-0.1 + 0.2 * u[:, 6]).to(images)[:, None, None, None]
    mean = crops.mean((-2, -1), keepdim=True)
    return ((crops - mean) * contrast + mean + bright).clamp(0, 1)


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              t_student: float, t_teacher: float) -> torch.Tensor:
    """Cross-entropy between centred, sharpened teacher global views and every other student view."""
    targets = [F.softmax((t - center) / t_teacher, dim=-1).detach() for t in teacher]
    total, n = 0.0, 0
    for i, q in enumerate(targets):
        for j, s in enumerate(student):
            if i == j:
                continue
            total = total + torch.sum(-q * F.log_softmax(s / t_student, dim=-1), dim=-1).mean()
            n += 1
    return total / n


class DinoModule(L.LightningModule):
    """Student (ViT + head) trained by gradient; teacher = EMA of the student; centre = EMA of
    teacher outputs. Logs `val_dino_loss` so the harness loop can select and early-stop."""

    def __init__(self, cfg: ClarityConfig, total_steps: int):
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.arch_spec["img_size"]
        self.student = build_backbone(cfg)
        self.student_head = DinoHead(self.student.embed_dim, cfg.dino_out_dim)
        self.teacher = copy.deepcopy(self.student)
        self.teacher_head = copy.deepcopy(self.student_head)
        for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(cfg.dino_out_dim))
        self.total_steps = max(1, int(total_steps))

    def views(self, images: torch.Tensor, generator: torch.Generator) -> tuple[list, list]:
        cfg = self.cfg
        size = cfg.dino_global_size or self.img_size
        globals_ = [random_crops(images, size, (0.4, 1.0), generator) for _ in range(2)]
        locals_ = [random_crops(images, cfg.dino_local_size, (0.05, 0.4), generator) for _ in range(cfg.dino_local_crops)]
        return globals_, locals_

    def loss(self, images: torch.Tensor, generator: torch.Generator, update_center: bool) -> torch.Tensor:
        cfg = self.cfg
        globals_, locals_ = self.views(images, generator)
        with torch.no_grad():
            self.teacher.eval()
            t_out = [self.teacher_head(encode_image(self.teacher, g)) for g in globals_]
        s_out = [self.student_head(encode_image(self.student, v)) for v in globals_ + locals_]
        loss = dino_loss(s_out, t_out, self.center, cfg.dino_student_temp, cfg.dino_teacher_temp)
        if update_center:
            batch_center = torch.cat(t_out).mean(0)
            if self._trainer is not None and self.trainer.world_size > 1:
                batch_center = self.all_gather(batch_center).mean(0)
            self.center.mul_(0.9).add_(0.1 * batch_center)
        return loss

    def training_step(self, batch, batch_idx):
        g = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,)).item()))  # harness-seeded per epoch
        loss = self.loss(batch["image"], g, update_center=True)
        self.log("train_dino_loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # momentum follows DINO's cosine schedule from dino_momentum to 1
        progress = min(1.0, self.global_step / self.total_steps)
        m = 1 - (1 - self.cfg.dino_momentum) * (math.cos(math.pi * progress) + 1) / 2
        with torch.no_grad():
            for s, t in zip(self._ema_pairs_student(), self._ema_pairs_teacher()):
                t.mul_(m).add_((1 - m) * s.detach())

    def _ema_pairs_student(self):
        return list(self.student.parameters()) + list(self.student_head.parameters())

    def _ema_pairs_teacher(self):
        return list(self.teacher.parameters()) + list(self.teacher_head.parameters())

    def validation_step(self, batch, batch_idx):
        g = torch.Generator().manual_seed(1000 + batch_idx)
        loss = self.loss(batch["image"], g, update_center=False)
        self.log("val_dino_loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        from wsl_bench.training import warmup_cosine_config

        params = list(self.student.parameters()) + list(self.student_head.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.cfg.dino_lr, weight_decay=0.04)
        return warmup_cosine_config(self, optimizer, self.cfg.dino_warmup_frac, total_steps=self.total_steps)


def dino_key(cfg: ClarityConfig, train, ctx: FitContext) -> dict:
    keys = ("dino_epochs", "dino_batch_size", "dino_lr", "dino_out_dim", "dino_local_crops", "dino_local_size", "dino_global_size",
            "dino_momentum", "dino_teacher_temp", "dino_student_temp", "drop_path", "dino_warmup_frac", "dino_clip")
    key = {"arch": cfg.arch_spec, **{k: getattr(cfg, k) for k in keys}, "seed": ctx.seed, "data": data_key(train)}
    key["dino_epochs"] = stage_epochs(cfg.dino_epochs, ctx)
    if cfg.patch_stem != "linear":  # the linear stem's key stays as it was, so existing caches stay valid
        key["patch_stem"] = cfg.patch_stem
    return key


def get_dino_backbone(cfg: ClarityConfig, train, val, ctx: FitContext) -> dict[str, torch.Tensor]:
    """The DINO-pretrained ViT weights (teacher branch) for this data and config; trains if not cached."""
    directory = stage_dir(ctx, f"dino-{cfg.resolved_arch}", dino_key(cfg, train, ctx))
    with caches.building(directory, ctx):  # fits running at once train it once
        return _dino_backbone(directory, cfg, train, val, ctx)


def _dino_backbone(directory: Path, cfg: ClarityConfig, train, val, ctx: FitContext) -> dict[str, torch.Tensor]:
    from wsl_bench.training import train_module

    # checksums verified; a damaged backbone, or one cached before the checkpoint format, is removed and retrained
    if is_done(directory, WEIGHTS, META):
        caches.record_use(ctx, directory, WEIGHTS)
        return load_checkpoint(directory, CHECKPOINT)[0]
    torch.manual_seed(ctx.seed)
    world = ctx.devices if isinstance(ctx.devices, int) else 1
    epochs = stage_epochs(cfg.dino_epochs, ctx)
    steps = epochs * math.ceil(len(train) / (cfg.dino_batch_size * max(1, world * ctx.num_nodes)))
    module = DinoModule(cfg, steps)
    stage_ctx = replace(ctx, checkpoint_dir=directory, max_epochs=None, batch_size=None)
    train_module(module, train, val, stage_ctx, max_epochs=epochs, batch_size=cfg.dino_batch_size,
                 monitor="val_dino_loss", mode="min", gradient_clip_val=cfg.dino_clip or None)
    state = {k: v.contiguous() for k, v in module.teacher.state_dict().items()}
    info = {"stage": "dino", "steps": steps, **dino_key(cfg, train, ctx)}
    save_checkpoint(directory, state, info, CHECKPOINT)
    mark_done(directory, info, WEIGHTS, META)
    caches.record_use(ctx, directory, WEIGHTS)
    return state


def load_dino_file(path: str | Path) -> dict[str, torch.Tensor]:
    """ViT weights from a local DINO file (.safetensors, or a torch file loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"clarity: DINO weights file {path} not found. Put a DINO ViT checkpoint there (e.g. "
            "dino_deitsmall16_pretrain.pth or a .safetensors), or use dino='stage' to pretrain on the "
            "training images, or dino='none'."
        )
    state = read_state_dict(path, nested=("teacher", "state_dict", "model"))
    if not isinstance(state, dict):
        raise ValueError(f"clarity: {path} does not hold a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
