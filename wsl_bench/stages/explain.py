"""The explain stage: maps of the 8 box findings for every box image and probs for every test image.

The test split is explained in fixed batches (box images first), one shard file per batch, so a killed run
resumes from its shards. With `--devices N --strategy ddp` (N > 1) N processes each write a disjoint set of
shards; the merge into heatmaps/<method>.npz and <method>.probs.csv is the same whatever the world size, so
the bundle is too.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from wsl_bench.config import config_hash
from wsl_bench.errors import RunError
from wsl_bench.io import atomic_path, sha256_file
from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS, FINDINGS
from wsl_bench.methods import get_method_info
from wsl_bench.references import REFERENCE_METHODS
from wsl_bench.stages.base import RunFolder, is_rank_zero, threads_per_process
from wsl_bench.stages.data import run_cohort
from wsl_bench.stages.fit import device_for, make_method


def explain_order(test) -> tuple[np.ndarray, int]:
    """Box images first (they get maps), then the rest (probs only); returns (order, n_box)."""
    box = test.box_image_indices()
    rest = np.setdiff1d(np.arange(len(test)), box)
    return np.concatenate([box, rest]).astype(np.int64), len(box)


def explain_world(hw: dict[str, Any]) -> int:
    """How many processes explain shares a method's batches across: `--devices N` (N > 1) with a DDP strategy.

    Explain is embarrassingly parallel (batches are independent), so the ranks coordinate through the shard
    files, not collectives; they run on the node of rank 0 (one process per local device).
    """
    devices, strategy = hw.get("devices", 1), str(hw.get("strategy", "auto"))
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if devices in ("auto", -1) and "ddp" in strategy:
        from wsl_bench.training.trainer import uses_gpu

        devices = torch.cuda.device_count() if uses_gpu(str(hw.get("accelerator", "auto"))) else 1
    if not isinstance(devices, int) or devices < 2 or "ddp" not in strategy:
        return 1
    return devices


def explain_threads(world: int) -> int:
    """Torch threads for each of `world` CPU explain processes (`threads_per_process`)."""
    return threads_per_process(world)


def _rank_device(hw: dict[str, Any], rank: int) -> torch.device:
    device = device_for(hw)
    return torch.device("cuda", rank % max(1, torch.cuda.device_count())) if device.type == "cuda" else device


def explain_batches(run: RunFolder, test) -> tuple[list[np.ndarray], int, int]:
    """The global batches (box images first), the number of box images, and the batch size."""
    order, n_box = explain_order(test)
    bs = int(run.config["explain"]["batch_size"])
    return [order[i : i + bs] for i in range(0, len(order), bs)], n_box, bs


def _write_shards(run: RunFolder, test, name: str, parts: Path, rank: int = 0, world: int = 1, show: bool = False) -> None:
    """Explain batches b with b % world == rank into parts/batch_<b>.npz (each atomic; existing shards kept)."""
    method = make_method(run, name)
    method.load(run.dir / "checkpoints" / name)
    device = _rank_device(run.config["hardware"], rank)
    method.to(device)
    batches, n_box, bs = explain_batches(run, test)
    mine = [(b, idx) for b, idx in enumerate(batches) if b % world == rank]
    steps = iter(mine)
    if show:
        from rich.progress import track

        steps = track(steps, total=len(mine), description=f"explain {name}", transient=True)
    for b, idx in steps:
        shard = parts / f"batch_{b:06d}.npz"
        if shard.exists():
            try:
                with np.load(shard, allow_pickle=False) as z:
                    if np.array_equal(z["idx"], idx):
                        continue
            except Exception:  # noqa: BLE001 - a torn shard is redone
                pass
        images = test.load_images(idx).to(device)
        t0 = time.perf_counter()
        probs = method.predict(images).detach().float().cpu().numpy()
        n_maps = min(len(idx), max(0, n_box - b * bs))
        maps = np.zeros((0, len(BOX_FINDINGS), 1, 1), np.float32)
        if n_maps:
            maps = method.explain(images[:n_maps], list(BOX_FINDING_INDICES)).detach().float().cpu().numpy()
            if maps.ndim != 4 or maps.shape[:2] != (n_maps, len(BOX_FINDINGS)):
                raise RunError(f"{name}.explain returned shape {maps.shape}; expected [{n_maps}, 8, h, w]")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        secs = time.perf_counter() - t0
        if probs.shape != (len(idx), len(FINDINGS)):
            raise RunError(f"{name}.predict returned shape {probs.shape}; expected [{len(idx)}, {len(FINDINGS)}]")
        with atomic_path(shard) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, idx=idx, probs=probs, maps=maps, n_maps=n_maps, seconds=secs)


@dataclass(frozen=True)
class RankView:
    """What a spawned explain rank knows of the run: its folder and config (it writes shards only)."""

    dir: Path
    config: dict[str, Any]


def _explain_worker(local: int, run_dir: str, config: dict[str, Any], name: str, parts: str, world: int, module: str) -> None:
    """One extra explain rank (started by torch.multiprocessing): rank = local + 1 of `world`."""
    import importlib

    if device_for(config["hardware"]).type == "cpu":
        torch.set_num_threads(explain_threads(world))
    importlib.import_module(module)  # registers the method in this fresh interpreter
    run = RankView(Path(run_dir), config)
    cohort = run_cohort(config)
    _write_shards(run, cohort.test, name, Path(parts), rank=local + 1, world=world)


def _sharded_explain(run: RunFolder, test, name: str, parts: Path, world: int) -> None:
    """Rank 0 (this process) and world-1 spawned ranks write disjoint shards; returns when all are written."""
    import torch.multiprocessing as mp

    module = get_method_info(run.config["methods"][name]["registry"]).cls.__module__
    config = {k: v for k, v in run.config.items() if k != "progress"}
    ctx = mp.start_processes(
        _explain_worker, args=(str(run.dir), config, name, str(parts), world, module), nprocs=world - 1,
        join=False, start_method="spawn",
    )
    threads = torch.get_num_threads()
    try:
        if device_for(run.config["hardware"]).type == "cpu":
            torch.set_num_threads(explain_threads(world))
        _write_shards(run, test, name, parts, rank=0, world=world)
    except BaseException:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        torch.set_num_threads(threads)
    try:
        while not ctx.join():
            pass
    except Exception as exc:  # noqa: BLE001 - a failed rank: say which, keep the shards for the next attempt
        raise RunError(f"explain {name}: an explain rank failed ({exc}); re-run the same command to resume") from None


def explain_stage(run: RunFolder, cohort, name: str, key: str) -> None:
    """Write heatmaps/<name>.npz and <name>.probs.csv from the shards (written first, by 1 or N processes)."""
    from wsl_bench.heatmaps import bundle_key, write_bundle

    test = cohort.test
    hdir = run.dir / "heatmaps"
    parts = hdir / f"{name}.parts" / key[:16]
    for old in (hdir / f"{name}.parts").glob("*"):
        if old != parts:
            shutil.rmtree(old, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)

    world = min(explain_world(run.config["hardware"]), len(explain_batches(run, test)[0]))
    if run.config["methods"][name]["registry"] in REFERENCE_METHODS:
        world = 1  # a fixed prior or seeded noise: starting N-1 interpreters costs more than the maps
    t_wall = time.perf_counter()
    if world > 1:
        run.log(f"explain {name}: {world} processes, one shard of batches each")
        _sharded_explain(run, test, name, parts, world)
    else:
        _write_shards(run, test, name, parts, show=bool(run.config.get("progress")))
    wall_s = time.perf_counter() - t_wall
    order, n_box = explain_order(test)
    batches, _, _ = explain_batches(run, test)
    device = device_for(run.config["hardware"])

    maps_out: dict[str, np.ndarray] = {}
    probs_rows = np.zeros((len(order), len(FINDINGS)), np.float32)
    map_seconds = total_seconds = 0.0
    pos = 0
    for b, idx in enumerate(batches):
        with np.load(parts / f"batch_{b:06d}.npz", allow_pickle=False) as z:
            # NpzFile decodes an entry on every access: read each entry once
            shard = {k: z[k] for k in ("probs", "maps", "n_maps", "seconds")}
        probs_rows[pos : pos + len(idx)] = shard["probs"]
        pos += len(idx)
        total_seconds += float(shard["seconds"])
        n_maps = int(shard["n_maps"])
        if n_maps:
            map_seconds += float(shard["seconds"])
            for j, i in enumerate(idx[:n_maps]):
                for c, label in enumerate(BOX_FINDINGS):
                    maps_out[bundle_key(test.image_ids[int(i)], label)] = shard["maps"][j, c]
    sizes = {test.image_ids[int(i)]: tuple(int(v) for v in test.orig_sizes[int(i)]) for i in order[:n_box]}
    write_bundle(hdir / f"{name}.npz", maps_out, sizes)
    probs = pd.DataFrame(probs_rows, columns=list(FINDINGS))
    probs.insert(0, "image_id", [test.image_ids[int(i)] for i in order])
    probs = probs.set_index("image_id").loc[test.image_ids].reset_index()
    with atomic_path(hdir / f"{name}.probs.csv") as tmp:
        probs.to_csv(tmp, index=False, float_format="%.7g")
    n = len(maps_out)
    run.manifest.setdefault("timings", {}).setdefault(name, {}).update(
        {
            "explain_s": round(total_seconds, 3),
            "heatmaps_per_s": round(n / map_seconds, 3) if map_seconds > 0 else None,
            "n_heatmaps": n,
            "device": device.type,
            "explain_processes": world,
            "explain_wall_s": round(wall_s, 3),
        }
    )
    files = {
        f"heatmaps/{name}.npz": sha256_file(hdir / f"{name}.npz"),
        f"heatmaps/{name}.probs.csv": sha256_file(hdir / f"{name}.probs.csv"),
    }
    run.mark_done(f"explain/{name}", key, files)
    shutil.rmtree(hdir / f"{name}.parts", ignore_errors=True)


class ExplainStage:
    """A fitted method's maps and probs on the test split."""

    name = title = "explain"
    per_method = True

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str:
        return config_hash({"fit": upstream[f"fit/{method}"], "ckpt": run.files_digest(f"fit/{method}"),
                            "explain": run.config["explain"]})

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return (f"fit/{method}",)

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return (f"heatmaps/{method}.npz", f"heatmaps/{method}.probs.csv")

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        return is_rank_zero()

    def run(self, run: RunFolder, cohort, method: str | None, key: str) -> None:
        explain_stage(run, cohort, method, key)


EXPLAIN = ExplainStage()
