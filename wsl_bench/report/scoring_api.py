"""The report's only doors into the scoring room: paired bootstrap tests and the box localizer.

The report never recomputes a metric; where it needs a statistic that is not already in a
`summary.json` (a paired comparison against the reference method) or the predicted boxes of a
heatmap (galleries), it calls `wsl_bench.metrics` / `wsl_bench.localize` here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wsl_bench.report.runs import MethodScores


@dataclass(frozen=True)
class Comparison:
    """A paired bootstrap comparison of one metric, method minus reference."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < 0.05


def paired_comparison(
    a: pd.DataFrame, b: pd.DataFrame, metric: str, threshold: float, label: str | None,
    patients: dict[str, str] | None, n_boot: int, seed: int,
) -> Comparison:
    """Paired patient bootstrap of accuracy at `threshold` (metric "iou" or "iobb"), a minus b.

    `label` restricts to one class (None: macro over classes, as the tables' macro column).
    """
    from wsl_bench.metrics import paired_bootstrap

    if label is not None:
        a = a[a["label"] == label]
        b = b[b["label"] == label]
    res = paired_bootstrap(a, b, metric=f"{metric}_acc@{threshold:g}", patients=patients, n_boot=n_boot, seed=seed)
    get = res.get if isinstance(res, dict) else (lambda k, d=None: getattr(res, k, d))
    ci = get("ci", None) or (get("ci_low", math.nan), get("ci_high", math.nan))
    return Comparison(float(get("diff", math.nan)), float(ci[0]), float(ci[1]), float(get("p_value", math.nan)))


def predicted_boxes(m: MethodScores, heatmap: np.ndarray, orig_size: tuple[int, int], label: str) -> list[tuple[float, float, float, float]]:
    """The candidate boxes the run's localization policy draws from one heatmap (original pixels)."""
    from wsl_bench.localize import boxes_from_heatmap

    policy = str(m.summary.get("policy", "wang2017"))
    options = dict(m.summary.get("policy_options", {}) or {})
    return [tuple(map(float, b)) for b in boxes_from_heatmap(heatmap, orig_size, policy=policy, label=label, **options)]
