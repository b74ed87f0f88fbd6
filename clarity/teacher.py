"""The ConvNeXtV2 teacher CLARiTy distils from (the abstract: "a ConvNeXtV2 teacher ... for
efficiency"). It is trained first, through the harness's `ClassifierModule`/`train_module`, and
cached in the run folder so every CLARiTy variant of the run reuses it (clarity/stages.py).

Which ConvNeXtV2 (atto for the quick preset, base for the paper preset, as the [S] numbers suggest a
ConvNeXt V2-B) and its training recipe are ours.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from wsl_bench.checkpoints import load_checkpoint, save_checkpoint
from wsl_bench.labels import FINDINGS
from wsl_bench.methods import FitContext

from .config import ClarityConfig
from wsl_bench import caches

from .stages import data_key, is_done, mark_done, stage_dir, stage_epochs

# wsl_bench.checkpoints pairs, sealed with the stage: the teacher, and its logits on the training split
CHECKPOINT, TABLE_CHECKPOINT = "teacher", "train_logits"
WEIGHTS, META = "teacher.safetensors", "teacher.json"
TABLE, TABLE_META = "train_logits.safetensors", "train_logits.json"


class Teacher(nn.Module):
    """timm ConvNeXtV2 (pretrained=False, grayscale) at a fixed input size -> 14 logits."""

    def __init__(self, name: str, img_size: int):
        super().__init__()
        if not name.startswith("convnextv2_"):
            raise ValueError(f"clarity: teacher must be a timm convnextv2_* model, got {name!r}")
        self.img_size = int(img_size)
        self.net = timm.create_model(name, pretrained=False, num_classes=len(FINDINGS), in_chans=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.img_size or images.shape[-2] != self.img_size:
            images = F.interpolate(images, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return self.net((images - 0.5) / 0.25)


def pos_weight_of(split) -> torch.Tensor:
    """BCE positive weights neg/pos per class, clipped to [1, 20] (the suite's baselines do the same)."""
    labels = np.asarray(split.labels, dtype=np.float64)
    pos = labels.sum(0)
    return torch.tensor(np.clip((len(labels) - pos) / np.maximum(pos, 1), 1.0, 20.0), dtype=torch.float32)


def teacher_key(cfg: ClarityConfig, img_size: int, train, ctx: FitContext) -> dict:
    return {
        "teacher": cfg.teacher, "epochs": stage_epochs(cfg.teacher_epochs, ctx), "lr": cfg.teacher_lr,
        "batch_size": cfg.teacher_batch_size, "img_size": img_size, "seed": ctx.seed, "data": data_key(train),
    }


def get_teacher(cfg: ClarityConfig, img_size: int, train, val, ctx: FitContext) -> Teacher:
    """The cached teacher for this data and config, trained now if the run folder has none."""
    directory = stage_dir(ctx, f"teacher-{cfg.teacher}", teacher_key(cfg, img_size, train, ctx))
    with caches.building(directory, ctx):  # fits running at once train it once
        return _teacher(directory, cfg, img_size, train, val, ctx)


def _teacher(directory: Path, cfg: ClarityConfig, img_size: int, train, val, ctx: FitContext) -> Teacher:
    from wsl_bench.training import ClassifierModule, train_module

    teacher = Teacher(cfg.teacher, img_size)
    if is_done(directory, WEIGHTS, META):  # checksums verified; a damaged teacher is removed and retrained
        teacher.load_state_dict(load_checkpoint(directory, CHECKPOINT)[0])
        caches.record_use(ctx, directory, WEIGHTS)
        return teacher.eval()
    torch.manual_seed(ctx.seed)
    teacher = Teacher(cfg.teacher, img_size)
    module = ClassifierModule(teacher, lr=cfg.teacher_lr, weight_decay=0.05, pos_weight=pos_weight_of(train))
    stage_ctx = replace(ctx, checkpoint_dir=directory, max_epochs=None, batch_size=None)
    train_module(module, train, val, stage_ctx, max_epochs=stage_epochs(cfg.teacher_epochs, ctx),
                 batch_size=cfg.teacher_batch_size)
    info = {"stage": "teacher", **teacher_key(cfg, img_size, train, ctx)}
    save_checkpoint(directory, teacher.state_dict(), info, CHECKPOINT)
    mark_done(directory, info, WEIGHTS, META)
    caches.record_use(ctx, directory, WEIGHTS)
    return teacher.eval()


@torch.no_grad()
def teacher_table(teacher: nn.Module, split, batch_size: int = 64) -> torch.Tensor:
    """The teacher's logits [N,14] for every image of `split`, in index order (fixed batches, so
    the table is the same however training is later interrupted and resumed).

    Ours (`teacher_cache`): the harness does not augment training images, so the teacher's answer
    for an image never changes; one pass replaces a teacher forward in every training step."""
    teacher = teacher.eval()
    device = next(teacher.parameters()).device
    load = getattr(split, "load_images", None)
    rows = []
    for start in range(0, len(split), batch_size):
        idx = list(range(start, min(len(split), start + batch_size)))
        images = load(idx) if load is not None else torch.stack([split[i]["image"] for i in idx])
        rows.append(teacher(images.to(device, torch.float32)).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, len(FINDINGS))


def get_teacher_table(cfg: ClarityConfig, teacher: nn.Module, img_size: int, train, ctx: FitContext) -> torch.Tensor:
    """`teacher_table` for the training split, cached beside the teacher (every variant reuses it)."""
    directory = stage_dir(ctx, f"teacher-{cfg.teacher}", teacher_key(cfg, img_size, train, ctx))
    with caches.building(directory, ctx):
        return _teacher_table(directory, cfg, teacher, train, ctx)


def _teacher_table(directory: Path, cfg: ClarityConfig, teacher: nn.Module, train, ctx: FitContext) -> torch.Tensor:
    path = directory / TABLE
    # sealed beside the teacher; a table failing its checksum is removed and recomputed (the teacher is kept)
    if path.is_file() and caches.usable(directory, TABLE, TABLE_META, remove="files"):
        table = load_checkpoint(directory, TABLE_CHECKPOINT)[0]["logits"]
        if table.shape == (len(train), len(FINDINGS)):
            caches.record_use(ctx, directory, TABLE)
            return table
    table = teacher_table(teacher, train, cfg.teacher_batch_size)
    save_checkpoint(directory, {"logits": table}, {"rows": len(train), "classes": list(FINDINGS)}, TABLE_CHECKPOINT)
    caches.seal(directory, TABLE, TABLE_META)
    caches.record_use(ctx, directory, TABLE)
    return table
