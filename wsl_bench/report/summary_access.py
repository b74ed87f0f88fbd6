"""Read values and confidence intervals out of a scoring `summary.json` (schema: docs/scoring.md).

The scorer writes ``summary[metric][LABEL][T]`` with LABEL a box-file finding label or "macro" and
T the threshold as written in the protocol ("0.1", "0.25", ...). Labels are looked up in both the
box-file and the label-file spelling, so "Infiltrate" and "Infiltration" both work.
"""

from __future__ import annotations

import math
from typing import Any

from wsl_bench.labels import box_to_finding, finding_to_box
from wsl_bench.metrics.registry import get_metric

# The thresholds the report's tables list, as the metrics declare them (their default thresholds).
IOU_THRESHOLDS: tuple[str, ...] = get_metric("iou_acc").threshold_keys()
IOBB_THRESHOLDS: tuple[str, ...] = get_metric("iobb_acc").threshold_keys()
HEADLINE_IOU = "0.5"

NAN = float("nan")


def _label_keys(label: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((label, finding_to_box(label), box_to_finding(label))))


def _threshold_keys(t: str | float) -> tuple[str, ...]:
    s = str(t)
    try:
        f = float(s)
    except ValueError:
        return (s,)
    return tuple(dict.fromkeys((s, repr(f), f"{f:g}", f"{f:.2f}", f"{f:.1f}")))


def _get(d: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(d, dict):
        return None
    for k in keys:
        if k in d:
            return d[k]
    return None


def num(x: Any) -> float:
    if x is None:
        return NAN
    if isinstance(x, dict):
        x = _get(x, ("value", "mean", "estimate", "point"))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return NAN
    return v if math.isfinite(v) else NAN


def pair(x: Any) -> tuple[float, float]:
    if isinstance(x, dict):
        lo = _get(x, ("low", "lo", "lower", "ci_low"))
        hi = _get(x, ("high", "hi", "upper", "ci_high"))
        if lo is None and "ci" in x:
            return pair(x["ci"])
        return num(lo), num(hi)
    if isinstance(x, (list, tuple)) and len(x) == 2:
        return num(x[0]), num(x[1])
    return NAN, NAN


def value(summary: dict, metric: str, label: str, t: str | None = None) -> float:
    """summary[metric][label][t] (or summary[metric][label] when t is None); NaN when absent."""
    node = _get(summary.get(metric), _label_keys(label))
    if t is not None:
        node = _get(node, _threshold_keys(t))
    return num(node)


def ci(summary: dict, metric: str, label: str, t: str | None = None) -> tuple[float, float]:
    """The 95 % CI of summary[metric][label][t] as (low, high); (NaN, NaN) when the scorer gave none."""
    for container in (summary.get("ci"), summary.get("cis"), summary.get("confidence_intervals")):
        node = _get(_get(container, (metric,)), _label_keys(label))
        if t is not None:
            node = _get(node, _threshold_keys(t))
        lo, hi = pair(node)
        if not math.isnan(lo):
            return lo, hi
    node = _get(summary.get(f"{metric}_ci"), _label_keys(label))
    if t is not None:
        node = _get(node, _threshold_keys(t))
    return pair(node)


def by_size(summary: dict, size_bin: str, metric: str, label: str, t: str) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of summary["by_size"][bin][metric][label][t]."""
    sub = _get(summary.get("by_size"), (size_bin,))
    if not isinstance(sub, dict):
        return NAN, NAN, NAN
    return (value(sub, metric, label, t), *ci(sub, metric, label, t))


def size_bins(summary: dict) -> list[str]:
    """Size bins from small to large (by each bin's lower area fraction; JSON keys come sorted by name)."""
    bins = summary.get("by_size")
    if not isinstance(bins, dict):
        return []

    def lower(name: str) -> float:
        frac = (bins[name] or {}).get("area_fraction") if isinstance(bins[name], dict) else None
        return float(frac[0]) if isinstance(frac, (list, tuple)) and frac and frac[0] is not None else math.inf

    return sorted(bins, key=lambda b: (lower(b), list(bins).index(b)))
