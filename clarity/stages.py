"""Shared, cached training stages (teacher, DINO, lung segmenter): where they live in the run
folder and how a cached result is recognised.

A stage's folder is ``<run_dir>/checkpoints/<name>-<hash>/`` where the hash covers the stage's own
config and the training data, so every CLARiTy variant of a run (and every re-run) reuses it, and a
change of data or config trains a new one. A stage is complete when its ``done.json`` exists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from wsl_bench.methods import FitContext


def data_key(split) -> str:
    """A short fingerprint of a split: its image ids, labels and model-side size."""
    h = hashlib.sha256()
    h.update("\n".join(map(str, split.image_ids)).encode())
    h.update(np.ascontiguousarray(split.labels, dtype=np.float32).tobytes())
    h.update(str(getattr(split, "image_size", "")).encode())
    return h.hexdigest()[:16]


def stage_dir(ctx: FitContext, name: str, key: dict[str, Any]) -> Path:
    """The cache folder of a stage: shared across methods of the run when ctx.run_dir is set."""
    root = Path(ctx.run_dir) / "checkpoints" if ctx.run_dir is not None else Path(ctx.checkpoint_dir).parent
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return root / f"{name}-{digest}"


def is_done(directory: Path) -> bool:
    return (directory / "done.json").is_file()


def stage_epochs(configured: int, ctx: FitContext) -> int:
    """A stage's epochs: its own setting, capped by the run's `fit.max_epochs` when one is set
    (so smoke runs such as `--preset tiny` stay short for every stage)."""
    return int(min(configured, ctx.max_epochs)) if ctx.max_epochs else int(configured)
