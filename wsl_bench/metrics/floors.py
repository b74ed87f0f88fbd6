"""Floors: the image-independent references scored on the real NIH box geometry (and SynthCXR's).

`prior-center` and `prior-lung` look at no pixel, so their box scores on the 984 NIH ChestX-ray14
boxes follow from the box table alone (it ships in the torchxrayvision wheel): the floor every
published NIH number should be read against. The same references on a SynthCXR test split, beside
the NIH figures, check how NIH-like the synthetic cohort's box geometry is.

Every number comes from `wsl_bench.metrics.score` (the scorer's summary.json is read back, never
recomputed); `wsl-bench floors` writes the tables. See docs/scoring.md, "Floors on the real NIH geometry".
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

from wsl_bench.io import atomic_path, write_json, write_text
from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS
from wsl_bench.metrics.aggregate import IOBB_THRESHOLDS, IOU_THRESHOLDS, SIZE_BINS, tkey
from wsl_bench.references import GUESS_REFERENCES, PRIOR_MAP_REFERENCES

FLOOR_METHODS: tuple[str, ...] = tuple(r for r in GUESS_REFERENCES if r in PRIOR_MAP_REFERENCES)  # centre, lung
FLOOR_POLICIES: tuple[str, ...] = ("wang2017", "threshold", "calibrated", "maxboxacc")
NIH_IMAGE_SIZE = 1024  # the released ChestX-ray14 PNGs are 1024 x 1024; BBox_List_2017 is in that frame
HEADLINE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
REALISM_THRESHOLDS = (0.1, 0.2, 0.3)
ROW_COLUMNS = ("cohort", "method", "policy", "metric", "size_bin", "label", "threshold", "value", "ci_low", "ci_high", "n_boxes")


@dataclass
class FloorCohort:
    """A box table with what the scorer needs besides maps: image sizes, patient ids, and one map per
    (method, box label), since a reference's map is the same for every image."""

    name: str
    boxes: pd.DataFrame
    sizes: int | dict
    patients: dict
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> label -> 2-D map
    info: dict = field(default_factory=dict)

    def bundle(self, method: str) -> dict[str, np.ndarray]:
        """Bundle-style maps for `method`: key "<image id>::<label>" -> its (shared) class map."""
        from wsl_bench.heatmaps import bundle_key

        per_label = self.maps[method]
        pairs = self.boxes[["image_id", "label"]].drop_duplicates()
        return {bundle_key(i, lab): per_label[lab] for i, lab in zip(pairs["image_id"], pairs["label"])}

    def binned_boxes(self, bins=SIZE_BINS) -> pd.DataFrame:
        """label and size_bin of every box (area / image area, binned as the scorer bins it)."""
        from wsl_bench.metrics.aggregate import size_bin

        ids = self.boxes["image_id"]
        if isinstance(self.sizes, dict):
            hw = np.array([self.sizes[i] for i in ids], dtype=np.float64).reshape(-1, 2)
        else:
            hw = np.full((len(ids), 2), float(self.sizes))
        area = (self.boxes["w"] * self.boxes["h"]).to_numpy(dtype=np.float64) / (hw[:, 0] * hw[:, 1])
        return pd.DataFrame({"label": self.boxes["label"].to_numpy(), "size_bin": size_bin(area, bins)})


def reference_maps(method) -> dict[str, np.ndarray]:
    """One map per box finding from a method's own `explain` on a blank image (the references ignore pixels)."""
    import torch

    blank = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        out = method.explain(blank, list(BOX_FINDING_INDICES))
    arr = out[0].detach().cpu().numpy().astype(np.float32)
    return {lab: arr[c] for c, lab in enumerate(BOX_FINDINGS)}


