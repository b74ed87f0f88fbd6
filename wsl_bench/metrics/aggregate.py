"""Per-box table -> summary dict: accuracies per class / macro / micro, per size, AFP, CIs.

Everything in `summary.json` is computed here from `per_box.csv` alone, so a report (or a user)
can recompute any number from the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.localize.registry import threshold_key as tkey  # a threshold as summary.json keys write it
from wsl_bench.metrics.bootstrap import grouped_replicates, percentile_ci, resample_counts, unit_codes

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
# Tertiles of the 984 NIH boxes' area as a fraction of the image (computed from BBox_List_2017).
SIZE_BINS = (("small", 0.0, 0.025), ("medium", 0.025, 0.078), ("large", 0.078, math.inf))


def hit_column(kind: str, t: float) -> str:
    return f"{kind}_hit_{tkey(t)}"


def fp_column(t: float) -> str:
    return f"n_fp_iobb_{tkey(t)}"


def size_bin(area_fraction: np.ndarray, bins=SIZE_BINS) -> np.ndarray:
    """Name of the bin [lo, hi) holding each area fraction."""
    out = np.empty(len(area_fraction), dtype=object)
    a = np.asarray(area_fraction, dtype=np.float64)
    for name, lo, hi in bins:
        out[(a >= lo) & (a < hi)] = name
    return out


def ordered_labels(labels) -> list[str]:
    present = set(labels)
    return [l for l in BOX_FINDINGS if l in present] + sorted(present - set(BOX_FINDINGS))


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _table(per_class: np.ndarray, macro: np.ndarray, micro: np.ndarray, labels, keys) -> dict:
    """{LABEL|macro|micro: {key: value}} (or {LABEL: value} when keys is None)."""
    def row(v):
        return _num(v[0]) if keys is None else {k: _num(x) for k, x in zip(keys, v)}

    out = {lab: row(per_class[i]) for i, lab in enumerate(labels)}
    out["macro"] = row(macro)
    out["micro"] = row(micro)
    return out


def _ci_table(lo, hi, labels, keys) -> dict:
    def pair(a, b):
        return None if not (np.isfinite(a) and np.isfinite(b)) else [float(a), float(b)]

    def row(i):
        if keys is None:
            return pair(lo[i][0], hi[i][0])
        return {k: pair(a, b) for k, a, b in zip(keys, lo[i], hi[i])}

    return {name: row(i) for i, name in enumerate(list(labels) + ["macro", "micro"])}


def _metric_groups(per_box: pd.DataFrame, iou_t, iobb_t) -> list[tuple[str, list[str], list[str] | None]]:
    groups = [
        ("iou_acc", [hit_column("iou", t) for t in iou_t], [tkey(t) for t in iou_t]),
        ("iobb_acc", [hit_column("iobb", t) for t in iobb_t], [tkey(t) for t in iobb_t]),
    ]
    for name, col in (("pointing", "pointing_hit"), ("miou", "miou"), ("cnr", "cnr"), ("mean_best_iou", "best_iou")):
        if col in per_box.columns:
            groups.append((name, [col], None))
    return groups


def summarize_boxes(
    per_box: pd.DataFrame,
    *,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS,
    size_bins=SIZE_BINS,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Accuracies (per class, macro, micro), by size, AFP, and patient-level bootstrap CIs."""
    labels = ordered_labels(per_box["label"])
    classes = per_box["label"].map({l: i for i, l in enumerate(labels)}).to_numpy(dtype=np.int64)
    units = unit_codes(per_box)
    n_units = int(units.max()) + 1 if len(units) else 0
    groups = _metric_groups(per_box, iou_thresholds, iobb_thresholds)
    cols = [c for _, cs, _ in groups for c in cs]
    values = per_box[cols].to_numpy(dtype=np.float64) if len(per_box) else np.zeros((0, len(cols)))
    ones = np.ones((1, n_units))
    point = grouped_replicates(values, units, classes, len(labels), ones)
    summary: dict = {"labels": labels}
    slices, start = [], 0
    for name, cs, keys in groups:
        sl = slice(start, start + len(cs))
        start += len(cs)
        slices.append((name, sl, keys))
        summary[name] = _table(point[0][0][:, sl], point[1][0][sl], point[2][0][sl], labels, keys)

    counts = resample_counts(n_units, n_boot, seed) if n_boot > 0 and n_units > 0 else None
    summary["ci"] = _cis(values, units, classes, labels, counts, slices, level)
    summary["bootstrap"] = {
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "unit": "patient" if "patient_id" in per_box.columns and per_box["patient_id"].notna().any() else "image",
        "n_units": n_units,
        "method": "percentile interval over units resampled with replacement (same replicates for every metric)",
    }

    summary["n_boxes_per_label"] = {l: int((per_box["label"] == l).sum()) for l in labels}
    size_metrics = [sl for sl in slices if sl[0] in ("iou_acc", "iobb_acc", "pointing")]
    by_size = {}
    for name, lo_, hi_ in size_bins:
        sel = (per_box["size_bin"] == name).to_numpy()
        entry: dict = {"n_boxes": int(sel.sum()), "area_fraction": [float(lo_), _num(hi_)]}
        if sel.any():
            p = grouped_replicates(values[sel], units[sel], classes[sel], len(labels), ones)
            for name_, sl, keys in size_metrics:
                entry[name_] = _table(p[0][0][:, sl], p[1][0][sl], p[2][0][sl], labels, keys)
            entry["ci"] = _cis(values[sel], units[sel], classes[sel], labels, counts, size_metrics, level)
        by_size[name] = entry
    summary["by_size"] = by_size
    summary["afp"] = average_false_positives(per_box, iobb_thresholds, labels)
    return summary


def _cis(values, units, classes, labels, counts, slices, level) -> dict:
    """{metric: CI table} from the bootstrap replicates `counts` (empty when there are none)."""
    if counts is None:
        return {}
    per_class, macro, micro = grouped_replicates(values, units, classes, len(labels), counts)
    stacked = np.concatenate([per_class, macro[:, None, :], micro[:, None, :]], axis=1)  # [B, C+2, M]
    lo, hi = percentile_ci(stacked, level)
    return {name: _ci_table(lo[:, sl], hi[:, sl], labels, keys) for name, sl, keys in slices}


def average_false_positives(per_box: pd.DataFrame, iobb_thresholds, labels) -> dict | None:
    """Wang et al.'s AFP: false-positive candidate boxes per scored map, per class and over all maps.

    A candidate is a false positive at T when its IoBB with every ground-truth box of its map is <= T.
    Counted once per (image, label) map. None when the policy has no candidate set (maxboxacc).
    """
    cols = [fp_column(t) for t in iobb_thresholds]
    if not all(c in per_box.columns for c in cols) or per_box[cols].isna().all().all():
        return None
    maps = per_box.drop_duplicates(["image_id", "label"])
    keys = [tkey(t) for t in iobb_thresholds]
    out = {}
    for lab in labels:
        m = maps[maps["label"] == lab]
        out[lab] = {k: _num(m[c].mean()) for k, c in zip(keys, cols)}
    out["macro"] = {k: _num(np.nanmean([out[l][k] if out[l][k] is not None else np.nan for l in labels])) for k in keys} if labels else {}
    out["micro"] = {k: _num(maps[c].mean()) for k, c in zip(keys, cols)}
    return out
