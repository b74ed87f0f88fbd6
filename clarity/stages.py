"""Shared, cached training stages (teacher, DINO, lung segmenter): where they live in the run
folder and how a cached result is recognised.

A stage's folder is ``<run_dir>/checkpoints/<name>-<hash>/`` where the hash covers the stage's own
config and the training data, so every CLARiTy variant of a run (and every re-run) reuses it, and a
change of data or config trains a new one. A stage is complete when its ``done.json`` exists and it and
the stage's weights match the checksums sealed beside them (``checksums.json``, `wsl_bench.caches`); a stage
whose files fail that check is removed and trained again, never loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from wsl_bench import caches
from wsl_bench.io import write_json
from wsl_bench.methods import FitContext

DONE = "done.json"


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


def is_done(directory: Path, *files: str) -> bool:
    """True when the stage finished (``done.json``) and it and `files` match their sealed checksums.

    A finished stage that fails the check (damaged, or sealed by no one: an older wsl-bench) is logged and
    removed, so the caller trains it again from scratch. A stage without ``done.json`` is unfinished: its
    folder is kept, so the caller's training resumes from its ``last.ckpt``."""
    directory = Path(directory)
    if not (directory / DONE).is_file():
        return False
    return caches.usable(directory, DONE, *files)


def mark_done(directory: Path, info: dict[str, Any], *files: str) -> None:
    """Write ``done.json`` and seal it with `files` (the stage's outputs a later fit trusts)."""
    write_json(Path(directory) / DONE, info)
    caches.seal(directory, DONE, *files)


def stage_epochs(configured: int, ctx: FitContext) -> int:
    """A stage's epochs: its own setting, capped by the run's `fit.max_epochs` when one is set
    (so smoke runs such as `--preset tiny` stay short for every stage)."""
    return int(min(configured, ctx.max_epochs)) if ctx.max_epochs else int(configured)
