"""`train_module`: the one Lightning training loop of the suite (checkpoints, resume, early stop, DDP).

Our choices, documented in docs/harness.md:
- Checkpoints are Lightning `.ckpt` files loaded with ``weights_only=True`` (they hold only tensors and
  primitives), so a checkpoint is data, never code. A `last.ckpt` that does not load is moved aside to
  `last.ckpt.corrupt` and training restarts from scratch rather than trusting it.
- Resume granularity is one epoch (`last.ckpt` is written after every validation).
- A fit stopped by SIGTERM exits with status 143 (Lightning's own exit on SIGTERM is status 0, which would
  tell a script or scheduler that an unfinished run succeeded); the same command resumes it.
- `batch_size` is the global batch: N DDP ranks take batch_size / N each, so a DDP fit takes the steps of
  a 1-process fit with the same learning rate (see `per_rank_batch_size`).
- Shuffling uses a `DistributedSampler` seeded with `ctx.seed` whose order depends only on the epoch, and
  every epoch re-seeds the global RNGs from (seed, epoch, rank); so a run resumed from `last.ckpt` takes
  exactly the steps an uninterrupted run takes, and CPU runs are bit-identical.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import warnings
from pathlib import Path
from typing import Iterable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, DistributedSampler

from wsl_bench.methods import FitContext

_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
SIGTERM_EXIT_STATUS = 128 + int(signal.SIGTERM)  # what a shell reports for a process ended by SIGTERM


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` setting resolves to a CUDA device here."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def default_precision(ctx: FitContext) -> str:
    """bf16-mixed on GPU, 32-true on CPU, unless the context names one."""
    if ctx.precision:
        return ctx.precision
    return "bf16-mixed" if uses_gpu(ctx.accelerator) else "32-true"


def load_weights(module: torch.nn.Module, path: str | Path, strict: bool = True) -> torch.nn.Module:
    """Load a Lightning checkpoint's (or a plain state_dict file's) weights with weights_only=True."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    module.load_state_dict(state, strict=strict)
    return module


class _EpochSeed(Callback):
    """Re-seed Python/NumPy/torch at each epoch start so a resumed run repeats the same randomness."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer, pl_module):
        s = (self.seed * 1_000_003 + trainer.current_epoch * 7919 + trainer.global_rank) % (2**31 - 1)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


def use_channels_last(ctx: FitContext) -> bool:
    """Channels-last on GPU (faster convolutions with tensor cores), contiguous on CPU, unless ctx says."""
    return uses_gpu(ctx.accelerator) if ctx.channels_last is None else bool(ctx.channels_last)


def apply_speedups(module: torch.nn.Module, ctx: FitContext) -> torch.nn.Module:
    """Channels-last weights and `torch.compile` (in place: parameter names and checkpoints are unchanged)."""
    if use_channels_last(ctx):
        module.to(memory_format=torch.channels_last)
    if ctx.compile:
        backend = ctx.compile if isinstance(ctx.compile, str) else "inductor"
        module.compile(backend=backend)
    return module


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch, so N processes take the steps (and learning rate) of one.

    `batch_size` is the global batch (the paper's figure): with DDP every rank loads ceil(batch / N)
    images and the averaged gradient is that of one batch of ~`batch_size` images. A global batch that
    N does not divide grows to the next multiple of N (a warning says so).
    """
    batch_size, world_size = int(batch_size), max(1, int(world_size))
    per_rank = -(-batch_size // world_size)
    if per_rank * world_size != batch_size:
        warnings.warn(
            f"global batch size {batch_size} is not a multiple of the {world_size} processes; "
            f"each takes {per_rank} (global batch {per_rank * world_size})",
            stacklevel=2,
        )
    return per_rank


class _Splits(L.LightningDataModule):
    """Builds loaders after the strategy is set up, so samplers know the world size and rank."""

    def __init__(self, train, val, batch_size: int, num_workers: int, seed: int, channels_last: bool = False):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.channels_last = channels_last

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.channels_last and isinstance(batch, dict) and getattr(batch.get("image"), "ndim", 0) == 4:
            batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
        return batch

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(
            ds,
            batch_size=per_rank_batch_size(self.batch_size, world),
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self):
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val, shuffle=False)


def _usable_checkpoint(path: Path) -> bool:
    """True if `path` loads as data; a truncated/corrupt/code-carrying file is moved aside."""
    if not path.exists():
        return False
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means "do not trust it"
        bad = path.with_name(path.name + ".corrupt")
        path.replace(bad)
        warnings.warn(f"{path} could not be loaded safely ({type(exc).__name__}); moved to {bad}, training from scratch")
        return False


# Epochs without improvement of the monitored metric before early stopping, when a method sets none.
DEFAULT_PATIENCE = 5


