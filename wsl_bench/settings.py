"""Every run setting checked before any stage runs, all at once.

`check_run_inputs` is called by `wsl_bench.config.build_config` before it resolves anything: it looks at the
preset, the seed, the methods and their `--set methods.<m>.*` overrides, every `--set data|fit|explain|
score|report.*` value, the ablations and the hardware options, collects every problem it finds, and raises
one `SettingsError` (a `RunError`; `wsl-bench run` prints it as one `error:` line and exits with code 2)
listing them all. So a bad value never fails a run after the references have trained, and nothing is ever
silently replaced: a value the run cannot use is refused, and config.yaml records exactly what ran.

What is checked (docs/harness.md, "Settings"):

- sections and keys: unknown keys are refused for every section, and for every method. A method's known
  keys are its registered defaults, every preset's and ablation's keys, and the names its class declares in
  an optional `config_keys` attribute (keys it reads with `config.get` only: a tuple of names, or a mapping
  name -> default so the value's type is checked as well). A class may also define
  `check_config(config)` (raise ValueError): it is called with the resolved config (CLARiTy validates its
  whole dataclass this way).
- types and ranges: a method key whose resolved value is a number must stay a finite number (a bool stays a
  bool, a string stays a string); `*epochs` and `*batch_size` keys are whole numbers >= 1, `lr`/`*_lr` > 0.
  Run sections have their own rules (`fit.max_epochs` >= 1 or null, `score.n_boot` in 0..10000, ...).
- the seed is a whole number in 0 .. 2**32 - 1 (NumPy's seed range).
- hardware against this machine: the accelerator exists here, `--devices` is a count, `auto`, -1 or a
  list of ids that exist, `--strategy` is one Lightning knows, `--num-nodes` >= 1.

The score section's rules live with the scorer (`wsl_bench.metrics.options.score_problems`, also what
`wsl-bench score` checks its options with), and the checks of one value in `wsl_bench.value_checks`.
"""

from __future__ import annotations

import math
import os
from typing import Any

from wsl_bench.errors import RunError
from wsl_bench.value_checks import boolean, is_int, is_number, real, seed_problem, unknown_keys, whole

MAX_COHORT = 10_000_000
SECTIONS = ("data", "fit", "explain", "score", "report", "methods")
EXPLAIN_KEYS = {"batch_size"}
REPORT_KEYS = {"full"}
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