def nih_cohort(methods=FLOOR_METHODS, image_size: int = NIH_IMAGE_SIZE) -> FloorCohort:
    """The 984 real NIH boxes (880 images), patient ids from Data_Entry_2017_v2020, and each
    reference's default map (prior-lung: the atlas of the 517 real lung masks)."""
    from wsl_bench.data.assets import BBOX_LIST, DATA_ENTRY, real_boxes, real_data_entry, wheel_file
    from wsl_bench.methods import create_method

    boxes = real_boxes().copy()
    entries = real_data_entry()
    patients = dict(zip(entries["image_id"], entries["patient_id"]))
    cohort = FloorCohort(
        "nih", boxes, int(image_size), {i: patients[i] for i in boxes["image_id"].unique() if i in patients},
        info={"boxes": str(wheel_file(BBOX_LIST)), "labels": str(wheel_file(DATA_ENTRY)), "image_size": int(image_size),
              "maps": "each reference's default map (prior-lung: mean of the 517 real lung masks in the wheel)"},
    )
    for name in methods:
        cohort.maps[name] = reference_maps(create_method(name))
    return cohort


def synth_cohort(seed: int = 0, preset: str = "quick", methods=FLOOR_METHODS, progress: bool = False) -> FloorCohort:
    """The test boxes of the SynthCXR cohort a `preset` run with `seed` uses, with the references
    fitted as in that run (prior-lung: the train split's mean lung mask)."""
    from wsl_bench.data.registry import get_dataset

    cfg = reference_config(preset, seed, methods)
    data = get_dataset(cfg["data"]["name"]).load(cfg["data"], seed, progress=progress)
    return floor_cohort_of(data, cfg, methods, info={"preset": preset, "seed": int(seed)})


def reference_config(preset: str, seed: int, methods=FLOOR_METHODS) -> dict:
    """The parts of a `preset` run's config (`wsl_bench.config.build_config`) that load its cohort and fit the
    references `methods`: seed, the data section as its dataset resolves it, and each reference's method spec."""
    import copy

    from wsl_bench.data.registry import get_dataset
    from wsl_bench.methods import get_method_info, resolve_config
    from wsl_bench.presets import PRESETS
    from wsl_bench.value_checks import seed_problem

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    problem = seed_problem(seed, "seed")
    if problem:
        raise ValueError(problem)
    base = copy.deepcopy(PRESETS[preset])
    specs = {}
    for name in methods:
        mp = preset if preset in get_method_info(name).cls.presets else base["method_preset"]
        specs[name] = {"registry": name, "method_preset": mp, "config": resolve_config(name, mp, None)}
    return {"seed": int(seed), "data": get_dataset(base["data"]["name"]).resolve_config(base["data"]), "methods": specs}


def floor_cohort_of(data, cfg: dict, methods=FLOOR_METHODS, info: dict | None = None) -> FloorCohort:
    """A loaded SynthCXR `Cohort` as a FloorCohort: its test boxes, and each reference fitted on its train
    split as a run with config `cfg` (`wsl_bench.config.build_config`, or its parts `reference_config`) fits it."""
    from wsl_bench.methods import FitContext, create_method

    test = data.test
    box_ids = set(test.boxes["image_id"])
    sizes = {iid: (int(h), int(w)) for iid, (h, w) in zip(test.image_ids, test.orig_sizes) if iid in box_ids}
    patients = {iid: str(p) for iid, p in zip(test.image_ids, test.patient_ids) if iid in box_ids}
    cohort = FloorCohort(
        "synth", test.boxes.reset_index(drop=True).copy(), sizes, patients,
        info={**(info or {}), "fingerprint": data.fingerprint,
              "n_images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
              "maps": "each reference fitted on the train split as in a run (prior-lung: its mean lung mask)"},
    )
    with tempfile.TemporaryDirectory(prefix="wsl-bench-floors-") as tmp:
        for name in methods:
            spec = cfg["methods"][name]
            method = create_method(spec["registry"], spec["config"], device="cpu", preset=None)
            ckdir = Path(tmp) / name
            ckdir.mkdir()
            ctx = FitContext(checkpoint_dir=ckdir, seed=cfg["seed"], preset=spec["method_preset"],
                             image_size=int(cfg["data"]["image_size"]))
            method.fit(data.train, data.val, ctx)
            cohort.maps[name] = reference_maps(method)
    return cohort


