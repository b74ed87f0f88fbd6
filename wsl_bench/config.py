"""A run's config: `--set` overrides parsed, the preset resolved into what config.yaml holds, and its hash.

The data sections come from the dataset registry (`wsl_bench.data.registry`): each dataset fills in its own
defaults and refuses keys it does not know, so this module names no dataset.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from typing import Any

import yaml

from wsl_bench import presets
from wsl_bench.errors import RunError
from wsl_bench.methods import get_method_info, resolve_config
from wsl_bench.references import CEILING_REFERENCES, GUESS_REFERENCES, REFERENCE_METHODS

# What determines results (hardware settings excluded); `test_data` only in an external-validation run.
HASHED_SECTIONS = ("preset", "seed", "data", "methods", "fit", "explain", "score")
OPTIONAL_HASHED_SECTIONS = ("test_data",)
OVERRIDE_SECTIONS = ("data", "fit", "explain", "score", "report", "methods")


def config_hash(obj: Any) -> str:
    """Stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def run_config_hash(cfg: dict[str, Any]) -> str:
    """Hash of what determines results (hardware settings excluded)."""
    sections = HASHED_SECTIONS + tuple(k for k in OPTIONAL_HASHED_SECTIONS if k in cfg)
    return config_hash({k: cfg[k] for k in sections})


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["data.n_train=200", "methods.gradcam.lr=0.01"]` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise RunError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set data.n_train=200")
        if parts[0] not in OVERRIDE_SECTIONS:
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


def has_exact_masks(*data_names: str) -> bool:
    """Whether every named dataset has exact lesion masks (what the supervised ceiling trains and is read on)."""
    from wsl_bench.data.registry import get_dataset

    return all(get_dataset(name).exact_masks for name in data_names)


def has_outlined_masks(data_name: str) -> bool:
    """Whether the scored dataset's pixel masks are human outlines (SIIM-ACR), not exact lesion pixels: its
    runs also score mask Dice / IoU (`score.mask_metrics`); other runs' configs stay as they were."""
    from wsl_bench.data.registry import get_dataset

    ds = get_dataset(data_name)
    return bool(ds.has_masks) and not bool(ds.exact_masks)


def select_methods(methods: list[str] | None, data: str = "synth", test_data: str | None = None) -> list[str]:
    """The user's methods (default: clarity, gradcam where registered) plus the sanity references.

    The guesses always; the supervised ceiling (`oracle-seg`) only when the data (train and test) has exact
    lesion masks."""
    from wsl_bench.methods import available_methods

    registered = available_methods()
    if methods:
        chosen = list(dict.fromkeys(methods))
        for m in chosen:
            get_method_info(m)  # clear error naming the registered methods
    else:
        chosen = []
        for m in presets.DEFAULT_METHODS:
            if m in registered:
                chosen.append(m)
            else:
                warnings.warn(f"default method {m!r} is not registered yet; running without it", stacklevel=2)
    ceiling = has_exact_masks(data, *([test_data] if test_data else []))
    refs = list(GUESS_REFERENCES) + (list(CEILING_REFERENCES) if ceiling else [])
    for r in refs:
        if r not in registered:
            warnings.warn(f"reference method {r!r} is not registered; running without it", stacklevel=2)
    return chosen + [r for r in refs if r not in chosen and r in registered]


def resolve_data(data_cfg: dict[str, Any], option: str = "--data", root_option: str = "--root") -> dict[str, Any]:
    """A `data` section completed by its registered dataset (defaults filled in, unknown keys refused)."""
    from wsl_bench.data.registry import DatasetError, get_dataset

    try:
        dataset = get_dataset(data_cfg["name"])
        if dataset.needs_root and not data_cfg.get("root"):
            hint = getattr(dataset, "root_hint", "") or dataset.source or "the dataset folder"
            raise RunError(f"{option} {dataset.name} needs {root_option} DIR ({hint})")
        return dataset.resolve_config(data_cfg)
    except DatasetError as exc:
        raise RunError(f"{option} {data_cfg['name']}: {exc}" if option != "--data" else str(exc)) from None


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
    test_data: str | None = None,
    test_root: str | None = None,
) -> dict[str, Any]:
    """The full, resolved run config (what config.yaml holds).

    `test_data`/`test_root` make an external-validation run: the methods train on the train/val splits of
    `data` and are explained and scored on the test split of `test_data` (config key `test_data`, at the
    training image size)."""
    from wsl_bench.settings import check_run_inputs

    # every setting checked first, all at once (one SettingsError listing each problem; nothing is replaced)
    check_run_inputs(methods, data=data, root=root, preset=preset, seed=seed, ablate=ablate, overrides=overrides,
                     hardware=hardware)
    if preset not in presets.PRESETS:
        raise RunError(f"unknown preset {preset!r}; choose one of {', '.join(presets.PRESETS)}")
    base = copy.deepcopy(presets.PRESETS[preset])
    method_preset = base.pop("method_preset")
    overrides = copy.deepcopy(overrides or {})
    method_overrides = overrides.pop("methods", {})
    cfg = presets.merge(base, overrides)
    if data is not None and data != cfg["data"]["name"]:
        cfg["data"] = {"name": data, "image_size": cfg["data"]["image_size"], **overrides.get("data", {})}
        cfg["data"]["name"] = data
    if root is not None:
        cfg["data"]["root"] = str(root)
    cfg["data"] = resolve_data(cfg["data"])
    test_cfg = None
    if test_data is not None:
        test_cfg = {"name": test_data, "image_size": cfg["data"]["image_size"]}
        if test_root is not None:
            test_cfg["root"] = str(test_root)
        test_cfg = resolve_data(test_cfg, "--test-data", "--test-root")
    elif test_root is not None:
        raise RunError("--test-root needs --test-data NAME (the dataset whose test split the methods are scored on)")

    unknown_fit = sorted(set(cfg["fit"]) - presets.FIT_KEYS)
    if unknown_fit:
        raise RunError(f"unknown fit setting(s) {unknown_fit}; known: {', '.join(sorted(presets.FIT_KEYS))}")
    if not isinstance(cfg["fit"].get("compile", False), (bool, str)):
        raise RunError("fit.compile must be true, false or a torch.compile backend name, e.g. --set fit.compile=aot_eager")

    names = select_methods(methods, cfg["data"]["name"], test_data)
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
    hw = {"accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto", "fit_jobs": 1,
          **{k: v for k, v in (hardware or {}).items() if v is not None}}
    score_cfg = cfg["score"]
    if has_outlined_masks((test_cfg or cfg["data"])["name"]):
        from wsl_bench.metrics.mask_overlap import MASK_TAU

        score_cfg = {**score_cfg, "mask_metrics": True, "mask_tau": score_cfg.get("mask_tau", MASK_TAU)}
    return {
        "preset": preset,
        "seed": int(seed),
        "data": cfg["data"],
        **({"test_data": test_cfg} if test_cfg is not None else {}),
        "methods": specs,
        "methods_order": list(specs),
        "fit": cfg["fit"],
        "explain": cfg["explain"],
        "score": score_cfg,
        "report": cfg["report"],
        "hardware": hw,
    }