class SettingsError(RunError, KeyError):
    """One or more bad run settings; the message lists every problem (a RunError, exit code 2).

    Also a KeyError, so callers that catch an unknown method name as a KeyError keep working."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------


def data_problems(data: dict[str, Any], nih_keys) -> list[str]:
    """The data section after the preset, `--data`, `--root` and `--set data.*` are merged."""
    from wsl_bench.data.registry import DatasetError, available_datasets, get_dataset

    out: list[str] = []
    name = data.get("name")
    registered = available_datasets()
    if not isinstance(name, str) or name not in registered:
        return [f"unknown data {name!r}; registered datasets: {', '.join(registered)} (see `wsl-bench datasets list`)"]
    if name not in ("synth", "nih"):  # any other registered dataset checks its own settings
        out.append(whole("data.image_size", data.get("image_size"), 8, 2048))
        try:
            get_dataset(name).resolve_config(data)
        except DatasetError as exc:
            out.append(str(exc))
        return [p for p in out if p]
    if name == "nih":
        out.append(unknown_keys("NIH data", data, nih_keys))
        if not data.get("root"):
            out.append("--data nih needs --root DIR (the ChestX-ray14 folder with images/ and the CSV files)")
        out.append(whole("data.image_size", data.get("image_size"), 8, 2048))
        if "val_fraction" in data:
            out.append(real("data.val_fraction", data["val_fraction"], 0.0, 1.0, lo_open=True, hi_open=True))
        if "skip_bad" in data:
            out.append(boolean("data.skip_bad", data["skip_bad"]))
        if "preload" in data:
            out.append(boolean("data.preload", data["preload"], none_ok=True))
        if "cache" in data:
            out.append(boolean("data.cache", data["cache"], none_ok=True))
        if data.get("cache_dir") is not None and not (isinstance(data["cache_dir"], str) and data["cache_dir"].strip()):
            out.append(f"data.cache_dir={data['cache_dir']!r} must be a folder path (or null for the default)")
        return [p for p in out if p]
    from dataclasses import fields

    from wsl_bench.data.synth import SynthConfig

    rest = {k: v for k, v in data.items() if k not in ("name", "root")}
    if "seed" in rest:
        out.append("data.seed is set by --seed (one seed drives data, splits, init and sampling)")
        rest.pop("seed")
    known = {f.name for f in fields(SynthConfig)} - {"seed"}
    bad = unknown_keys("SynthCXR data (data.*)", rest, known)
    out.append(bad)
    for key in ("n_train", "n_val", "n_test"):
        if key in rest:
            out.append(whole(f"data.{key}", rest[key], 1, MAX_COHORT))
    for key, lo, hi in (("image_size", 8, 2048), ("generate_size", 16, 2048)):
        if key in rest:
            out.append(whole(f"data.{key}", rest[key], lo, hi))
    for key in ("confounder_strength", "box_prevalence_floor", "other_prevalence_floor"):
        if key in rest:
            out.append(real(f"data.{key}", rest[key], 0.0, 1.0))
    if "images_per_patient" in rest:
        out.append(real("data.images_per_patient", rest["images_per_patient"], 1.0, 1000.0))
    if "lesion_contrast" in rest:
        out.append(real("data.lesion_contrast", rest["lesion_contrast"], 0.0, 5.0, lo_open=True))
    out = [p for p in out if p]
    if not out:  # what SynthConfig itself refuses (confounder names, ...)
        try:
            SynthConfig.from_dict(rest)
        except (TypeError, ValueError) as exc:
            out.append(f"data settings: {exc}")
    return out


def fit_problems(fit: dict[str, Any], fit_keys) -> list[str]:
    out = [unknown_keys("fit", fit, fit_keys)]
    out.append(whole("fit.max_epochs", fit.get("max_epochs"), 1, 100_000, none_ok=True))
    out.append(whole("fit.batch_size", fit.get("batch_size"), 1, 1_000_000, none_ok=True))
    out.append(whole("fit.num_workers", fit.get("num_workers", 0), 0, 1024))
    if not isinstance(fit.get("compile", False), (bool, str)):
        out.append("fit.compile must be true, false or a torch.compile backend name, e.g. --set fit.compile=aot_eager")
    out.append(boolean("fit.channels_last", fit.get("channels_last"), none_ok=True))
    precision = fit.get("precision")
    if precision is not None and (isinstance(precision, bool) or precision not in PRECISIONS):
        out.append(f"fit.precision={precision!r} is not a Lightning precision; use one of "
                   f"{', '.join(str(p) for p in PRECISIONS if isinstance(p, str))} (or null for the default)")
    return [p for p in out if p]


def explain_problems(explain: dict[str, Any]) -> list[str]:
    out = [unknown_keys("explain", explain, EXPLAIN_KEYS), whole("explain.batch_size", explain.get("batch_size"), 1, 100_000)]
    return [p for p in out if p]


def report_problems(report: dict[str, Any]) -> list[str]:
    out = [unknown_keys("report", report, REPORT_KEYS)]
    if "full" in report:
        out.append(boolean("report.full", report["full"]))
    return [p for p in out if p]


# ---------------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------------


def method_known_keys(info) -> set[str]:
    """Registered defaults, every preset's and ablation's keys, and the class's declared `config_keys`."""
    cls = info.cls
    known = set(info.defaults)
    for group in (getattr(cls, "presets", {}) or {}, getattr(cls, "ablations", {}) or {}):
        for d in group.values():
            known |= set(d)
    known |= set(getattr(cls, "config_keys", ()) or ())
    return known


