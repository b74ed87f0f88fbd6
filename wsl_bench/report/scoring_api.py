"""The report's only doors into the scoring code: paired bootstrap tests and the box localizer.

The report never recomputes a metric; where it needs a statistic that is not already in a
`summary.json` (a paired comparison against the reference method) or the predicted boxes of a
heatmap (galleries), it calls `wsl_bench.metrics` / `wsl_bench.localize` here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


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
    a: pd.DataFrame, b: pd.DataFrame, metric: str, threshold: str, label: str,
    patients: dict[str, str] | None, n_boot: int, seed: int,
) -> Comparison:
    """Paired patient bootstrap (`wsl_bench.metrics.paired_bootstrap`) of accuracy at `threshold`.

    `metric` is "iou_acc" or "iobb_acc"; `label` a box finding or "macro" (mean over classes, as the
    tables' macro column). Units are the per-box table's patient ids, else `patients`, else images.
    """
    from wsl_bench.metrics import paired_bootstrap

    if "patient_id" in a.columns and "patient_id" in b.columns:
        patients = None  # the scorer wrote the unit of every box; use it
    res = paired_bootstrap(a, b, metric=f"{metric}@{threshold}", aggregate=label, patients=patients, n_boot=n_boot, seed=seed)
    lo, hi = res["ci"]
    return Comparison(float(res["diff"]), float(lo), float(hi), float(res["p_value"]))


def policy_for(summary: dict, label: str):
    """The box policy the scorer applied to maps of `label` (frozen per-class tau when calibrated),
    rebuilt by the registered policy named in summary.json (`Policy.from_summary`)."""
    from wsl_bench.localize import get_policy

    name = str(summary.get("policy", "wang2017"))
    try:
        policy = get_policy(name)
    except ValueError as exc:
        raise ValueError(f"{exc} (summary.json names it); register that policy before reading these scores") from None
    return policy.from_summary(summary, label)


def predicted_boxes(summary: dict, heatmap: np.ndarray, orig_size: tuple[int, int], label: str) -> list[tuple[float, float, float, float]]:
    """Candidate boxes (x, y, w, h in original pixels) the run's policy draws from one heatmap."""
    from wsl_bench.localize import prepare

    norm, informative = prepare(heatmap, orig_size)
    cand = policy_for(summary, label).candidates(norm, informative)
    return [(float(x0), float(y0), float(x1 - x0), float(y1 - y0)) for x0, y0, x1, y1 in cand.boxes]
