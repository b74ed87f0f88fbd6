"""A benchmark run: the stages of `wsl_bench.stages` (data -> fit -> explain -> score -> report), in order,
into one resumable run folder.

Each stage has a key (a hash of its config and of the checksums of what it reads). A stage is skipped when
the manifest records it done under the same key and its output files still match their checksums; otherwise
it is redone from scratch (its old outputs removed first), so a folder made by an older config is never
silently reused, and a truncated file is redone, not trusted. Explain writes one shard per batch and resumes
from the shards; fit resumes from Lightning's `last.ckpt`. A lock file keeps two runs out of one folder.

This module holds the lock, the manifest, the `Run` object and the stage loop (`execute`, `plan`); the
config is built in `wsl_bench.config`, the stages live in `wsl_bench.stages`.

Layout: config.yaml, manifest.json, data/{images.csv,boxes.csv,gallery.npz}, checkpoints/<method>/,
heatmaps/<method>.npz + <method>.probs.csv, scores/<method>/{per_box.csv,summary.json}, report/.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from wsl_bench.config import (
    HASHED_SECTIONS,
    build_config,
    config_hash,
    parse_overrides,
    run_config_hash,
    select_methods,
)
from wsl_bench.errors import MethodsFailed, RunError
from wsl_bench.io import sha256_file, write_json, write_text
from wsl_bench.presets import DEFAULT_METHODS, FIT_KEYS, PRESETS
from wsl_bench.references import REFERENCE_METHODS
from wsl_bench.stages import DATA, FIT, PASSES, REPORT, entry
from wsl_bench.stages.base import is_rank_zero
from wsl_bench.stages.data import load_cohort, run_cohort, write_data_stage
from wsl_bench.stages.estimates import data_lines, method_lines
from wsl_bench.stages.explain import explain_threads, explain_world

# the names `wsl_bench.run` has always offered, whatever module now holds them
__all__ = [
    "DEFAULT_METHODS", "FIT_KEYS", "HASHED_SECTIONS", "PRESETS", "REFERENCE_METHODS", "MethodsFailed", "Run",
    "RunError", "build_config", "config_hash", "dry_run_text", "execute", "explain_threads", "explain_world",
    "is_rank_zero", "load_cohort", "parse_overrides", "plan", "run_cohort", "run_config_hash", "run_lock",
    "select_methods", "write_data_stage", "write_text",
]


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.lock` (flock; released by the OS if the process dies, even on SIGKILL)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise RunError(
            f"{run_dir} is in use by another wsl-bench run ({holder}); wait for it to finish or use another --out"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {platform.node()}\n")
    fh.flush()
    try:
        yield
    finally:
        fh.seek(0)
        fh.truncate()
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("wsl-bench", "torch", "lightning", "timm", "grad-cam", "captum", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _platform() -> dict[str, str]:
    """The CPU a run's float kernels ran on. CPU runs are byte-reproducible per torch thread count on one
    CPU type; another CPU (its SIMD kernels) can change a trained network's weights (docs/harness.md)."""
    import torch

    out = {"machine": platform.machine() or "unknown", "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    cpu = _cpu_model()
    if cpu:
        out["cpu"] = cpu
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


@dataclass
class Run:
    """A run folder and its manifest (what the stages see of the run: `wsl_bench.stages.base.RunFolder`)."""

    dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    load_s: float = 0.0  # seconds this invocation took to load the cohort

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def load_manifest(self) -> None:
        self.manifest = {}
        if self.manifest_path.exists():
            try:
                from wsl_bench.guards import sanitize_manifest

                self.manifest = sanitize_manifest(json.loads(self.manifest_path.read_text()), self.manifest_path, self.log)
            except ValueError:
                self.log(f"warning: {self.manifest_path} is unreadable; every stage will be redone")

    def save_manifest(self) -> None:
        if is_rank_zero():
            write_json(self.manifest_path, self.manifest)

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest.setdefault("stages", {}).get(name, {})

    def is_done(self, name: str, key: str) -> bool:
        entry = self.stage(name)
        if entry.get("key") != key or not entry.get("done"):
            return False
        # the stage's own files and the shared caches it trusted (wsl_bench.caches)
        for rel, digest in {**entry.get("files", {}), **entry.get("caches", {})}.items():
            path = self.dir / rel
            if not path.is_file() or sha256_file(path) != digest:
                self.log(f"{name}: {rel} is missing or does not match its checksum; redoing the stage")
                return False
        return True

    def mark_done(self, name: str, key: str, files: dict[str, str], **extra: Any) -> None:
        self.manifest.setdefault("stages", {})[name] = {"key": key, "done": True, "files": files, **extra}
        self.save_manifest()

    def files_digest(self, name: str) -> str:
        return config_hash(self.stage(name).get("files", {}))


def plan(run: Run) -> list[tuple[str, str]]:
    """(stage entry, status) for every stage as the folder stands, without doing anything.

    A stage is done when its recorded key matches and everything before it (for its method) is done too."""
    upstream: dict[str, str] = {"fingerprint": run.manifest.get("data_fingerprint")}
    failures = run.manifest.get("failures") or {}
    out: list[tuple[str, str]] = []
    done_before: dict[str | None, bool] = {None: True}  # method -> all its stages so far done
    for stages in PASSES:
        for method in run.config["methods_order"] if stages[0].per_method else [None]:
            for stage in stages:
                key = stage.key(run, method, upstream)
                if key is None:
                    continue
                name = entry(stage, method)
                upstream[name] = key
                if method is None and stage is REPORT:
                    ready = all(status == "done" for _, status in out) and not failures
                else:
                    ready = done_before[None] and done_before.get(method, True)
                done = ready and run.is_done(name, key)
                status = "done" if done else ("redo (config changed)" if run.stage(name).get("key") not in (None, key)
                                              else "to do")
                out.append((name, status))
                done_before[method] = done_before.get(method, True) and done
    return out


def execute(config: dict[str, Any], out: Path, *, log: Callable[[str], None] = print,
            command: list[str] | None = None) -> Path | None:
    """Run every stage not yet done for `config` in folder `out`; returns the report path (None on rank > 0).

    `command` (the command line as given) is recorded in manifest.json with the config hash it resolved to,
    so the report can say how the folder was made."""
    out = Path(out)
    if not is_rank_zero():
        log = lambda msg: None  # noqa: E731 - extra DDP ranks stay quiet
    run = Run(out, config, log=log)
    lock = run_lock(out) if is_rank_zero() else contextlib.nullcontext()
    with lock:
        _open_folder(run, command)
        return _run_stages(run)


def _open_folder(run: Run, command: list[str] | None) -> None:
    """Read the manifest; on rank 0 also clear a killed run's temporaries and record this config."""
    config = run.config
    if is_rank_zero():  # the lock is ours: temporary files in the folder belong to a killed run
        from wsl_bench.guards import sweep_temporaries

        sweep_temporaries(run.dir, run.log)
    run.load_manifest()
    new_hash = run_config_hash(config)
    old_hash = run.manifest.get("config_hash")
    if old_hash and old_hash != new_hash:
        run.log(f"{run.dir} was made by another config ({old_hash[:12]} -> {new_hash[:12]}); stages whose inputs "
                "changed are redone")
    if not is_rank_zero():
        return
    write_text(run.dir / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    history = run.manifest.setdefault("config_history", [])
    if not history or history[-1] != new_hash:
        history.append(new_hash)
    run.manifest.update(
        {
            "config_hash": new_hash,
            "seed": config["seed"],
            "methods": config["methods_order"],
            "methods_order": config["methods_order"],
            "versions": _versions(),
            "platform": _platform(),
            "git_revision": _git_revision(),
            "hardware": config["hardware"],
        }
    )
    if command is not None:
        run.manifest["command"] = {"argv": [str(a) for a in command], "config_hash": new_hash}
    run.save_manifest()
    _drop_stale_scores(run)


def _run_stages(run: Run) -> Path | None:
    """The stage loop: PASSES in order, each stage skipped when done under its key (see wsl_bench.stages)."""
    cohort = DATA.load(run)
    upstream: dict[str, str] = {"fingerprint": cohort.fingerprint}
    failures: dict[str, dict[str, str]] = {}
    report = REPORT.path(run)
    for stages in PASSES:
        if stages[0] is FIT:
            _fit_pass(run, cohort, upstream, failures)
            continue
        for method in run.config["methods_order"] if stages[0].per_method else [None]:
            for stage in stages:
                if method in failures:
                    break
                if not stage.takes_part(run, method):
                    continue
                key = stage.key(run, method, upstream)
                if key is None:
                    continue
                name = entry(stage, method)
                upstream[name] = key
                if run.is_done(name, key):
                    continue
                if method is None:
                    result = stage.run(run, cohort, None, key)
                    report = result if stage is REPORT else report
                    continue
                run.log(f"{stage.title}: {method}")
                with _method_stage(run, failures, method, stage.name):
                    stage.run(run, cohort, method, key)
        if stages[0] is DATA:
            run.manifest["failures"] = failures  # this invocation's failures only
            run.save_manifest()
    if not is_rank_zero():
        return None
    if failures:
        raise MethodsFailed(failures, report, len(run.config["methods_order"]))
    return report


def _fit_pass(run: Run, cohort, upstream: dict[str, str], failures: dict[str, dict[str, str]]) -> None:
    """Every method's fit: one after another, or with `hardware.fit_jobs` > 1 the trainable ones side by
    side in worker processes (`wsl_bench.stages.fit_pool`; the references' quick fits stay here)."""
    from wsl_bench.stages.fit_pool import fit_in_parallel, fit_jobs, pooled

    todo: list[tuple[str, str]] = []
    for method in run.config["methods_order"]:
        if not FIT.takes_part(run, method):
            continue
        key = FIT.key(run, method, upstream)
        name = entry(FIT, method)
        upstream[name] = key
        if not run.is_done(name, key):
            todo.append((method, key))
    parallel = [(m, k) for m, k in todo if pooled(run, m)] if is_rank_zero() else []
    jobs = fit_jobs(run.config["hardware"], len(parallel))
    for method, key in todo:
        if jobs > 1 and (method, key) in parallel:
            continue
        run.log(f"{FIT.title}: {method}")
        with _method_stage(run, failures, method, FIT.name):
            FIT.run(run, cohort, method, key)
    if jobs > 1:
        fit_in_parallel(run, parallel, jobs, lambda method: _method_stage(run, failures, method, FIT.name))


@contextlib.contextmanager
def _method_stage(run: Run, failures: dict[str, dict[str, str]], method: str, stage: str) -> Iterator[None]:
    """Run one method's stage; an exception is recorded (manifest, log) and the run goes on without it.

    The method's stale scores are removed, so the report never shows numbers of an older fit or config.
    Interrupts (Ctrl-C, SystemExit) still stop the run. WSL_BENCH_DEBUG=1 re-raises for the traceback.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - one broken method must not cost the others their scores
        if os.environ.get("WSL_BENCH_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "(no message)"
        failures[method] = {"stage": stage, "error": f"{type(exc).__name__}: {message}"[:500]}
        run.log(f"error: {method} failed in {stage} ({failures[method]['error']}); going on with the other methods")
        if is_rank_zero():
            shutil.rmtree(run.dir / "scores" / method, ignore_errors=True)
            run.manifest.get("stages", {}).pop(f"score/{method}", None)
            run.manifest["failures"] = failures
            run.save_manifest()


def _drop_stale_scores(run: Run) -> None:
    """Remove scores of methods this config no longer runs, so the report shows only this config's methods.

    Their checkpoints and heatmaps stay: adding the method back reuses them if their stage keys still match.
    """
    keep = set(run.config["methods_order"])
    for d in sorted((run.dir / "scores").glob("*")) if (run.dir / "scores").is_dir() else []:
        if d.is_dir() and not d.name.startswith(".") and d.name not in keep:
            shutil.rmtree(d)
            run.manifest.get("stages", {}).pop(f"score/{d.name}", None)
            run.log(f"scores of {d.name} removed: not a method of this config (checkpoints and heatmaps kept)")
    run.save_manifest()


def dry_run_text(config: dict[str, Any], out: Path) -> str:
    """The plan: stages and their status, data size, and per-method estimates (memory, previous timings)."""
    run = Run(Path(out), config)
    run.load_manifest()
    new_hash, made_by = run_config_hash(config), run.manifest.get("config_hash")
    lines = [f"run folder: {out}",
             f"config hash: {new_hash[:12]}" + (f" (folder made by {made_by[:12]})" if made_by not in (None, new_hash) else ""),
             *data_lines(config), *method_lines(run), _fit_jobs_line(run), "stages:"]
    lines += [f"  {stage:<32} {status}" for stage, status in plan(run)]
    return "\n".join(lines)


def _fit_jobs_line(run: Run) -> str:
    """How the fits still to do will run: one after another, or how many side by side with how many threads."""
    from wsl_bench.stages.base import threads_per_process
    from wsl_bench.stages.fit_pool import fit_jobs, pooled

    todo = [m for (name, status) in plan(run) if name.startswith("fit/") and status != "done"
            for m in [name.split("/", 1)[1]] if pooled(run, m)]
    jobs = fit_jobs(run.config["hardware"], len(todo))
    if jobs < 2:
        return f"fits: one at a time ({len(todo)} trainable to do; --fit-jobs runs them side by side)"
    return (f"fits: {len(todo)} trainable to do, {jobs} at a time with {threads_per_process(jobs)} torch thread(s) "
            "each (--fit-jobs); the estimates above are for one fit alone")
