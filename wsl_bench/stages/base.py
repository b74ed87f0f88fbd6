"""The stage protocol every stage of a run satisfies, and the bookkeeping the stages share.

A stage's key hashes its config and the checksums of its inputs (the files upstream stages recorded in the
manifest); the run skips a stage whose manifest entry has the same key and whose files still match their
checksums, and redoes it otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from wsl_bench.io import sha256_file


class RunFolder(Protocol):
    """What a stage sees of a run (`wsl_bench.run.Run`): the folder, its config, its manifest, its log."""

    dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    log: Callable[[str], None]
    load_s: float  # seconds this invocation took to load the cohort (the data stage records it)

    def stage(self, name: str) -> dict[str, Any]: ...

    def is_done(self, name: str, key: str) -> bool: ...

    def mark_done(self, name: str, key: str, files: dict[str, str], **extra: Any) -> None: ...

    def files_digest(self, name: str) -> str: ...

    def save_manifest(self) -> None: ...


class Stage(Protocol):
    """One stage of a run. A `per_method` stage runs once per method, as manifest entry `<name>/<method>`."""

    name: str
    title: str  # what the run's log calls it
    per_method: bool

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str | None:
        """Hash of the stage's config and inputs; None when the stage does not apply (to this method).

        `upstream` holds the keys computed so far in this invocation, by entry name, and `fingerprint`:
        the fingerprint of the loaded cohort."""

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        """The manifest entries (upstream stages) whose recorded files the key hashes."""

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        """What it writes, relative to the run folder (a folder stands for every file under it)."""

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        """Whether this process runs the stage (the extra processes of a DDP fit join only trainable fits)."""

    def run(self, run: RunFolder, cohort: Any, method: str | None, key: str) -> Any:
        """Do the work and record it with `run.mark_done(entry(self, method), key, files)`."""


def entry(stage: Stage, method: str | None) -> str:
    """The stage's manifest entry: `data`, `report`, or `<stage>/<method>`."""
    return f"{stage.name}/{method}" if stage.per_method else stage.name


def is_rank_zero() -> bool:
    """False inside the extra processes a DDP launcher starts (they only help with fit)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def wait_for_all_ranks() -> None:
    """A barrier across the DDP ranks of a fit (none in a 1-process run).

    Methods save their weights at the end of `fit` on every rank (same weights; a timing field may differ),
    so without it rank 0 could record checksums that a late rank's write then invalidates, and the next run
    would refit a finished method.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def threads_per_process(n: int) -> int:
    """Torch threads for each of `n` CPU processes working at once: the usable cores / n, at least 1.

    Every process left at its default (all cores) oversubscribes the CPU (steps ~10x slower with 2
    processes on 2 cores). An OMP_NUM_THREADS the user set is an upper bound.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, int(n)))
    user = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(user)) if user.isdigit() and int(user) > 0 else threads


def files_under(root: Path, base: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    """sha256 of every file under `root` (or of `root` itself), keyed relative to `base`."""
    if root.is_file():
        return {root.relative_to(base).as_posix(): sha256_file(root)}
    return {
        p.relative_to(base).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and not skip(p)
    }
