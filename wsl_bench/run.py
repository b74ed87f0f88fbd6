"""A benchmark run: data -> fit -> explain -> score -> report, into one resumable run folder.

Each stage has a key (a hash of its config and of the checksums of what it reads). A stage is skipped when
the manifest records it done under the same key and its output files still match their checksums; otherwise
it is redone from scratch (its old outputs removed first), so a folder made by an older config is never
silently reused, and a truncated file is redone, not trusted. Explain writes one shard per batch and resumes
from the shards; fit resumes from Lightning's `last.ckpt`. A lock file keeps two runs out of one folder.

Layout (contract 5 in the brief): config.yaml, manifest.json, data/{images.csv,boxes.csv,gallery.npz},
checkpoints/<method>/, heatmaps/<method>.npz + <method>.probs.csv, scores/<method>/{per_box.csv,summary.json},
report/.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
import yaml

from wsl_bench.io import atomic_path, sha256_file, write_json, write_text
from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS, FINDINGS
from wsl_bench.methods import FitContext, create_method, get_method_info, resolve_config

from wsl_bench.metrics.run_sanity import (
    SANITY_KEYS,
    randomization_stage,
    run_sanity_summary,
    sanity_inputs,
    wants_randomization,
)
from wsl_bench.metrics.sanity import CEILING_REFERENCES, GUESS_REFERENCES

REFERENCE_METHODS: tuple[str, ...] = GUESS_REFERENCES + CEILING_REFERENCES
DEFAULT_METHODS: tuple[str, ...] = ("clarity", "gradcam")

# Run presets: data, the method preset each maps to, and stage settings. `tiny` is for tests and smoke runs.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "method_preset": "quick",
        "data": {"name": "synth", "image_size": 128},
        "fit": {"max_epochs": None, "batch_size": None, "num_workers": 0},
        "explain": {"batch_size": 32},
        "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
    # SynthCXR at 224 px (rendered at 256, resized), quick's split sizes; the methods' `standard` presets train
    # until validation mean AUROC stops improving (an epoch cap and a patience each) and explain at stride 16
    # (14x14 maps). clarity,gradcam: an estimated 0.5-2.5 h on 2 CPU cores (docs/harness.md, "Presets").
    "standard": {
        "method_preset": "standard",
        "data": {"name": "synth", "image_size": 224, "generate_size": 256},
        "fit": {"max_epochs": None, "batch_size": None, "num_workers": 0},
        "explain": {"batch_size": 32},
        "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
    "paper": {
        "method_preset": "paper",
        "data": {"name": "nih", "image_size": 224, "val_fraction": 0.1, "skip_bad": False},
        "fit": {"max_epochs": None, "batch_size": None, "num_workers": 8},
        "explain": {"batch_size": 64},
        "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
    "tiny": {
        "method_preset": "quick",
        "data": {"name": "synth", "image_size": 32, "generate_size": 64, "n_train": 160, "n_val": 48, "n_test": 64},
        "fit": {"max_epochs": 1, "batch_size": 32, "num_workers": 0},
        "explain": {"batch_size": 16},
        "score": {"policy": "wang2017", "n_boot": 50, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
}
FIT_KEYS = {"max_epochs", "batch_size", "num_workers", "compile", "channels_last", "precision"}
NIH_KEYS = {"name", "root", "image_size", "val_fraction", "skip_bad", "preload", "cache", "cache_dir"}
HASHED_SECTIONS = ("preset", "seed", "data", "methods", "fit", "explain", "score")


class RunError(RuntimeError):
    """A user-facing problem with a run (bad option, busy folder, missing data); the message says the fix."""


class MethodsFailed(RunError):
    """Some methods failed in fit, explain or score; the others finished and the report was written.

    `failures` maps method -> {"stage", "error"} (also in manifest.json and the report); `report` is the
    report path. Re-running the same command retries only the failed methods' stages.
    """

    def __init__(self, failures: dict[str, dict[str, str]], report: Path | None, n_methods: int | None = None):
        self.failures, self.report = failures, report
        lines = "; ".join(f"{m} ({f['stage']}: {f['error']})" for m, f in failures.items())
        others = ("No method was scored; the report lists the failures" if n_methods is not None
                  and len(failures) >= n_methods else "The other methods were scored and reported")
        super().__init__(
            f"{len(failures)} method(s) failed: {lines}. {others}; "
            "fix the cause and re-run the same command to finish the failed ones (WSL_BENCH_DEBUG=1 re-raises "
            "the first failure with its traceback)"
        )


# ---------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------


def config_hash(obj: Any) -> str:
    """Stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["data.n_train=200", "methods.gradcam.lr=0.01"]` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise RunError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set data.n_train=200")
        if parts[0] not in ("data", "fit", "explain", "score", "report", "methods"):
            raise RunError(
                f"--set {item!r}: unknown section {parts[0]!r}; use data, fit, explain, score, report or methods.<name>"
            )
        if parts[0] == "methods" and len(parts) < 3:
            raise RunError(f"--set {item!r}: method settings are methods.<method>.<key>=VALUE")
        value = _scalar(raw)
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _scalar(raw: str) -> Any:
    """A --set value: int, float (1e-3 included), bool/null/list via YAML, else the string."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def select_methods(methods: list[str] | None, data: str = "synth") -> list[str]:
    """The user's methods (default: clarity, gradcam where registered) plus the sanity references.

    The guesses always; the supervised ceiling (`oracle-seg`) only on SynthCXR, the cohort with exact
    lesion masks."""
    from wsl_bench.methods import available_methods

    registered = available_methods()
    if methods:
        chosen = list(dict.fromkeys(methods))
        for m in chosen:
            get_method_info(m)  # clear error naming the registered methods
    else:
        chosen = []
        for m in DEFAULT_METHODS:
            if m in registered:
                chosen.append(m)
            else:
                warnings.warn(f"default method {m!r} is not registered yet; running without it", stacklevel=2)
    refs = list(GUESS_REFERENCES) + (list(CEILING_REFERENCES) if data == "synth" else [])
    for r in refs:
        if r not in registered:
            warnings.warn(f"reference method {r!r} is not registered; running without it", stacklevel=2)
    return chosen + [r for r in refs if r not in chosen and r in registered]


def build_config(
    methods: list[str] | None = None,
    *,
    data: str | None = None,
    root: str | None = None,
    preset: str = "quick",
    seed: int = 0,
    ablate: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full, resolved run config (what config.yaml holds)."""
    from wsl_bench.settings import check_run_inputs

    # every setting checked first, all at once (one SettingsError listing each problem; nothing is replaced)
    check_run_inputs(methods, data=data, root=root, preset=preset, seed=seed, ablate=ablate, overrides=overrides,
                     hardware=hardware)
    if preset not in PRESETS:
        raise RunError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = copy.deepcopy(PRESETS[preset])
    method_preset = base.pop("method_preset")
    overrides = copy.deepcopy(overrides or {})
    method_overrides = overrides.pop("methods", {})
    cfg = _merge(base, overrides)
    if data is not None and data != cfg["data"]["name"]:
        cfg["data"] = {"name": data, "image_size": cfg["data"]["image_size"], **overrides.get("data", {})}
        cfg["data"]["name"] = data
        if data == "nih":
            cfg["data"].setdefault("val_fraction", 0.1)
            cfg["data"].setdefault("skip_bad", False)
    if root is not None:
        cfg["data"]["root"] = str(root)
    if cfg["data"]["name"] not in ("synth", "nih"):
        raise RunError(f"unknown data {cfg['data']['name']!r}; use synth or nih")
    if cfg["data"]["name"] == "synth":
        cfg["data"] = _full_synth_config(cfg["data"])
    if cfg["data"]["name"] == "nih":
        if not cfg["data"].get("root"):
            raise RunError("--data nih needs --root DIR (the ChestX-ray14 folder with images/ and the CSV files)")
        unknown_keys = sorted(set(cfg["data"]) - NIH_KEYS)
        if unknown_keys:
            raise RunError(f"unknown NIH data setting(s) {unknown_keys}; known: {', '.join(sorted(NIH_KEYS))}")

    unknown_fit = sorted(set(cfg["fit"]) - FIT_KEYS)
    if unknown_fit:
        raise RunError(f"unknown fit setting(s) {unknown_fit}; known: {', '.join(sorted(FIT_KEYS))}")
    if not isinstance(cfg["fit"].get("compile", False), (bool, str)):
        raise RunError("fit.compile must be true, false or a torch.compile backend name, e.g. --set fit.compile=aot_eager")

    names = select_methods(methods, cfg["data"]["name"])
    unknown = set(method_overrides) - set(names)
    if unknown:
        raise RunError(f"--set methods.{sorted(unknown)[0]}...: that method is not in this run ({', '.join(names)})")
    specs: dict[str, dict[str, Any]] = {}
    for m in names:
        info = get_method_info(m)
        mp = preset if preset in info.cls.presets else method_preset
        conf = resolve_config(m, mp, method_overrides.get(m))
        specs[m] = {"registry": m, "method_preset": mp, "config": conf}
        for comp in ablate or []:
            if m in REFERENCE_METHODS:
                continue
            if comp not in info.cls.ablations:
                raise RunError(
                    f"--ablate {comp}: method {m!r} has no component {comp!r}; "
                    f"it offers: {', '.join(info.cls.ablations) or '(none)'}"
                )
            specs[f"{m}-no-{comp}"] = {
                "registry": m,
                "method_preset": mp,
                "config": {**conf, **info.cls.ablations[comp]},
            }
    hw = {"accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto", **(hardware or {})}
    return {
        "preset": preset,
        "seed": int(seed),
        "data": cfg["data"],
        "methods": specs,
        "methods_order": list(specs),
        "fit": cfg["fit"],
        "explain": cfg["explain"],
        "score": cfg["score"],
        "report": cfg["report"],
        "hardware": hw,
    }


def _full_synth_config(data: dict[str, Any]) -> dict[str, Any]:
    """Every SynthConfig field spelled out (config.yaml then says exactly what was generated).

    The run's --seed is the cohort seed, so `seed` is not a data key.
    """
    from wsl_bench.data.synth import SynthConfig

    rest = {k: v for k, v in data.items() if k not in ("name", "root")}
    if "seed" in rest:
        raise RunError("data.seed is set by --seed (one seed drives data, splits, init and sampling)")
    try:
        full = SynthConfig.from_dict(rest).to_dict()
    except (TypeError, ValueError) as exc:
        raise RunError(f"data settings: {exc}") from None
    full.pop("seed")
    return {"name": "synth", **full}


def run_config_hash(cfg: dict[str, Any]) -> str:
    """Hash of what determines results (hardware settings excluded)."""
    return config_hash({k: cfg[k] for k in HASHED_SECTIONS})


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------


def load_cohort(data_cfg: dict[str, Any], seed: int, progress: bool = False):
    """Load the cohort a run config names (SynthCXR or NIH)."""
    d = dict(data_cfg)
    name = d.pop("name")
    if name == "synth":
        from wsl_bench.data.synth import SynthConfig, load_synth

        d.pop("root", None)
        return load_synth(SynthConfig.from_dict({**d, "seed": seed}), progress=progress)
    from wsl_bench.data.nih import load_nih

    return load_nih(
        d.pop("root"), image_size=int(d.pop("image_size")), seed=seed, val_fraction=float(d.pop("val_fraction", 0.1)),
        skip_bad=bool(d.pop("skip_bad", False)), **{k: d[k] for k in ("preload", "cache", "cache_dir") if k in d}, progress=progress or None,
    )


def _gallery_image(img: torch.Tensor, max_side: int = 256) -> np.ndarray:
    """A [B,1,S,S] float batch -> [B,s,s] uint8 with s <= max_side."""
    if img.shape[-1] > max_side:
        img = torch.nn.functional.interpolate(img, size=(max_side, max_side), mode="area")
    return (img[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_data_stage(cohort, data_dir: Path) -> None:
    """data/images.csv, data/boxes.csv, data/gallery.npz for the test split."""
    from wsl_bench.data.schema import BOX_COLUMNS

    test = cohort.test
    images = pd.DataFrame(
        {
            "image_id": test.image_ids,
            "patient_id": test.patient_ids,
            "orig_h": test.orig_sizes[:, 0],
            "orig_w": test.orig_sizes[:, 1],
        }
    )
    labels = pd.DataFrame(test.labels.astype(int), columns=list(FINDINGS))
    images = pd.concat([images, labels], axis=1)
    with atomic_path(data_dir / "images.csv") as tmp:
        images.to_csv(tmp, index=False)
    with atomic_path(data_dir / "boxes.csv") as tmp:
        test.boxes[list(BOX_COLUMNS)].to_csv(tmp, index=False)
    idx = test.box_image_indices()
    gallery = {}
    for start in range(0, len(idx), 64):
        chunk = idx[start : start + 64]
        for i, arr in zip(chunk, _gallery_image(test.load_images(chunk))):
            gallery[test.image_ids[int(i)]] = arr
    with atomic_path(data_dir / "gallery.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **gallery)
    if hasattr(test, "lesion_masks"):  # SynthCXR knows the true lesion pixels: the scorer adds PxAP
        from wsl_bench.heatmaps import bundle_key

        masks = {
            bundle_key(test.image_ids[int(i)], label): np.asarray(m, dtype=bool)
            for i in idx
            for label, m in test.lesion_masks(int(i)).items()
        }
        with atomic_path(data_dir / "masks.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **masks)


# ---------------------------------------------------------------------------------------------------
# the run folder: lock, manifest, stage bookkeeping
# ---------------------------------------------------------------------------------------------------


def is_rank_zero() -> bool:
    """False inside the extra processes a DDP launcher starts (they only help with fit)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


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


def _files_under(root: Path, base: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    """sha256 of every file under `root` (or of `root` itself), keyed relative to `base`."""
    if root.is_file():
        return {root.relative_to(base).as_posix(): sha256_file(root)}
    return {
        p.relative_to(base).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and not skip(p)
    }


@dataclass
class Run:
    """A run folder and its manifest."""

    dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

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


# ---------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------


def _device(hw: dict[str, Any]) -> torch.device:
    from wsl_bench.training.trainer import uses_gpu

    return torch.device("cuda" if uses_gpu(str(hw.get("accelerator", "auto"))) else "cpu")


def _n_params(method) -> int:
    seen: dict[int, int] = {}
    for value in vars(method).values():
        if isinstance(value, torch.nn.Module):
            for p in value.parameters():
                seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def _fit_context(run: Run, spec: dict[str, Any], ckdir: Path) -> FitContext:
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


def _make_method(run: Run, name: str):
    spec = run.config["methods"][name]
    method = create_method(spec["registry"], spec["config"], device="cpu", preset=None)
    method.name = name
    return method


def fit_stage(run: Run, cohort, name: str, key: str) -> None:
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
    method = _make_method(run, name)
    method.to(_device(run.config["hardware"]))
    t0 = time.perf_counter()
    ctx = _fit_context(run, spec, ckdir)
    method.fit(cohort.train, cohort.val, ctx)
    fit_s = time.perf_counter() - t0
    if get_method_info(spec["registry"]).cls.trainable:
        _wait_for_all_ranks()  # every rank's `fit` may save files; checksum them only once all have
    if not is_rank_zero():
        return
    files = _files_under(ckdir, run.dir, skip=lambda p: p.name == "stage.json" or "logs" in p.relative_to(ckdir).parts)
    run.manifest.setdefault("timings", {}).setdefault(name, {}).update(
        {"fit_s": round(fit_s, 3), "n_params": _n_params(method), "fit_processes": int(ctx.extra.get("fit_processes", 1)),
         # CPU results are byte-reproducible for the same thread count only (float summation order)
         "fit_threads": torch.get_num_threads(),
         # the last train_module loop of the fit (CLARiTy: the main one, after its DINO and teacher stages)
         **{k: ctx.extra[k] for k in ("fit_max_epochs", "fit_batch_size") if k in ctx.extra}}
    )
    from wsl_bench.caches import manifest_entries

    used = manifest_entries(ctx.extra, run.dir)  # shared caches this fit trusted: checked like its own files
    run.mark_done(f"fit/{name}", key, files, **({"caches": used} if used else {}))


def _wait_for_all_ranks() -> None:
    """A barrier across the DDP ranks of a fit (none in a 1-process run).

    Methods save their weights at the end of `fit` on every rank (same weights; a timing field may differ),
    so without it rank 0 could record checksums that a late rank's write then invalidates, and the next run
    would refit a finished method.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def _explain_order(test) -> tuple[np.ndarray, int]:
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


def _rank_device(hw: dict[str, Any], rank: int) -> torch.device:
    device = _device(hw)
    return torch.device("cuda", rank % max(1, torch.cuda.device_count())) if device.type == "cuda" else device


def _explain_batches(run: Run, test) -> tuple[list[np.ndarray], int, int]:
    """The global batches (box images first), the number of box images, and the batch size."""
    order, n_box = _explain_order(test)
    bs = int(run.config["explain"]["batch_size"])
    return [order[i : i + bs] for i in range(0, len(order), bs)], n_box, bs


def _write_shards(run: Run, test, name: str, parts: Path, rank: int = 0, world: int = 1, show: bool = False) -> None:
    """Explain batches b with b % world == rank into parts/batch_<b>.npz (each atomic; existing shards kept)."""
    method = _make_method(run, name)
    method.load(run.dir / "checkpoints" / name)
    device = _rank_device(run.config["hardware"], rank)
    method.to(device)
    batches, n_box, bs = _explain_batches(run, test)
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


def explain_threads(world: int) -> int:
    """Torch threads for each of `world` CPU explain processes: the usable cores / world, at least 1.

    Every process left at its default (all cores) oversubscribes the CPU (steps ~10x slower with 2
    processes on 2 cores). An OMP_NUM_THREADS the user set is an upper bound.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, int(world)))
    user = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(user)) if user.isdigit() and int(user) > 0 else threads


def _explain_worker(local: int, run_dir: str, config: dict[str, Any], name: str, parts: str, world: int, module: str) -> None:
    """One extra explain rank (started by torch.multiprocessing): rank = local + 1 of `world`."""
    import importlib

    if _device(config["hardware"]).type == "cpu":
        torch.set_num_threads(explain_threads(world))
    importlib.import_module(module)  # registers the method in this fresh interpreter
    run = Run(Path(run_dir), config, log=lambda msg: None)
    cohort = load_cohort(config["data"], config["seed"])
    _write_shards(run, cohort.test, name, Path(parts), rank=local + 1, world=world)


def _sharded_explain(run: Run, test, name: str, parts: Path, world: int) -> None:
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
        if _device(run.config["hardware"]).type == "cpu":
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


def explain_stage(run: Run, cohort, name: str, key: str) -> None:
    """Maps of the 8 box findings for every box image and probs for every test image, one shard per batch.

    With `--devices N --strategy ddp` (N > 1) N processes each write a disjoint set of shards; the merge
    below is the same whatever the world size, so the bundle is too.
    """
    from wsl_bench.heatmaps import bundle_key, write_bundle

    test = cohort.test
    hdir = run.dir / "heatmaps"
    parts = hdir / f"{name}.parts" / key[:16]
    for old in (hdir / f"{name}.parts").glob("*"):
        if old != parts:
            shutil.rmtree(old, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)

    world = min(explain_world(run.config["hardware"]), len(_explain_batches(run, test)[0]))
    if run.config["methods"][name]["registry"] in REFERENCE_METHODS:
        world = 1  # a fixed prior or seeded noise: starting N-1 interpreters costs more than the maps
    t_wall = time.perf_counter()
    if world > 1:
        run.log(f"explain {name}: {world} processes, one shard of batches each")
        _sharded_explain(run, test, name, parts, world)
    else:
        _write_shards(run, test, name, parts, show=bool(run.config.get("progress")))
    wall_s = time.perf_counter() - t_wall
    order, n_box = _explain_order(test)
    batches, _, _ = _explain_batches(run, test)
    device = _device(run.config["hardware"])

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


def sanity_key(run: Run, name: str, explain_key: str) -> str | None:
    """The randomisation stage's key (None when the test does not apply to this method)."""
    if not wants_randomization(run.config, name):
        return None
    sc = run.config["score"]
    return config_hash({"explain": explain_key, "images": sc.get("sanity_images", 16), "seed": run.config["seed"]})


def sanity_inputs_digest(run: Run, name: str) -> dict[str, str]:
    """The score stage's key part for what the sanity summary reads besides the bundle."""
    inputs = sanity_inputs(run, name)
    return {"sanity_inputs": config_hash(inputs)} if inputs else {}


def score_stage(run: Run, name: str, key: str) -> None:
    """Score one method's bundle against the test boxes into scores/<name>/ (swapped in atomically)."""
    from wsl_bench.heatmaps import read_bundle
    from wsl_bench.metrics import score

    data = run.dir / "data"
    images = pd.read_csv(data / "images.csv", dtype={"image_id": str, "patient_id": str})
    boxes = pd.read_csv(data / "boxes.csv", dtype={"image_id": str})
    probs = pd.read_csv(run.dir / "heatmaps" / f"{name}.probs.csv", dtype={"image_id": str}).set_index("image_id")
    labels = images.set_index("image_id")[list(FINDINGS)]
    sizes = {r.image_id: (int(r.orig_h), int(r.orig_w)) for r in images.itertuples()}
    patients = dict(zip(images["image_id"], images["patient_id"]))
    masks = None
    if (data / "masks.npz").is_file():
        with np.load(data / "masks.npz", allow_pickle=False) as z:
            masks = {k: z[k] for k in z.files}
    sc = run.config["score"]
    options = {k: v for k, v in sc.items() if k not in ("policy", "n_boot", *SANITY_KEYS)}
    t0 = time.perf_counter()
    final = run.dir / "scores" / name
    tmp = run.dir / "scores" / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with read_bundle(run.dir / "heatmaps" / f"{name}.npz") as bundle:
        result = score(
            bundle, boxes, sizes, policy=sc["policy"], patients=patients, probs=probs, labels=labels, masks=masks,
            seed=run.config["seed"], n_boot=int(sc["n_boot"]), out_dir=tmp, **options,
        )
        if sc.get("sanity", True):  # the instruments join the summary in the same temporary folder
            t_sanity = time.perf_counter()
            result.summary["sanity"] = run_sanity_summary(run, name, bundle, result, boxes, sizes, patients, options)
            write_json(tmp / "summary.json", result.summary)
            run.manifest.setdefault("timings", {}).setdefault(name, {})["sanity_score_s"] = round(
                time.perf_counter() - t_sanity, 3)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    run.manifest.setdefault("timings", {}).setdefault(name, {})["score_s"] = round(time.perf_counter() - t0, 3)
    run.mark_done(f"score/{name}", key, _files_under(final, run.dir))


def report_stage(run: Run, key: str) -> Path:
    """report/ from the score tables via the reports stage; if that fails, a first report.md of our own.

    A failed reports stage does not lose the run: the basic report is written, the error is logged, and
    the stage is left not-done so the next `wsl-bench run` on the folder tries the full report again.
    """
    out = run.dir / "report"
    t0 = time.perf_counter()
    write_report, error = None, "report.full is off"
    if run.config.get("report", {}).get("full", True):
        try:
            from wsl_bench.report import write_report
        except ImportError as exc:
            error = exc
    if write_report is not None:
        try:
            path = Path(write_report([run.dir], out))
        except Exception as exc:  # noqa: BLE001 - keep the scores and say what broke
            error = exc
        else:  # the full report lists the run's failed methods in its notes (wsl_bench/report/writer.py)
            run.mark_done("report", key, {f"report/{path.name}": sha256_file(path)}, report_s=round(time.perf_counter() - t0, 3))
            return path
    path = out / "report.md"
    write_text(path, basic_report_md(run))
    if isinstance(error, str):  # asked for the basic report: the stage is done
        run.mark_done("report", key, {f"report/{path.name}": sha256_file(path)}, report_s=round(time.perf_counter() - t0, 3))
    else:
        run.log(f"warning: the full report failed ({type(error).__name__}: {error}); wrote a basic {path}")
    return path


def failures_md(run: Run) -> str:
    """A markdown section listing the methods that failed in this run (empty when none did)."""
    failures = run.manifest.get("failures") or {}
    if not failures:
        return ""
    lines = ["## Failed methods", "", "These methods have no scores in this report; re-run the same command "
             "after fixing the cause to finish them.", "", "| method | stage | error |", "|---|---|---|"]
    for m, f in failures.items():
        error = str(f.get("error", "")).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {m} | {f.get('stage', '?')} | {error} |")
    return "\n".join(lines) + "\n"


def basic_report_md(run: Run, threshold: str = "0.3") -> str:
    """Per-class and macro IoU accuracy of every scored method, then any failures (no reports stage)."""
    rows = []
    for name in run.config["methods_order"]:
        path = run.dir / "scores" / name / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        acc = summary.get("iou_acc", {})
        rows.append([name] + [acc.get(lab, {}).get(threshold) for lab in (*BOX_FINDINGS, "macro")])
    header = "| method | " + " | ".join((*BOX_FINDINGS, "macro")) + " |"
    lines = [f"# wsl-bench run `{run.dir.name}`", "", f"IoU accuracy at T(IoU) = {threshold}, policy "
             f"`{run.config['score']['policy']}`.", "", header, "|" + "---|" * (len(BOX_FINDINGS) + 2)]
    for r in rows:
        lines.append("| " + " | ".join([r[0]] + ["–" if v is None else f"{float(v):.3f}" for v in r[1:]]) + " |")
    failed = failures_md(run)
    return "\n".join(lines) + "\n" + ("\n" + failed if failed else "")


# ---------------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------------


def stage_keys(run: Run, data_fingerprint: str | None = None) -> dict[str, str]:
    """Stage keys for the parts that do not depend on upstream outputs (data and fit).

    The data stage's key includes the cohort fingerprint (SynthCXR's carries the renderer version), so a
    resumed folder rewrites its ground-truth tables when the cohort behind the same config changed."""
    cfg = run.config
    data_key = config_hash({"data": cfg["data"], "seed": cfg["seed"]})
    keys = {"data": config_hash({"data": data_key, "fp": data_fingerprint})}
    for m, spec in cfg["methods"].items():
        keys[f"fit/{m}"] = config_hash({"data": data_key, "fp": data_fingerprint, "method": spec, "fit": cfg["fit"], "seed": cfg["seed"]})
    return keys


def plan(run: Run) -> list[tuple[str, str]]:
    """(stage, status) for every stage as the folder stands, without doing anything."""
    keys = stage_keys(run, run.manifest.get("data_fingerprint"))
    out = [("data", "done" if run.is_done("data", keys["data"]) else "to do")]
    for m in run.config["methods_order"]:
        st = run.stage(f"fit/{m}")
        status = "done" if run.is_done(f"fit/{m}", keys[f"fit/{m}"]) else ("redo (config changed)" if st else "to do")
        out.append((f"fit/{m}", status))
        for s in ("explain", "score"):
            out.append((f"{s}/{m}", "done" if run.stage(f"{s}/{m}").get("done") and status == "done" else "to do"))
    upstream_done = all(status == "done" for _, status in out)
    out.append(("report", "done" if upstream_done and run.stage("report").get("done") else "to do"))
    return out


def execute(config: dict[str, Any], out: Path, *, log: Callable[[str], None] = print) -> Path:
    """Run every stage not yet done for `config` in folder `out`; returns the report path (None on rank > 0)."""
    out = Path(out)
    if not is_rank_zero():
        log = lambda msg: None  # noqa: E731 - extra DDP ranks stay quiet
    run = Run(out, config, log=log)
    lock = run_lock(out) if is_rank_zero() else contextlib.nullcontext()
    with lock:
        if is_rank_zero():  # the lock is ours: temporary files in the folder belong to a killed run
            from wsl_bench.guards import sweep_temporaries

            sweep_temporaries(out, log)
        run.load_manifest()
        new_hash = run_config_hash(config)
        old_hash = run.manifest.get("config_hash")
        if old_hash and old_hash != new_hash:
            log(f"{out} was made by another config ({old_hash[:12]} -> {new_hash[:12]}); stages whose inputs changed are redone")
        if is_rank_zero():
            write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=True))
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
                    "git_revision": _git_revision(),
                    "hardware": config["hardware"],
                }
            )
            run.save_manifest()

        if is_rank_zero():
            _drop_stale_scores(run)
        t0 = time.perf_counter()
        log(f"data: loading {config['data']['name']} (generated once, then read from the cache)")
        cohort = load_cohort(config["data"], config["seed"], progress=bool(config.get("progress", False)))
        keys = stage_keys(run, cohort.fingerprint)
        if not run.is_done("data", keys["data"]) and is_rank_zero():
            log(f"data: writing test tables for {cohort.name} ({len(cohort.train)}/{len(cohort.val)}/{len(cohort.test)} images)")
            write_data_stage(cohort, out / "data")
            run.manifest.update({"data_fingerprint": cohort.fingerprint, "data_info": _jsonable(cohort.info)})
            run.mark_done("data", keys["data"], _files_under(out / "data", out), load_s=round(time.perf_counter() - t0, 3))

        failures: dict[str, dict[str, str]] = {}
        run.manifest["failures"] = failures  # this invocation's failures only
        run.save_manifest()
        for m in config["methods_order"]:
            if not is_rank_zero() and not get_method_info(config["methods"][m]["registry"]).cls.trainable:
                continue  # extra DDP ranks only join trainable fits
            if not run.is_done(f"fit/{m}", keys[f"fit/{m}"]):
                log(f"fit: {m}")
                with _method_stage(run, failures, m, "fit"):
                    fit_stage(run, cohort, m, keys[f"fit/{m}"])
        if not is_rank_zero():
            return None

        score_keys = []
        for m in config["methods_order"]:
            if m in failures:
                continue
            ekey = config_hash({"fit": keys[f"fit/{m}"], "ckpt": run.files_digest(f"fit/{m}"), "explain": config["explain"]})
            if not run.is_done(f"explain/{m}", ekey):
                log(f"explain: {m}")
                with _method_stage(run, failures, m, "explain"):
                    explain_stage(run, cohort, m, ekey)
                if m in failures:
                    continue
            rkey = sanity_key(run, m, ekey)
            if rkey is not None and not run.is_done(f"randomization/{m}", rkey):
                log(f"randomization test: {m}")
                with _method_stage(run, failures, m, "randomization"):
                    randomization_stage(run, cohort, m, rkey)
                if m in failures:
                    continue
            skey = config_hash({"explain": ekey, "maps": run.files_digest(f"explain/{m}"), "data": run.files_digest("data"),
                                "score": config["score"], **sanity_inputs_digest(run, m)})
            if not run.is_done(f"score/{m}", skey):
                log(f"score: {m}")
                with _method_stage(run, failures, m, "score"):
                    score_stage(run, m, skey)
                if m in failures:
                    continue
            score_keys.append(config_hash({"key": skey, "files": run.files_digest(f"score/{m}")}))
        rkey = config_hash({"scores": score_keys, "order": config["methods_order"], "report": config.get("report"),
                            "failures": failures})
        report = out / "report" / "report.md"
        if not run.is_done("report", rkey):
            log("report")
            report = report_stage(run, rkey)
        if failures:
            raise MethodsFailed(failures, report, len(config["methods_order"]))
        return report


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


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def dry_run_text(config: dict[str, Any], out: Path) -> str:
    """The plan: stages and their status, data size, and per-method estimates (memory, previous timings)."""
    run = Run(Path(out), config)
    run.load_manifest()
    d = config["data"]
    lines = [f"run folder: {out}", f"config hash: {run_config_hash(config)[:12]}"
             + (f" (folder made by {run.manifest['config_hash'][:12]})" if run.manifest.get("config_hash") not in (None, run_config_hash(config)) else ""),
             f"data: {d['name']} at {d['image_size']} px" + (
                 f", {d.get('n_train', '?')}/{d.get('n_val', '?')}/{d.get('n_test', '?')} train/val/test images" if d["name"] == "synth" else f" from {d.get('root')}")]
    s = int(d["image_size"])
    for m in config["methods_order"]:
        t = run.manifest.get("timings", {}).get(m, {})
        ebs = int(config["explain"]["batch_size"])
        mem = ebs * s * s * 4 * (1 + len(BOX_FINDINGS)) / 2**20
        info = get_method_info(config["methods"][m]["registry"])
        prev = ", ".join(f"{k}={v}" for k, v in sorted(t.items())) or "not measured yet"
        try:
            method = _make_method(run, m)
            n_params = _n_params(method)
        except Exception:  # noqa: BLE001 - an estimate must not stop the plan
            method, n_params = None, 0
        train_mem = f"{n_params:,} parameters ≈ {n_params * 16 / 2**20:.1f} MiB with gradients and AdamW state; " if n_params else ""
        lines.append(f"method {m}: {'trainable' if info.cls.trainable else 'no training'}; {train_mem}explain batch "
                     f"{ebs} x {s}px ≈ {mem:.1f} MiB of images+maps; previous timings: {prev}")
        if not t and method is not None:
            lines.append(f"  estimate: {_time_estimate(method, config, m, trainable=info.cls.trainable)}")
    lines.append("stages:")
    for stage, status in plan(run):
        lines.append(f"  {stage:<32} {status}")
    return "\n".join(lines)



# The GPU estimate's assumptions (docs/harness.md, "Dry run"): an effective training/inference rate for small
# CNNs and ViTs at batch 32 in bf16 on a data-centre GPU (A100/H100 class), far below the dense peak, plus a fixed
# cost per batch (the Lightning loop, logging, the host-to-device copy). Stated, not measured here.
GPU_EFFECTIVE_FLOPS = 20e12
GPU_BATCH_OVERHEAD_S = 0.01


def _duration(seconds: float) -> str:
    """0.4 s, 45 s, 12 min, 2.3 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _fit_loop(method, config: dict[str, Any]) -> tuple[int, int, int]:
    """(epoch cap, early-stopping patience, batch size) the method's fit will run with.

    The run's fit.max_epochs / fit.batch_size win (as in train_module); else the method's own keys (`max_epochs`,
    or CLARiTy's `epochs`), including the defaults its class merges in; patience: the method's key, else
    train_module's default."""
    from wsl_bench.training import DEFAULT_PATIENCE

    conf, typed = dict(getattr(method, "config", {}) or {}), getattr(method, "cfg", None)

    def key(*names: str, default: Any = None) -> Any:
        for n in names:
            if conf.get(n) is not None:
                return conf[n]
            if getattr(typed, n, None) is not None:
                return getattr(typed, n)
        return default

    cap = config["fit"].get("max_epochs") or key("max_epochs", "epochs", default=1)
    batch = config["fit"].get("batch_size") or key("batch_size", default=32)
    patience = key("patience", default=DEFAULT_PATIENCE)
    return max(1, int(cap)), max(1, int(patience)), max(1, int(batch))


def _time_estimate(method, config: dict[str, Any], name: str, *, trainable: bool, n_probe: int = 16) -> str:
    """Rough times from one probe batch of random images through the untrained method on this machine.

    CPU (probe timings): explain ≈ probe seconds per image x test images (an upper bound: only box images
    get maps); fit ≈ (3 x forward seconds per image x train images + forward seconds x validation images) per
    epoch, for between min(cap, patience + 1) epochs (early stopping at its first chance) and the epoch cap.
    GPU (a second line): the same counts in FLOPs, at GPU_EFFECTIVE_FLOPS plus GPU_BATCH_OVERHEAD_S per batch: a
    forward pass's FLOPs are counted on the warm-up image (torch's FlopCounterMode: matmuls, convolutions,
    attention), a training image costs 3 forward passes, and an explained image the number of forward passes its
    explain took in the CPU probe (explain time / forward time). Methods with extra
    stages (a teacher, self-supervised pre-training) take longer; a finished run's real timings replace this.
    """
    from torch.utils.flop_counter import FlopCounterMode

    d = config["data"]
    s = int(d["image_size"])
    x = torch.rand(n_probe, 1, s, s, generator=torch.Generator().manual_seed(0))
    classes = list(BOX_FINDING_INDICES)
    if getattr(method, "image_size", 0) is None:
        method.image_size = s  # a network sized by the data (set by fit) is probed at the run's size
    try:
        # warm-up (lazy initialisation and first-call costs are not per-image costs), counting the forward's
        # FLOPs (under no_grad: the counter's module hooks would break an explainer's autograd.grad)
        with torch.no_grad(), FlopCounterMode(display=False) as counted:
            method.predict(x[:1])
        fwd_flops = float(counted.get_total_flops())
        method.explain(x[:1], classes)
        t0 = time.perf_counter()
        with torch.no_grad():
            method.predict(x)
        fwd = (time.perf_counter() - t0) / n_probe
        t0 = time.perf_counter()
        method.explain(x, classes)
        per_image = fwd + (time.perf_counter() - t0) / n_probe
    except Exception as exc:  # noqa: BLE001 - e.g. a method that cannot predict before it is fitted
        return f"not available before fitting ({type(exc).__name__})"
    threads = torch.get_num_threads()
    # explain costs the same multiple of a forward pass on the GPU as in the CPU probe
    per_image_flops = fwd_flops * per_image / max(fwd, 1e-9)
    gpu_note = (f"{fwd_flops / 1e9:.2f} GFLOP a forward pass, explain ≈ {per_image / max(fwd, 1e-9):.1f} forward "
                f"passes; {GPU_EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s + {GPU_BATCH_OVERHEAD_S * 1e3:.0f} ms a batch "
                "assumed: an estimate, see docs/harness.md")
    if d["name"] != "synth":
        return (f"{per_image * 1e3:.1f} ms per test image to explain, {3 * fwd * 1e3:.1f} ms per training image per "
                f"epoch (CPU probe, {threads} thread{'s' if threads != 1 else ''})\n  GPU estimate: {per_image_flops / GPU_EFFECTIVE_FLOPS * 1e3:.2f} "
                f"ms per test image to explain, {3 * fwd_flops / GPU_EFFECTIVE_FLOPS * 1e3:.2f} ms per training image "
                f"per epoch ({gpu_note})")
    n_train, n_val, n_test = (int(d.get(k, 0)) for k in ("n_train", "n_val", "n_test"))
    ebs = int(config["explain"]["batch_size"])
    explain = (f"explain ≤ {_duration(per_image * n_test)} (CPU probe of {n_probe} images, {threads} "
               f"thread{'s' if threads != 1 else ''})")
    gpu_explain = per_image_flops * n_test / GPU_EFFECTIVE_FLOPS + math.ceil(n_test / ebs) * GPU_BATCH_OVERHEAD_S
    if not trainable:  # a reference without a network (no FLOPs to count) gets no GPU line
        return explain + (f"\n  GPU estimate: explain ≈ {_duration(gpu_explain)} ({gpu_note})" if fwd_flops else "")
    cap, patience, batch = _fit_loop(method, config)
    low = min(cap, patience + 1)
    cpu_epoch = 3 * fwd * n_train + fwd * n_val
    gpu_epoch = ((3 * n_train + n_val) * fwd_flops / GPU_EFFECTIVE_FLOPS
                 + (math.ceil(n_train / batch) + math.ceil(n_val / batch)) * GPU_BATCH_OVERHEAD_S)

    def span(per_epoch: float) -> str:
        if low == cap:
            return f"{_duration(per_epoch * cap)} ({cap} epochs)"
        return (f"{_duration(per_epoch * low)}–{_duration(per_epoch * cap)} ({low}–{cap} epochs: early stopping "
                f"with patience {patience}; {_duration(per_epoch)} an epoch)")

    return (f"fit ≈ {span(cpu_epoch)}, {explain}"
            f"\n  GPU estimate: fit ≈ {span(gpu_epoch)}, explain ≈ {_duration(gpu_explain)} ({gpu_note})")