def score_cohort(cohort: FloorCohort, out_dir: str | os.PathLike, methods=FLOOR_METHODS, policies=FLOOR_POLICIES,
                 n_boot: int = 1000, seed: int = 0, progress: bool = False, sweep_size: int | None = None) -> dict:
    """Score every (method, policy) into out_dir/<cohort>/<method>/<policy>/ (per_box.csv, summary.json).

    `sweep_size`: the sweep grid of the policies that sweep (those with a `sweep_size` option: calibrated, maxboxacc;
    None: the scorer's default). Returns {method: {policy: folder}}."""
    from wsl_bench.localize.registry import get_policy
    from wsl_bench.metrics.evaluator import score

    folders: dict = {}
    for name in methods:
        maps = cohort.bundle(name)
        for policy in policies:
            folder = Path(out_dir) / cohort.name / name / policy
            sweeps = sweep_size is not None and "sweep_size" in get_policy(policy).options
            score(maps, cohort.boxes, cohort.sizes, policy=policy, patients=cohort.patients, seed=seed,
                  n_boot=n_boot, out_dir=folder, progress=progress, **({"sweep_size": sweep_size} if sweeps else {}))
            folders.setdefault(name, {})[policy] = folder
    return folders


def _ci(ci_table: dict, label: str, key: str):
    pair = (ci_table.get(label) or {}).get(key) if ci_table else None
    return (pair[0], pair[1]) if pair else (None, None)


def summary_rows(summary: dict, per_box: pd.DataFrame, cohort: str, method: str, policy: str) -> list[dict]:
    """Tidy rows (ROW_COLUMNS) read from one summary.json: IoU and IoBB accuracy per class, macro and
    micro, over all boxes (size_bin "all") and per size bin. Box counts come from per_box.csv."""
    rows = []
    counts = per_box.groupby(["size_bin", "label"]).size().to_dict()

    def add(metric, keys, size_bin, table, ci_table, n_of):
        for label, vals in table.items():
            for k in keys:
                lo, hi = _ci(ci_table, label, k)
                rows.append(dict(cohort=cohort, method=method, policy=policy, metric=metric, size_bin=size_bin,
                                 label=label, threshold=float(k), value=vals.get(k), ci_low=lo, ci_high=hi,
                                 n_boxes=n_of(label)))

    total = int(summary["n_boxes"])
    for metric, thresholds in (("iou_acc", summary["iou_thresholds"]), ("iobb_acc", summary["iobb_thresholds"])):
        keys = [tkey(t) for t in thresholds]
        add(metric, keys, "all", summary[metric], summary.get("ci", {}).get(metric),
            lambda lab: total if lab in ("macro", "micro") else int(summary["n_boxes_per_label"].get(lab, 0)))
        for name, entry in summary["by_size"].items():
            if metric not in entry:
                continue
            add(metric, keys, name, entry[metric], entry.get("ci", {}).get(metric),
                lambda lab, name=name, n=int(entry["n_boxes"]): n if lab in ("macro", "micro") else int(counts.get((name, lab), 0)))
    return rows


def collect(out_dir: str | os.PathLike, folders: dict, cohort: str) -> pd.DataFrame:
    """Rows of every scored (method, policy) of one cohort, read back from the files the scorer wrote."""
    rows = []
    for method, by_policy in folders.items():
        for policy, folder in by_policy.items():
            summary = json.loads((Path(folder) / "summary.json").read_text())
            per_box = pd.read_csv(Path(folder) / "per_box.csv", dtype={"image_id": str})
            rows += summary_rows(summary, per_box, cohort, method, policy)
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


REALISM_TOLERANCE = 0.1  # |SynthCXR - NIH| IoU accuracy of a reference, per class and per size bin
SHARE_TOLERANCE = 0.05  # |SynthCXR - NIH| share of the boxes in a size bin


