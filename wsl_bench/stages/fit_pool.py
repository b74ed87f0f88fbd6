"""Several methods' fits at once (`--fit-jobs N`): N spawned worker processes, cores / N torch threads each.

For machines where one small-model fit cannot use every core. On the 2-core machine this suite is measured
on it gains nothing (docs/harness.md: one epoch each of CLARiTy and Grad-CAM took 354 s side by side and
364 s one after the other), so the default is 1. A worker runs `fit_stage` exactly as a serial run does (same code, seed,
checkpoint folder and resume from `last.ckpt`), so a fit's weights are byte-identical to a serial fit at the
same thread count; only this process writes the manifest, as each fit finishes. Shared caches are built once
(`wsl_bench.caches.building`), and a method whose `share_checkpoint` names another method of the run waits
for that fit.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from wsl_bench.errors import RunError
from wsl_bench.methods import get_method_info
from wsl_bench.stages.base import threads_per_process
from wsl_bench.stages.data import data_key, run_cohort
from wsl_bench.stages.fit import device_for, fit_stage

FIT_JOBS_AUTO = "auto"


def fit_jobs(hw: dict[str, Any], n_fits: int) -> int:
    """How many fits run at once: `hardware.fit_jobs` (a count, or "auto": the usable cores on a CPU and 1
    on a GPU), never more than the `n_fits` waiting, at least 1."""
    jobs = hw.get("fit_jobs", 1)
    if str(hw.get("devices", 1)) != "1" or int(hw.get("num_nodes", 1)) != 1:
        return 1  # a DDP fit has the processes to itself
    if jobs == FIT_JOBS_AUTO:
        jobs = 1 if device_for(hw).type == "cuda" else _cores()
    return max(1, min(int(jobs), int(n_fits)))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pooled(run, method: str) -> bool:
    """Whether a method's fit goes to the workers: trainable fits only (a reference's fit takes less time
    than starting an interpreter)."""
    return bool(get_method_info(run.config["methods"][method]["registry"]).cls.trainable)


@dataclass
class _WorkerRun:
    """What `fit_stage` sees of the run inside a worker: the manifest as the parent had it, read only; the
    `mark_done` it asks for is handed back to the parent instead of written."""

    dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    log: Callable[[str], None]
    load_s: float = 0.0
    done: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest.setdefault("stages", {}).get(name, {})

    def mark_done(self, name: str, key: str, files: dict[str, str], **extra: Any) -> None:
        self.done = {"name": name, "key": key, "files": files, "extra": extra}

    def save_manifest(self) -> None:
        pass


_COHORTS: dict[str, Any] = {}  # a worker's cohort, loaded once for every fit it runs


def _exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed): nothing may go on writing in a run
    folder whose lock was released. The fit resumes from its last.ckpt when the run is started again."""
    from wsl_bench.training.trainer import SIGTERM_EXIT_STATUS

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(SIGTERM_EXIT_STATUS)

    threading.Thread(target=watch, daemon=True, name="wsl-bench-parent-watch").start()


def _fit_worker(run_dir: str, config: dict[str, Any], stages: dict[str, Any], name: str, key: str, threads: int,
                module: str, parent: int) -> dict[str, Any]:
    """One method's fit in a worker process; returns what the parent records in the manifest."""
    if not any(t.name == "wsl-bench-parent-watch" for t in threading.enumerate()):
        _exit_with_parent(parent)
    torch.set_num_threads(threads)
    importlib.import_module(module)  # registers the method in this fresh interpreter
    dkey = data_key(config)
    if dkey not in _COHORTS:
        _COHORTS.clear()
        _COHORTS[dkey] = run_cohort(config)
    view = _WorkerRun(Path(run_dir), config, {"stages": dict(stages)},
                      log=lambda msg: print(f"wsl-bench [{name}] {msg}", flush=True))
    fit_stage(view, _COHORTS[dkey], name, key)
    return {"done": view.done, "timings": view.manifest.get("timings", {}).get(name, {})}


def _waits_for(run, name: str) -> str | None:
    share = run.config["methods"][name]["config"].get("share_checkpoint")
    return share if share in run.config["methods"] and share != name else None


def _ready(run, pending: list[tuple[str, str]], running: dict, jobs: int) -> list[tuple[str, str]]:
    """The pending fits to start now, in run order: as many as there are free workers, leaving out a fit
    whose `share_checkpoint` method has not finished (unless nothing else could run)."""
    unfinished = {m for m, _ in pending} | {m for m, _ in running.values()}
    free = jobs - len(running)
    ready = [(m, k) for m, k in pending if _waits_for(run, m) not in unfinished][:max(0, free)]
    return ready or (pending[:1] if not running else [])


def fit_in_parallel(run, todo: list[tuple[str, str]], jobs: int,
                    guard: Callable[[str], ContextManager[None]]) -> None:
    """Fit `todo` ((method, stage key), in run order) with `jobs` workers; record each fit as it finishes.

    `guard(method)` wraps the recording of one method's result: an exception raised in its worker is raised
    inside it, so one failed fit is handled as in a serial run (the others go on)."""
    import multiprocessing as mp

    threads = threads_per_process(jobs)
    run.log(f"fit: {len(todo)} methods, {jobs} at a time, {threads} torch thread(s) each")
    config = {k: v for k, v in run.config.items() if k != "progress"}
    stages = dict(run.manifest.get("stages", {}))
    pending, running = list(todo), {}  # running: Future -> (method, key)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        try:
            while pending or running:
                for name, key in _ready(run, pending, running, jobs):
                    pending.remove((name, key))
                    module = get_method_info(run.config["methods"][name]["registry"]).cls.__module__
                    run.log(f"fit: {name}")
                    running[pool.submit(_fit_worker, str(run.dir), config, stages, name, key, threads, module,
                                        os.getpid())] = (name, key)
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    name, _ = running.pop(fut)
                    _record(run, name, fut, jobs, guard)
        except BrokenProcessPool:
            raise RunError("a fit worker process died (killed, or out of memory); re-run the same command: each fit "
                           "resumes from its last.ckpt") from None
        except BaseException:
            for proc in list(getattr(pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
            raise


def _record(run, name: str, fut: Future, jobs: int, guard: Callable[[str], ContextManager[None]]) -> None:
    if isinstance(fut.exception(), BrokenProcessPool):
        raise fut.exception()
    with guard(name):
        result = fut.result()
        done = result["done"]
        run.manifest.setdefault("timings", {}).setdefault(name, {}).update({**result["timings"], "fit_jobs": jobs})
        run.mark_done(done["name"], done["key"], done["files"], **done["extra"])
        run.log(f"fit: {name} done")
