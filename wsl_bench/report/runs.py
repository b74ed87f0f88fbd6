"""Read one or more run folders into the score tables a report is built from.

A report never rescores: it reads what the scoring stage wrote (``scores/<method>/per_box.csv``,
``summary.json``), the run's test tables (``data/images.csv``, ``data/boxes.csv``), the gallery
images, the heatmap bundles and the manifest timings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# The guesses (sanity baselines every report shows; baselines/priors.py registers them) are listed after the others.
from wsl_bench.references import GUESS_REFERENCES

PER_BOX_COLUMNS = ("image_id", "label", "x", "y", "w", "h", "size_bin", "best_iou", "best_iobb", "pointing_hit")


class ReportInputError(ValueError):
    """A run folder lacks what the report needs; the message names the file and the fix."""


@dataclass
class MethodScores:
    """Everything the report reads about one method of one run."""

    name: str  # unique display name across the runs given ("<run>/<method>" on a clash)
    method: str  # the method's registered name inside its run
    run_dir: Path
    per_box: pd.DataFrame
    summary: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def heatmaps_path(self) -> Path:
        return self.run_dir / "heatmaps" / f"{self.method}.npz"

    @property
    def probs_path(self) -> Path:
        return self.run_dir / "heatmaps" / f"{self.method}.probs.csv"

    @property
    def is_reference(self) -> bool:
        return self.method in GUESS_REFERENCES


@dataclass
class RunSet:
    """The methods of all runs given, in report order (methods first, sanity baselines last)."""

    run_dirs: list[Path]
    methods: dict[str, MethodScores]
    images: pd.DataFrame  # data/images.csv of the first run
    boxes: pd.DataFrame  # data/boxes.csv of the first run
    manifests: dict[Path, dict[str, Any]]
    configs: dict[Path, dict[str, Any]]  # config.yaml of each run ({} when absent)
    same_data: bool  # all runs scored the same boxes (paired comparisons and galleries are valid)

    @property
    def names(self) -> list[str]:
        return list(self.methods)

    @property
    def gallery_path(self) -> Path:
        return self.run_dirs[0] / "data" / "gallery.npz"

    @property
    def patients(self) -> dict[str, str]:
        if "patient_id" not in self.images.columns:
            return {}
        return dict(zip(self.images["image_id"].astype(str), self.images["patient_id"].astype(str)))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ReportInputError(f"{path} is missing; run `wsl-bench run` (or `wsl-bench score --out {path.parent}`) first") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path} is not valid JSON ({exc}); re-run the stage that writes it") from None


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise ReportInputError(f"{path} is missing ({what}); re-run `wsl-bench run` on this folder")
    df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReportInputError(f"{path} lacks column(s) {', '.join(missing)}; expected at least {', '.join(required)}")
    return df


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportInputError(f"{path} is not valid YAML ({exc}); restore it or re-run `wsl-bench run`") from None
    return cfg if isinstance(cfg, dict) else {}


def method_timings(manifest: dict[str, Any], method: str) -> dict[str, Any]:
    """Timings of one method from a manifest (fit_s, explain_s, heatmaps_per_s, n_params), {} if absent."""
    timings = manifest.get("timings", {})
    if isinstance(timings, dict) and isinstance(timings.get(method), dict):
        return dict(timings[method])
    methods = manifest.get("methods", {})
    if isinstance(methods, dict) and isinstance(methods.get(method), dict):
        entry = methods[method]
        return dict(entry.get("timings", entry))
    return {}


def _methods_of(run_dir: Path) -> list[str]:
    scores = run_dir / "scores"
    if not scores.is_dir():
        raise ReportInputError(f"{run_dir} has no scores/ folder; is it a wsl-bench run folder? Score it with `wsl-bench run` first")
    found = sorted(p.name for p in scores.iterdir() if (p / "summary.json").is_file())
    if not found:
        raise ReportInputError(f"{scores} holds no <method>/summary.json; the scoring stage has not run")
    return found


def _order(names: list[str], config_order: list[str]) -> list[str]:
    """Methods in the order the run asked for them, sanity baselines last."""
    rank = {m: i for i, m in enumerate(config_order)}
    return sorted(names, key=lambda m: (m in GUESS_REFERENCES, rank.get(m, len(rank)), m))


def load_runs(run_dirs: list[Path] | list[str]) -> RunSet:
    """Read every method's score tables from the run folders (clear errors for missing pieces)."""
    if not run_dirs:
        raise ReportInputError("no run folder given; pass at least one, e.g. `wsl-bench report runs/quick --out report/`")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise ReportInputError(f"run folder {d} does not exist")
    manifests = {d: (_read_json(d / "manifest.json") if (d / "manifest.json").is_file() else {}) for d in dirs}
    configs = {d: _read_config(d / "config.yaml") for d in dirs}

    per_run: list[tuple[Path, str]] = []
    for d in dirs:
        order = list(configs[d].get("methods_order") or manifests[d].get("methods_order") or manifests[d].get("methods") or [])
        order = [m for m in order if isinstance(m, str)]
        per_run += [(d, m) for m in _order(_methods_of(d), order)]
    clash = {m for _, m in per_run if sum(1 for _, m2 in per_run if m2 == m) > 1}

    entries: list[MethodScores] = []
    for d, m in per_run:
        name = f"{d.name}/{m}" if m in clash else m
        if m in clash and any(e.name == name for e in entries):
            name = f"{d.parent.name}/{d.name}/{m}"
        sdir = d / "scores" / m
        per_box = _read_csv(sdir / "per_box.csv", PER_BOX_COLUMNS, f"the per-box scores of {m}")
        entries.append(
            MethodScores(
                name=name,
                method=m,
                run_dir=d,
                per_box=per_box,
                summary=_read_json(sdir / "summary.json"),
                timings=method_timings(manifests[d], m),
            )
        )
    # Methods before sanity baselines across runs too, keeping run order within each group.
    entries.sort(key=lambda e: e.is_reference)

    first = dirs[0]
    images = _read_csv(first / "data" / "images.csv", ("image_id",), "the test images table")
    boxes = _read_csv(first / "data" / "boxes.csv", ("image_id", "label", "x", "y", "w", "h"), "the ground-truth boxes")
    same = True
    for d in dirs[1:]:
        other = _read_csv(d / "data" / "boxes.csv", ("image_id", "label", "x", "y", "w", "h"), "the ground-truth boxes")
        key = ["image_id", "label", "x", "y", "w", "h"]
        a = boxes[key].sort_values(key).reset_index(drop=True)
        b = other[key].sort_values(key).reset_index(drop=True)
        same = same and a.shape == b.shape and bool((a.astype(str) == b.astype(str)).all().all())
    return RunSet(
        run_dirs=dirs,
        methods={e.name: e for e in entries},
        images=images,
        boxes=boxes,
        manifests=manifests,
        configs=configs,
        same_data=same,
    )