def realism_gaps(rows: pd.DataFrame, comp: pd.DataFrame | None = None, policy: str = "wang2017",
                 thresholds=REALISM_THRESHOLDS, tol: float = REALISM_TOLERANCE,
                 share_tol: float = SHARE_TOLERANCE) -> list[dict]:
    """Where SynthCXR's box geometry is not NIH-like: every (reference, class or size bin, T(IoU)) whose
    SynthCXR IoU accuracy is more than `tol` from NIH's (size bins: macro over their classes), and every
    size bin whose share of the boxes is more than `share_tol` from NIH's (`comp`, from `composition`).
    Cells one cohort lacks are skipped. Returns dicts with kind, method, group, threshold, nih, synth."""
    gaps = []
    sel = rows[(rows["policy"] == policy) & (rows["metric"] == "iou_acc")]
    groups = [("all", lab) for lab in BOX_FINDINGS] + [(b, "macro") for b, _, _ in SIZE_BINS]
    for method in dict.fromkeys(_pick(sel, cohort="nih")["method"]):
        for size_bin, label in groups:
            for t in thresholds:
                got = {}
                for cohort in ("nih", "synth"):
                    v, _, _ = _value(sel, cohort=cohort, method=method, size_bin=size_bin, label=label, threshold=float(t))
                    got[cohort] = v
                if got["nih"] is None or got["synth"] is None:
                    continue
                if abs(got["synth"] - got["nih"]) > tol + 1e-9:
                    gaps.append(dict(kind="iou_acc", method=method, group=label if size_bin == "all" else size_bin,
                                     threshold=float(t), nih=got["nih"], synth=got["synth"]))
    if comp is not None and {"nih", "synth"} <= set(comp["cohort"]):
        alls = comp[comp["label"] == "all"]
        for name, _, _ in SIZE_BINS:
            share = {c: float(alls[(alls["cohort"] == c) & (alls["size_bin"] == name)]["share"].iloc[0]) for c in ("nih", "synth")}
            if abs(share["synth"] - share["nih"]) > share_tol + 1e-9:
                gaps.append(dict(kind="share", method=None, group=name, threshold=None, nih=share["nih"], synth=share["synth"]))
    return gaps


def composition(boxes_by_cohort: dict[str, pd.DataFrame], bins=SIZE_BINS) -> pd.DataFrame:
    """Box counts and shares per size bin (label "all") and per class within each bin, per cohort.

    `boxes_by_cohort`: cohort -> a table with label and size_bin per box (`FloorCohort.binned_boxes`, or a
    scorer's per_box.csv)."""
    rows = []
    for cohort, pb in boxes_by_cohort.items():
        total = len(pb)
        labels = [l for l in BOX_FINDINGS if l in set(pb["label"])]
        for name, lo, hi in bins:
            sel = pb[pb["size_bin"] == name]
            rows.append(dict(cohort=cohort, size_bin=name, label="all", area_lo=lo, area_hi=None if np.isinf(hi) else hi,
                             n_boxes=len(sel), share=len(sel) / total if total else None))
            for lab in labels:
                n_lab = int((pb["label"] == lab).sum())
                n = int((sel["label"] == lab).sum())
                rows.append(dict(cohort=cohort, size_bin=name, label=lab, area_lo=lo,
                                 area_hi=None if np.isinf(hi) else hi, n_boxes=n, share=n / n_lab if n_lab else None))
    return pd.DataFrame(rows)


# --- markdown -------------------------------------------------------------------------------------