def train_module(
    module: L.LightningModule,
    train,
    val,
    ctx: FitContext,
    *,
    max_epochs: int,
    batch_size: int,
    monitor: str = "val_mean_auroc",
    mode: str = "max",
    patience: int = DEFAULT_PATIENCE,
    max_steps: int = -1,
    limit_train_batches: int | float | None = None,
    gradient_clip_val: float | None = None,
    callbacks: Iterable[Callback] = (),
) -> Path:
    """Train `module` on `train`, validating on `val`; returns the best checkpoint's path.

    Args:
      module: a `ClassifierModule` (or any LightningModule logging `monitor` in validation).
      train, val: torch Datasets yielding dict batches (the data contract's `CXRDataset`).
      ctx: where and how: `checkpoint_dir`, `seed`, `accelerator/devices/num_nodes/strategy`, `precision`
        (None: bf16-mixed on GPU, 32-true on CPU), `channels_last` (None: on GPU only), `compile` (False,
        True for inductor, or a backend name), `num_workers`, `extra["progress"]` (progress bar).
      max_epochs, batch_size: the loop; `ctx.max_epochs/ctx.batch_size` override them when set. The batch
        size is the GLOBAL batch: under DDP each of N ranks loads batch_size / N images
        (`per_rank_batch_size`), so steps per epoch and the learning rate match one process.
      monitor, mode, patience: early stopping and best-checkpoint selection (default: val mean AUROC, max).
      max_steps, limit_train_batches, gradient_clip_val, callbacks: passed through to Lightning.

    Writes under `ctx.checkpoint_dir`: `best.ckpt`, `last.ckpt` (resumed from on the next call) and
    `logs/version_0/metrics.csv`. On return `module` holds the best weights (on CPU). Checkpoints load
    with `weights_only=True`; `load_weights(module, path)` reloads one later.
    """
    ckdir = Path(ctx.checkpoint_dir)
    ckdir.mkdir(parents=True, exist_ok=True)
    # a run's fit.max_epochs / fit.batch_size win when set (None: the method's own); 0 is refused, never
    # silently replaced by the method's value (config.yaml must record the loop that ran)
    max_epochs = int(ctx.max_epochs if ctx.max_epochs is not None else max_epochs)
    batch_size = int(ctx.batch_size if ctx.batch_size is not None else batch_size)
    if max_epochs < 1 or batch_size < 1:
        raise ValueError(f"train_module: max_epochs={max_epochs} and batch_size={batch_size} must both be >= 1")
    verbose = bool(ctx.extra.get("verbose", False))
    if not verbose:
        for name in _LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    L.seed_everything(ctx.seed, workers=True, verbose=False)

    checkpoint = ModelCheckpoint(
        dirpath=ckdir,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # `last.ckpt` after EVERY validation (Lightning 2.6's save_last=True rewrites it only when the best
    # improves, so a killed run would redo the epochs since the last improvement)
    last_checkpoint = ModelCheckpoint(
        dirpath=ckdir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    stopper = EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    trainer = L.Trainer(
        accelerator=ctx.accelerator,
        devices=ctx.devices,
        num_nodes=ctx.num_nodes,
        strategy=ctx.strategy,
        precision=default_precision(ctx),
        max_epochs=max_epochs,
        max_steps=max_steps,
        limit_train_batches=limit_train_batches,
        gradient_clip_val=gradient_clip_val,
        callbacks=[checkpoint, last_checkpoint, stopper, _EpochSeed(ctx.seed), *callbacks],
        logger=CSVLogger(save_dir=ckdir, name="logs", version=0),
        default_root_dir=ckdir,
        deterministic="warn",
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_progress_bar=bool(ctx.extra.get("progress", False)),
        enable_model_summary=verbose,
        log_every_n_steps=1,
    )
    last = ckdir / "last.ckpt"
    resume = last if _usable_checkpoint(last) else None
    apply_speedups(module, ctx)
    data = _Splits(train, val, batch_size, ctx.num_workers, ctx.seed, channels_last=use_channels_last(ctx))
    with warnings.catch_warnings():
        if not verbose:
            warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|LeafSpec).*")
            warnings.filterwarnings("ignore", category=UserWarning, module=r"lightning\..*")
            warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*")
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        except SIGTERMException:
            print(f"wsl-bench: stopped by SIGTERM while training in {ckdir}; the epochs up to its last.ckpt are "
                  "kept: run the same command again to resume", file=sys.stderr)
            raise SystemExit(SIGTERM_EXIT_STATUS) from None
    # what ran (ctx overrides applied), for the run manifest and the methods' own records
    ctx.extra.update(fit_processes=int(trainer.world_size), fit_max_epochs=max_epochs, fit_batch_size=batch_size)

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else ckdir / "best.ckpt"
    if not best.exists():
        best = last
    module.cpu()
    load_weights(module, best)
    return best
