"""The fit stage: each method trained (or resumed from Lightning's last.ckpt) into checkpoints/<method>/.

Also the helpers the later stages use to rebuild a method of the run (`make_method`, `device_for`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from wsl_bench.config import config_hash
from wsl_bench.io import write_json
from wsl_bench.methods import FitContext, create_method, get_method_info
from wsl_bench.stages.base import RunFolder, files_under, is_rank_zero, wait_for_all_ranks
from wsl_bench.stages.data import data_key


def device_for(hw: dict[str, Any]) -> torch.device:
    """The device a run's hardware settings put the methods on (cuda or cpu)."""
    from wsl_bench.training.trainer import uses_gpu

    return torch.device("cuda" if uses_gpu(str(hw.get("accelerator", "auto"))) else "cpu")


def n_params(method) -> int:
    """Parameters of every torch module the method holds (shared ones counted once)."""
    seen: dict[int, int] = {}
    for value in vars(method).values():
        if isinstance(value, torch.nn.Module):
            for p in value.parameters():
                seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def make_method(run: RunFolder, name: str):
    """A fresh instance of run method `name` (its registry entry and resolved config), on the CPU."""
    spec = run.config["methods"][name]
    method = create_method(spec["registry"], spec["config"], device="cpu", preset=None)
    method.name = name
    return method


def fit_context(run: RunFolder, spec: dict[str, Any], ckdir: Path) -> FitContext:
    """What the run hands a method's `fit`: its checkpoint folder, the seed, the fit and hardware settings."""
    cfg, hw = run.config, run.config["hardware"]
    return FitContext(
        checkpoint_dir=ckdir,
        seed=cfg["seed"],
        preset=spec["method_preset"],
        image_size=int(cfg["data"]["image_size"]),
        max_epochs=cfg["fit"].get("max_epochs"),
        batch_size=cfg["fit"].get("batch_size"),
        num_workers=int(cfg["fit"].get("num_workers", 0)),
        accelerator=str(hw["accelerator"]),
        devices=hw["devices"],
        num_nodes=int(hw["num_nodes"]),
        strategy=str(hw["strategy"]),
        compile=cfg["fit"].get("compile", False),
        channels_last=cfg["fit"].get("channels_last"),
        precision=cfg["fit"].get("precision"),
        run_dir=run.dir,
        extra={"progress": bool(run.config.get("progress", False))},
    )


def fit_stage(run: RunFolder, cohort, name: str, key: str) -> None:
    """Fit (or resume fitting) one method into checkpoints/<name>/."""
    spec = run.config["methods"][name]
    ckdir = run.dir / "checkpoints" / name
    stage_file = ckdir / "stage.json"
    entry = run.stage(f"fit/{name}")
    if ckdir.exists() and is_rank_zero():
        try:
            old = json.loads(stage_file.read_text()).get("key")
        except (OSError, ValueError):
            old = None
        if old != key:
            run.log(f"fit {name}: checkpoints were made by another config; starting this fit afresh")
            shutil.rmtree(ckdir)
        elif entry.get("key") == key and entry.get("done"):
            run.log(f"fit {name}: a finished fit's files fail their checksums; refitting from scratch")
            shutil.rmtree(ckdir)
    if is_rank_zero():
        write_json(stage_file, {"key": key, "method": name})
    method = make_method(run, name)
    method.to(device_for(run.config["hardware"]))
    t0 = time.perf_counter()
    ctx = fit_context(run, spec, ckdir)
    method.fit(cohort.train, cohort.val, ctx)
    fit_s = time.perf_counter() - t0
    if get_method_info(spec["registry"]).cls.trainable:
        wait_for_all_ranks()  # every rank's `fit` may save files; checksum them only once all have
    if not is_rank_zero():
        return
    files = files_under(ckdir, run.dir, skip=lambda p: p.name == "stage.json" or "logs" in p.relative_to(ckdir).parts)
    run.manifest.setdefault("timings", {}).setdefault(name, {}).update(
        {"fit_s": round(fit_s, 3), "n_params": n_params(method), "fit_processes": int(ctx.extra.get("fit_processes", 1)),
         # CPU results are byte-reproducible for the same thread count only (float summation order)
         "fit_threads": torch.get_num_threads(),
         # the last train_module loop of the fit (CLARiTy: the main one, after its DINO and teacher stages)
         **{k: ctx.extra[k] for k in ("fit_max_epochs", "fit_batch_size") if k in ctx.extra}}
    )
    from wsl_bench.caches import manifest_entries

    used = manifest_entries(ctx.extra, run.dir)  # shared caches this fit trusted: checked like its own files
    run.mark_done(f"fit/{name}", key, files, **({"caches": used} if used else {}))


class FitStage:
    """Trains one method on the train/val splits; the extra DDP processes join trainable fits."""

    name = title = "fit"
    per_method = True

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str:
        cfg = run.config
        return config_hash({"data": data_key(cfg), "fp": upstream.get("fingerprint"), "method": cfg["methods"][method],
                            "fit": cfg["fit"], "seed": cfg["seed"]})

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return ()  # the cohort itself, through its fingerprint

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return (f"checkpoints/{method}",)

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        return is_rank_zero() or get_method_info(run.config["methods"][method]["registry"]).cls.trainable

    def run(self, run: RunFolder, cohort, method: str | None, key: str) -> None:
        fit_stage(run, cohort, method, key)


FIT = FitStage()