def _cell(v, lo=None, hi=None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    s = f"{v:.2f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        s += f" [{lo:.2f}, {hi:.2f}]"
    return s


def _pick(rows: pd.DataFrame, **eq) -> pd.DataFrame:
    sel = np.ones(len(rows), dtype=bool)
    for k, v in eq.items():
        sel &= (rows[k] == v).to_numpy()
    return rows[sel]


def _value(rows: pd.DataFrame, **eq):
    r = _pick(rows, **eq)
    if r.empty:
        return None, None, None
    r = r.iloc[0]
    f = lambda x: None if pd.isna(x) else float(x)  # noqa: E731
    return f(r["value"]), f(r["ci_low"]), f(r["ci_high"])


def headline_table(rows: pd.DataFrame, cohort: str = "nih", thresholds=HEADLINE_THRESHOLDS, ci: bool = True) -> str:
    """Markdown: macro IoU accuracy per (method, policy) of one cohort, 95 % CI in brackets."""
    head = "| Reference | Boxes | " + " | ".join(f"T(IoU)={t:g}" for t in thresholds) + " |"
    lines = [head, "|---|---|" + "---:|" * len(thresholds)]
    sub = _pick(rows, cohort=cohort, metric="iou_acc", size_bin="all", label="macro")
    for method in dict.fromkeys(sub["method"]):
        for policy in dict.fromkeys(_pick(sub, method=method)["policy"]):
            cells = []
            for t in thresholds:
                v, lo, hi = _value(sub, method=method, policy=policy, threshold=float(t))
                cells.append(_cell(v, lo, hi) if ci else _cell(v))
            lines.append(f"| {method} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(rows: pd.DataFrame, cohort: str, method: str, policy: str = "wang2017", size_bin: str = "all",
                    thresholds=IOU_THRESHOLDS, metric: str = "iou_acc") -> str:
    """Markdown: IoU (or IoBB) accuracy per class (and macro, micro) of one (cohort, method, policy)."""
    sub = _pick(rows, cohort=cohort, method=method, policy=policy, metric=metric, size_bin=size_bin)
    lines = ["| Class | n | " + " | ".join(f"{t:g}" for t in thresholds) + " |", "|---|---:|" + "---:|" * len(thresholds)]
    for label in dict.fromkeys(sub["label"]):
        n = int(_pick(sub, label=label)["n_boxes"].iloc[0])
        cells = [_cell(*_value(sub, label=label, threshold=float(t))) for t in thresholds]
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def realism_table(rows: pd.DataFrame, method: str, policy: str = "wang2017", thresholds=REALISM_THRESHOLDS) -> str:
    """Markdown: NIH vs SynthCXR IoU accuracy per class and per size bin (bins: macro over their classes)."""
    head = "| Group | n NIH | n Synth | " + " | ".join(f"NIH {t:g} | Synth {t:g}" for t in thresholds) + " |"
    lines = [head, "|---|---:|---:|" + "---:|---:|" * len(thresholds)]
    groups = [("all", lab) for lab in list(BOX_FINDINGS) + ["macro", "micro"]] + [(b, "macro") for b, _, _ in SIZE_BINS]
    for size_bin, label in groups:
        name = label if size_bin == "all" else f"{size_bin} boxes (macro)"
        ns, cells = [], []
        for cohort in ("nih", "synth"):
            r = _pick(rows, cohort=cohort, method=method, policy=policy, metric="iou_acc", size_bin=size_bin, label=label)
            ns.append(str(int(r["n_boxes"].iloc[0])) if len(r) else "0")
        for t in thresholds:
            for cohort in ("nih", "synth"):
                v, _, _ = _value(rows, cohort=cohort, method=method, policy=policy, metric="iou_acc", size_bin=size_bin,
                                 label=label, threshold=float(t))
                cells.append(_cell(v))
        lines.append(f"| {name} | {ns[0]} | {ns[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def composition_table(comp: pd.DataFrame) -> str:
    """Markdown: boxes and shares per size bin, one column pair per cohort."""
    cohorts = list(dict.fromkeys(comp["cohort"]))
    lines = ["| Size bin (box area / image area) | " + " | ".join(f"{c} boxes | {c} share" for c in cohorts) + " |",
             "|---|" + "---:|---:|" * len(cohorts)]
    for name, lo, hi in SIZE_BINS:
        rng = f"[{lo:g}, {hi:g})" if np.isfinite(hi) else f"≥ {lo:g}"
        cells = []
        for c in cohorts:
            r = comp[(comp["cohort"] == c) & (comp["size_bin"] == name) & (comp["label"] == "all")].iloc[0]
            cells += [str(int(r["n_boxes"])), f"{r['share']:.2f}"]
        lines.append(f"| {name} {rng} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(rows: pd.DataFrame, comp: pd.DataFrame, meta: dict) -> str:
    """The floors.md file: headline, per class, per size bin, and (with SynthCXR) the realism tables."""
    cohorts = list(dict.fromkeys(rows["cohort"]))
    parts = [
        "# Floors: image-independent references on the box geometry",
        "",
        f"Regenerate: `{meta['command']}`. IoU accuracy = fraction of boxes whose best candidate box has "
        f"IoU > T(IoU); macro = mean over the box classes; 95 % patient-bootstrap CIs ({meta['n_boot']} replicates) "
        "in brackets. `maxboxacc` picks its threshold on the scored boxes (an oracle upper bound).",
    ]
    for cohort in cohorts:
        title = "NIH ChestX-ray14 (984 real boxes)" if cohort == "nih" else f"SynthCXR (seed {meta.get('synth_seed')}, {meta.get('synth_preset')} preset, test split)"
        parts += ["", f"## {title}", "", "Macro IoU accuracy:", "", headline_table(rows, cohort, IOU_THRESHOLDS)]
        for method in dict.fromkeys(_pick(rows, cohort=cohort)["method"]):
            parts += ["", f"### {method}, wang2017 boxes, per class", "", per_class_table(rows, cohort, method)]
            lines = ["| Size bin | n | " + " | ".join(f"{t:g}" for t in IOU_THRESHOLDS) + " |",
                     "|---|---:|" + "---:|" * len(IOU_THRESHOLDS)]
            for name, _, _ in SIZE_BINS:
                r = _pick(rows, cohort=cohort, method=method, policy="wang2017", metric="iou_acc", size_bin=name, label="macro")
                if r.empty:
                    continue
                cells = [_cell(*_value(r, threshold=float(t))) for t in IOU_THRESHOLDS]
                lines.append(f"| {name} (macro) | {int(r['n_boxes'].iloc[0])} | " + " | ".join(cells) + " |")
            parts += ["", f"### {method}, wang2017 boxes, per size bin", "", "\n".join(lines)]
            parts += ["", f"### {method}, wang2017 boxes, IoBB accuracy (Wang et al.'s main metric), per class", "",
                      per_class_table(rows, cohort, method, thresholds=IOBB_THRESHOLDS, metric="iobb_acc")]
    if {"nih", "synth"} <= set(cohorts):
        parts += ["", "## SynthCXR beside NIH (wang2017 boxes)"]
        for method in dict.fromkeys(_pick(rows, cohort="nih")["method"]):
            parts += ["", f"### {method}", "", realism_table(rows, method)]
    parts += ["", "## Size-bin composition", "", composition_table(comp), ""]
    if {"nih", "synth"} <= set(cohorts):
        gaps = realism_gaps(rows, comp)
        parts += ["## Realism check", "",
                  f"Cells where SynthCXR is more than {REALISM_TOLERANCE:g} from NIH (IoU accuracy at T(IoU) "
                  f"{', '.join(f'{t:g}' for t in REALISM_THRESHOLDS)}, wang2017, per class and per size bin) or a size "
                  f"bin's share is more than {SHARE_TOLERANCE * 100:g} points from NIH's: "
                  + (f"{len(gaps)}." if gaps else "none."), ""]
        for g in gaps:
            what = (f"{g['method']}, {g['group']}, T(IoU) {g['threshold']:g}" if g["kind"] == "iou_acc"
                    else f"share of {g['group']} boxes")
            parts.append(f"- {what}: NIH {g['nih']:.2f}, SynthCXR {g['synth']:.2f}")
        if gaps:
            parts.append("")
    return "\n".join(parts)


def write_floors(out_dir: str | os.PathLike, rows: pd.DataFrame, comp: pd.DataFrame, meta: dict) -> dict[str, Path]:
    """floors.csv, floors.json, composition.csv and floors.md under out_dir (atomic writes)."""
    out = Path(out_dir)
    paths = {"csv": out / "floors.csv", "json": out / "floors.json", "composition": out / "composition.csv",
             "md": out / "floors.md"}
    with atomic_path(paths["csv"]) as tmp:
        rows.to_csv(tmp, index=False)
    with atomic_path(paths["composition"]) as tmp:
        comp.to_csv(tmp, index=False)
    nested: dict = {}
    for r in rows.itertuples(index=False):
        cell = nested.setdefault(r.cohort, {}).setdefault(r.method, {}).setdefault(r.policy, {}).setdefault(r.metric, {})
        cell.setdefault(r.size_bin, {}).setdefault(r.label, {})[tkey(r.threshold)] = {
            "value": None if pd.isna(r.value) else float(r.value),
            "ci": None if pd.isna(r.ci_low) else [float(r.ci_low), float(r.ci_high)],
            "n_boxes": int(r.n_boxes),
        }
    comp_json = {c: g.drop(columns="cohort").replace({np.nan: None}).to_dict(orient="records") for c, g in comp.groupby("cohort")}
    write_json(paths["json"], {"meta": meta, "accuracy": nested, "composition": comp_json})
    write_text(paths["md"], markdown_report(rows, comp, meta))
    return paths


def run_floors(out_dir: str | os.PathLike, *, synth: bool = True, synth_seed: int = 0, synth_preset: str = "quick",
               policies=FLOOR_POLICIES, methods=FLOOR_METHODS, n_boot: int = 1000, seed: int = 0,
               image_size: int = NIH_IMAGE_SIZE, progress: bool = False, command: str = "wsl-bench floors",
               sweep_size: int | None = None, log=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Score the references on NIH (and SynthCXR), write every table; returns (rows, composition, meta)."""
    log = log or (lambda msg: None)
    out = Path(out_dir)
    t0 = time.perf_counter()
    log("NIH: the 984 real boxes from the torchxrayvision wheel")
    nih = nih_cohort(methods, image_size)
    folders = {"nih": score_cohort(nih, out / "scores", methods, policies, n_boot, seed, progress, sweep_size)}
    cohorts = {"nih": nih}
    if synth:
        log(f"SynthCXR: the {synth_preset} cohort, seed {synth_seed} (generated on first use, then cached)")
        sc = synth_cohort(synth_seed, synth_preset, methods, progress)
        folders["synth"] = score_cohort(sc, out / "scores", methods, policies, n_boot, seed, progress, sweep_size)
        cohorts["synth"] = sc
    rows = pd.concat([collect(out / "scores", f, c) for c, f in folders.items()], ignore_index=True)
    comp = composition({c: v.binned_boxes() for c, v in cohorts.items()})
    meta = {
        "command": command,
        "methods": list(methods),
        "policies": list(policies),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "sweep_size": sweep_size,
        "cohorts": {c: v.info for c, v in cohorts.items()},
        "synth_seed": int(synth_seed) if synth else None,
        "synth_preset": synth_preset if synth else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_floors(out, rows, comp, meta)
    return rows, comp, meta


# --- the `wsl-bench floors` command ----------------------------------------------------------------


def _out_problem(out: Path) -> str | None:
    """Why `out` cannot be a folder we write into (a file there or above it), or None."""
    p = out
    while True:
        if p.exists():
            if not p.is_dir():
                return f"--out {out}: {p} is a file, not a folder; choose a folder path for --out"
            return None
        if p.parent == p:
            return None
        p = p.parent


def floors_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for floors.csv/.json/.md, composition.csv and the scorer's files (scores/)."),
    synth: bool = typer.Option(True, "--synth/--no-synth", help="Also score the SynthCXR test split beside NIH (--no-synth: NIH only, no cohort needed)."),
    synth_seed: int = typer.Option(0, "--synth-seed", help="Seed of the SynthCXR cohort (the run's --seed)."),
    policies: str = typer.Option(",".join(FLOOR_POLICIES), "--policies", help="Comma-separated box policies to score."),
    methods: str = typer.Option(",".join(FLOOR_METHODS), "--methods", help="Comma-separated references to score (image-independent ones only)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Patient-bootstrap replicates for the 95% CIs (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and of the calibrated policy's split."),
    sweep_size: Optional[int] = typer.Option(None, "--sweep-size", help="Grid (longer side) of the calibrated/maxboxacc threshold sweeps; default: the scorer's (0 = full resolution). 256 is several times faster."),
    image_size: int = typer.Option(NIH_IMAGE_SIZE, "--image-size", help="Side of the NIH images the boxes refer to (the released PNGs: 1024)."),
    progress: bool = typer.Option(sys.stderr.isatty(), "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score prior-center and prior-lung (no pixels needed) on the 984 real NIH boxes, and on SynthCXR beside them.

    Example: wsl-bench floors --sweep-size 256 --out floors/   (NIH and SynthCXR seed 0, every policy)

    Example: wsl-bench floors --no-synth --policies wang2017 --out floors-nih/
    """
    from rich.console import Console

    from wsl_bench.localize.registry import policy_names
    from wsl_bench.metrics.command import _fail

    err = Console(stderr=True)
    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    registered = policy_names()
    bad = [p for p in chosen if p not in registered]
    if not chosen or bad:
        _fail(f"--policies {policies!r}: unknown policy {bad[0] if bad else '(none given)'!r}; choose from {', '.join(registered)}")
    chosen_methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen_methods if m not in FLOOR_METHODS]
    if not chosen_methods or bad:
        _fail(f"--methods {methods!r}: {bad[0] if bad else '(none given)'!r} is not an image-independent reference; "
              f"choose from {', '.join(FLOOR_METHODS)}")
    if n_boot < 0:
        _fail(f"--n-boot {n_boot}: must be 0 (no CIs) or a positive number of replicates")
    if sweep_size is not None and sweep_size < 0:
        _fail(f"--sweep-size {sweep_size}: must be 0 (full resolution) or a positive number of pixels")
    if image_size < 1:
        _fail(f"--image-size {image_size}: must be a positive number of pixels (NIH: 1024)")
    problem = _out_problem(out)
    if problem:
        _fail(problem)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--out {out}: cannot create the folder ({exc.strerror or exc}); choose a writable folder")
    argv = ["wsl-bench floors", f"--out {out}"] + ([] if synth else ["--no-synth"])
    if synth and synth_seed:
        argv.append(f"--synth-seed {synth_seed}")
    if chosen != list(FLOOR_POLICIES):
        argv.append(f"--policies {','.join(chosen)}")
    if chosen_methods != list(FLOOR_METHODS):
        argv.append(f"--methods {','.join(chosen_methods)}")
    argv += [f"--n-boot {n_boot}"] if n_boot != 1000 else []
    argv += [f"--seed {seed}"] if seed else []
    argv += [f"--image-size {image_size}"] if image_size != NIH_IMAGE_SIZE else []
    argv += [f"--sweep-size {sweep_size}"] if sweep_size is not None else []
    try:
        rows, _, meta = run_floors(out, synth=synth, synth_seed=synth_seed, policies=chosen, methods=chosen_methods, n_boot=n_boot, seed=seed,
                                   image_size=image_size, progress=progress, command=" ".join(argv), sweep_size=sweep_size,
                                   log=lambda m: err.print(m, highlight=False))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        _fail(str(exc).strip("'\""))
    typer.echo("NIH ChestX-ray14, 984 boxes: macro IoU accuracy [95% CI]\n")
    typer.echo(headline_table(rows, "nih"))
    err.print(f"wrote {out / 'floors.md'}, floors.csv, floors.json, composition.csv and scores/ in {meta['wall_s']:.0f} s",
              highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `floors` to the `wsl-bench` app."""
    app.command("floors")(floors_command)


__all__ = [
    "FLOOR_METHODS",
    "FLOOR_POLICIES",
    "FloorCohort",
    "collect",
    "composition",
    "floor_cohort_of",
    "headline_table",
    "realism_gaps",
    "nih_cohort",
    "reference_config",
    "run_floors",
    "score_cohort",
    "summary_rows",
    "synth_cohort",
]