def _value_problem(where: str, key: str, value: Any, ref: Any) -> str | None:
    """A user value against the value the method would otherwise use (its type), plus generic ranges.

    null is accepted for any key but the generic ones (`*epochs`, `*batch_size`, `lr`, `*_lr`): methods use
    it for "off" or "the data's own" (e.g. output_stride, input_size)."""
    generic = key.endswith(("epochs", "batch_size")) or key == "lr" or key.endswith("_lr")
    if value is None:
        return f"{where}=null: give a number" if generic and ref is not None else None
    if isinstance(ref, bool):
        if not isinstance(value, bool):
            return f"{where}={value!r} must be true or false"
    elif is_number(ref):
        if not is_number(value) or not math.isfinite(float(value)):
            return f"{where}={value!r} must be a finite number (the default is {ref!r})"
    elif isinstance(ref, str):
        if not (isinstance(value, (str, list)) or value is None):
            return f"{where}={value!r} must be text (the default is {ref!r})"
    elif isinstance(ref, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"{where}={value!r} must be a list (the default is {list(ref)!r})"
    if is_number(value) and generic:
        if key.endswith(("epochs", "batch_size")):
            return whole(where, value, 1, 10_000_000)
        if key == "lr" or key.endswith("_lr"):
            return real(where, value, 0.0, None, lo_open=True)
    return None


def method_problems(name: str, info, preset: str | None, overrides: dict[str, Any]) -> list[str]:
    from wsl_bench.methods import resolve_config

    out: list[str] = []
    if not isinstance(overrides, dict):
        return [f"methods.{name} must be a mapping of settings, e.g. --set methods.{name}.lr=0.01"]
    known = method_known_keys(info)
    bad = sorted(set(overrides) - known)
    if bad:
        out.append(f"unknown setting(s) {bad} for method {name!r}; known: {', '.join(sorted(known))}")
    declared = getattr(info.cls, "config_keys", None)
    # a class may declare its extra keys as a mapping key -> default: the default's type is then checked too
    base = {**(dict(declared) if isinstance(declared, dict) else {}), **resolve_config(name, preset, None)}
    for key, value in overrides.items():
        if key in known:
            out.append(_value_problem(f"methods.{name}.{key}", key, value, base.get(key)))
    out = [p for p in out if p]
    check = getattr(info.cls, "check_config", None)
    if not out and callable(check):
        try:
            check({**base, **overrides})
        except (ValueError, TypeError, KeyError) as exc:
            msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            out.append(f"methods.{name}: {msg}")
    return out


# ---------------------------------------------------------------------------------------------------
# hardware
# ---------------------------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hardware_problems(hw: dict[str, Any]) -> list[str]:
    """`--accelerator/--devices/--num-nodes/--strategy` against what Lightning knows and this machine has."""
    import torch

    out: list[str] = []
    acc = hw.get("accelerator", "auto")
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if acc not in ACCELERATORS:
        out.append(f"--accelerator {acc!r} is not one of {', '.join(ACCELERATORS)}")
    elif acc in ("gpu", "cuda") and n_gpu == 0:
        out.append(f"--accelerator {acc}: this machine has no CUDA GPU torch can use; use --accelerator cpu (or auto)")
    elif acc == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        out.append("--accelerator mps: MPS is not available on this machine; use --accelerator cpu (or auto)")
    elif acc == "tpu":
        out.append("--accelerator tpu: TPUs are not supported by wsl-bench; use cpu or gpu")
    on_gpu = acc in ("gpu", "cuda") or (acc == "auto" and n_gpu > 0)
    have = n_gpu if on_gpu else _cpu_count()
    what = f"{n_gpu} CUDA GPU(s)" if on_gpu else f"{have} CPU core(s)"
    dev = hw.get("devices", 1)
    if isinstance(dev, str) and dev.strip().lstrip("-").isdigit():
        dev = int(dev)
    if isinstance(dev, bool):
        out.append(f"--devices {dev!r} must be a count (e.g. 1 or 8), auto, -1 or a list of device ids (e.g. 0,1)")
    elif is_int(dev):
        if dev == -1:
            pass
        elif dev < 1:
            out.append(f"--devices {dev}: use a count >= 1, auto or -1")
        elif dev > max(1, have):
            out.append(f"--devices {dev}: this machine has {what}")
    elif isinstance(dev, str) and dev != "auto":
        ids = [p.strip() for p in dev.split(",") if p.strip()]
        if not ids or not all(p.isdigit() for p in ids):
            out.append(f"--devices {dev!r} must be a count (e.g. 1 or 8), auto, -1 or a list of device ids (e.g. 0,1)")
        elif not on_gpu:
            out.append(f"--devices {dev!r}: device ids name GPUs, and this run is on CPU; give a count instead")
        elif max(int(p) for p in ids) >= n_gpu:
            out.append(f"--devices {dev!r}: this machine has {what} (ids 0..{n_gpu - 1})")
    elif not (isinstance(dev, str) or is_int(dev)):
        out.append(f"--devices {dev!r} must be a count (e.g. 1 or 8), auto, -1 or a list of device ids (e.g. 0,1)")
    out.append(whole("--num-nodes", hw.get("num_nodes", 1), 1, 100_000))
    jobs = hw.get("fit_jobs")
    if jobs is not None and jobs != "auto":
        if not is_int(jobs) or isinstance(jobs, bool) or jobs < 1:
            out.append(f"--fit-jobs {jobs!r} must be a count >= 1 or auto")
        elif jobs > 1 and (str(dev) != "1" or hw.get("num_nodes", 1) != 1):
            out.append(f"--fit-jobs {jobs} runs one-device fits side by side; it cannot be combined with --devices "
                       f"{dev} / --num-nodes {hw.get('num_nodes', 1)} (DDP): use one or the other")
    strategy = hw.get("strategy", "auto")
    if strategy != "auto":
        try:
            from lightning.pytorch.strategies import StrategyRegistry

            known = set(StrategyRegistry.available_strategies())
        except Exception:  # noqa: BLE001 - an unusual Lightning install: let Lightning decide
            known = {strategy}
        if strategy not in known:
            out.append(f"--strategy {strategy!r} is not a Lightning strategy; use auto, ddp, ddp_spawn, fsdp, ...")
    return [p for p in out if p]


# ---------------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------------


def check_run_inputs(
    methods: list[str] | None,
    *,
    data: str | None,
    root: str | None,
    preset: str,
    seed: Any,
    ablate: list[str] | None,
    overrides: dict[str, Any] | None,
    hardware: dict[str, Any] | None,
) -> None:
    """Raise one SettingsError listing every problem of these `build_config` inputs (nothing when all hold)."""
    import copy

    from wsl_bench import presets
    from wsl_bench.data.nih_registered import NIH_KEYS
    from wsl_bench.metrics.options import score_problems
    from wsl_bench.references import REFERENCE_METHODS
    from wsl_bench.methods import available_methods

    problems: list[str] = []
    if preset not in presets.PRESETS:
        problems.append(f"unknown preset {preset!r}; choose one of {', '.join(presets.PRESETS)}")
        preset_cfg = copy.deepcopy(presets.PRESETS["quick"])
    else:
        preset_cfg = copy.deepcopy(presets.PRESETS[preset])
    problems.append(seed_problem(seed))
    overrides = copy.deepcopy(overrides or {})
    for section in overrides:
        if section not in SECTIONS:
            problems.append(f"unknown section {section!r}; use data, fit, explain, score, report or methods.<name>")
    for section in ("data", "fit", "explain", "score", "report", "methods"):
        if section in overrides and not isinstance(overrides[section], dict):
            problems.append(f"--set {section}=...: give SECTION.KEY=VALUE, e.g. --set {section}.<key>=...")
            overrides.pop(section)
    method_overrides = overrides.pop("methods", {})
    method_preset = preset_cfg.pop("method_preset")
    cfg = presets.merge(preset_cfg, {k: v for k, v in overrides.items() if k in SECTIONS})

    # data
    d = dict(cfg["data"])
    if data is not None and data != d.get("name"):
        d = {"name": data, "image_size": d.get("image_size"), **overrides.get("data", {})}
        d["name"] = data
    if root is not None:
        d["root"] = str(root)
    problems += data_problems(d, NIH_KEYS)
    problems += fit_problems(cfg["fit"], presets.FIT_KEYS)
    problems += explain_problems(cfg["explain"])
    problems += score_problems(cfg["score"])
    problems += report_problems(cfg["report"])

    # methods
    registered = available_methods()
    chosen = list(dict.fromkeys(methods or [m for m in presets.DEFAULT_METHODS if m in registered]))
    missing = [m for m in chosen if m not in registered]
    for m in missing:
        problems.append(f"unknown method {m!r}; registered: {', '.join(registered) or '(none)'}. Run `wsl-bench "
                        "methods` to list them, or register your own with the 'wsl_bench.methods' entry-point group")
    names = [m for m in chosen if m in registered] + [r for r in REFERENCE_METHODS if r not in chosen]
    for m in sorted(set(method_overrides) - set(names) - set(missing)):
        problems.append(f"--set methods.{m}...: that method is not in this run ({', '.join(names)})")
    for m in names:
        if m not in registered:
            continue
        info = registered[m]
        mp = preset if preset in info.cls.presets else method_preset
        if m in method_overrides:
            problems += method_problems(m, info, mp, method_overrides[m])
        elif callable(getattr(info.cls, "check_config", None)):
            problems += method_problems(m, info, mp, {})
        for comp in ablate or []:
            if m not in REFERENCE_METHODS and comp not in info.cls.ablations:
                problems.append(f"--ablate {comp}: method {m!r} has no component {comp!r}; it offers: "
                                f"{', '.join(info.cls.ablations) or '(none)'}")
    problems += hardware_problems({"accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto", **(hardware or {})})

    problems = list(dict.fromkeys(p for p in problems if p))
    if len(problems) == 1:
        raise SettingsError(problems[0])
    if problems:
        raise SettingsError(f"{len(problems)} problems with the run settings: "
                            + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))
