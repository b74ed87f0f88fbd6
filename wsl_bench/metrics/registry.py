"""The metric protocol and the registry every metric registers itself in.

A metric declares the per-box columns it writes to ``per_box.csv`` and the ``summary.json`` keys it
writes; the report reads column and key names from these declarations. The built-in metrics
(`wsl_bench.metrics.builtin_metrics`) are computed by the scorer's own fast code (`builtin = True`);
a new metric plugs in through the protocol, wsolevaluation's accumulate()/compute() style: the
scorer calls `accumulate(view)` once per scored map (its boxes' column values) and `compute(per_box,
opts)` once on the finished per-box table (its summary entries). Adding a metric is one file plus
one `@register_metric`; an outside package adds its own through the entry-point group
``wsl_bench.metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from wsl_bench.plugins import Plugins

ENTRY_POINT_GROUP = "wsl_bench.metrics"
BUILTIN_MODULES: tuple[str, ...] = ("wsl_bench.metrics.builtin_metrics",)

# Kinds of summary entry, which say how the report reads summary[key]:
#   "thresholds": {LABEL|macro|micro: {T: value}} for the thresholds in option `threshold_option`;
#   "per_class":  {LABEL|macro|micro: value} (shown in the report's other-metrics table, macro column);
#   "other":      any JSON (read by its own table).
KINDS = ("thresholds", "per_class", "other")

# per_box.csv columns and summary.json keys the scorer writes whatever the metrics.
SCORER_COLUMNS = frozenset({"image_id", "label", "x", "y", "w", "h", "patient_id", "size_bin", "area_fraction",
                            "missing"})
SCORER_KEYS = frozenset({"labels", "ci", "bootstrap", "n_boxes_per_label", "by_size", "policy", "policy_options",
                         "n_boxes", "n_images", "n_maps_scored", "n_missing", "n_missing_boxes", "missing_keys",
                         "n_maps_without_boxes", "maps_without_boxes_examples", "iou_thresholds", "iobb_thresholds",
                         "hit_rule", "sanity"})


@dataclass
class MapView:
    """One scored map as a metric's `accumulate` sees it.

    `gt`: the map's ground-truth boxes [m, 4] (x0, y0, x1, y1 in image pixels, the rows of
    per_box.csv in order); `candidates`: the policy's candidate boxes [n, 4] in the same units, or
    None when the policy draws none (the maxboxacc sweep); `mask`: the pixel mask when given.
    `norm` is the map upsampled to the image and min-max normalised to [0, 1] (computed when first
    read); `informative` is False for a constant map.
    """

    key: str
    image_id: str
    label: str
    image_size: tuple[int, int]
    gt: np.ndarray
    heatmap: np.ndarray
    candidates: np.ndarray | None
    mask: np.ndarray | None
    prepared: Any  # the scorer's `PreparedMap`

    @property
    def norm(self) -> np.ndarray:
        return self.prepared.norm

    @property
    def informative(self) -> bool:
        return self.prepared.informative


class Metric:
    """A localization metric: the per-box columns and summary.json keys it writes.

    Subclass it, set the class attributes, implement `columns` (if it writes any), `accumulate` and
    `compute`, and decorate the class with `@register_metric`.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # how the report names it
    kind: ClassVar[str] = "per_class"
    summary_keys: ClassVar[tuple[str, ...]] = ()
    threshold_option: ClassVar[str | None] = None  # kind "thresholds": the scoring option holding its thresholds
    default_thresholds: ClassVar[tuple[float, ...]] = ()  # ... and that option's default
    needs: ClassVar[tuple[str, ...]] = ()  # score() inputs it needs to write its keys: "masks", "probs", "labels"
    builtin: ClassVar[bool] = False  # computed by the scorer's own code, not through accumulate/compute
    missing_value: ClassVar[Any] = np.nan  # column value of a box whose map is missing
    dtype: ClassVar[Any] = np.float64  # dtype of its columns

    def columns(self, opts: dict[str, Any]) -> tuple[str, ...]:
        """The per_box.csv columns this metric writes under the scoring options `opts`."""
        return ()

    def accumulate(self, view: MapView) -> dict[str, Any]:
        """Column -> value(s) for the boxes of one map (a scalar, or one value per row of `view.gt`)."""
        return {}

    def compute(self, per_box: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        """summary.json entries (keys from `summary_keys`) from the finished per-box table."""
        return {}

    def threshold_keys(self) -> tuple[str, ...]:
        """The keys of its default thresholds as summary.json writes them ("0.1", "0.25", ...)."""
        from wsl_bench.metrics.aggregate import tkey

        return tuple(tkey(t) for t in self.default_thresholds)


def class_means(per_box: pd.DataFrame, column: str) -> dict[str, float | None]:
    """{LABEL: mean of `column` over the label's boxes, "macro": mean over labels, "micro": over boxes}
    (NaN values skipped; None where nothing is left): a "per_class" summary entry."""
    from wsl_bench.metrics.aggregate import ordered_labels

    def mean(v) -> float | None:
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else None

    out: dict[str, float | None] = {lab: mean(per_box.loc[per_box["label"] == lab, column])
                                    for lab in ordered_labels(per_box["label"])}
    per_label = [v for v in out.values() if v is not None]
    out["macro"] = float(np.mean(per_label)) if per_label else None
    out["micro"] = mean(per_box[column])
    return out


_REGISTRY: dict[str, type[Metric]] = {}
_PLUGINS = Plugins(ENTRY_POINT_GROUP, BUILTIN_MODULES)


def _claimed(opts: dict[str, Any] | None, skip: str) -> tuple[set[str], set[str]]:
    cols, keys = set(SCORER_COLUMNS), set(SCORER_KEYS)
    for name, cls in _REGISTRY.items():
        if name != skip:
            m = cls()
            cols |= set(m.columns(opts)) if opts is not None else set()
            keys |= set(m.summary_keys)
    return cols, keys


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register a Metric subclass under its `name`.

    Its summary keys (and, under the default options, its columns) must be new: a metric never
    overwrites what the scorer or another metric writes."""
    if not (isinstance(cls, type) and issubclass(cls, Metric)) or not cls.name:
        raise TypeError("@register_metric decorates a wsl_bench.metrics.registry.Metric subclass with a name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"metric name {cls.name!r} is registered twice ({existing} and {cls})")
    if cls.kind not in KINDS:
        raise ValueError(f"metric {cls.name!r}: kind must be one of {', '.join(KINDS)}, got {cls.kind!r}")
    if not cls.summary_keys:
        raise ValueError(f"metric {cls.name!r} declares no summary_keys")
    if not cls.builtin:
        from wsl_bench.metrics.evaluator import DEFAULT_OPTIONS

        _PLUGINS.ensure()
        opts = dict(DEFAULT_OPTIONS)
        cols, keys = _claimed(opts, cls.name)
        taken = sorted(set(cls().columns(opts)) & cols) + sorted(set(cls.summary_keys) & keys)
        if taken:
            raise ValueError(f"metric {cls.name!r} would overwrite {', '.join(taken)}, already written by the scorer "
                             f"or another metric; give its columns and summary keys names of their own")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_metric(name: str) -> None:
    """Remove a registered metric (tests and notebooks that register a throwaway one clean up with this)."""
    _REGISTRY.pop(name, None)


def load_entry_points() -> list[str]:
    """Import every module of the `wsl_bench.metrics` entry-point group; returns the load errors (kept)."""
    return _PLUGINS.load_entry_points()



def available_metrics() -> dict[str, Metric]:
    """Every registered metric by name, in registration order (built-ins first)."""
    _PLUGINS.ensure()
    return {name: cls() for name, cls in _REGISTRY.items()}


def get_metric(name: str) -> Metric:
    """The registered metric `name`, or a ValueError listing the registered ones."""
    _PLUGINS.ensure()
    cls = _REGISTRY.get(str(name))
    if cls is None:
        raise ValueError(f"unknown metric {name!r}; registered: {', '.join(_REGISTRY)}")
    return cls()


def plugged_metrics() -> list[Metric]:
    """The registered metrics the scorer runs through accumulate/compute (every one not built in)."""
    return [m for m in available_metrics().values() if not m.builtin]
