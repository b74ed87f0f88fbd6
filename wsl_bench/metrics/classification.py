"""Classification AUROC per finding and mean, with patient-level bootstrap CIs."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from wsl_bench.labels import FINDINGS
from wsl_bench.metrics.bootstrap import percentile_ci, resample_counts


def weighted_auroc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC (ties count 1/2) for each row of `weights` [B, n]: the Mann-Whitney statistic, vectorised."""
    order = np.argsort(scores, kind="stable")
    s, yy, w = scores[order], y[order].astype(bool), weights[:, order]
    # group tied scores so a positive and a negative with equal score count 1/2
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wn = np.where(~yy, w, 0.0)
    wp = np.where(yy, w, 0.0)
    neg_tie = np.add.reduceat(wn, starts, axis=1)
    pos_tie = np.add.reduceat(wp, starts, axis=1)
    neg_below = np.cumsum(neg_tie, axis=1) - neg_tie
    num = (pos_tie * (neg_below + 0.5 * neg_tie)).sum(axis=1)
    den = pos_tie.sum(axis=1) * neg_tie.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def auroc_summary(
    probs: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    patients: Mapping[str, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """AUROC per finding present in both tables (with both classes present), their mean, and CIs."""
    ids = [i for i in probs.index if i in labels.index]
    if not ids:
        raise ValueError("probabilities and labels share no image id; check both tables")
    findings = [f for f in FINDINGS if f in probs.columns and f in labels.columns]
    p = probs.loc[ids, findings].to_numpy(dtype=np.float64)
    y = labels.loc[ids, findings].to_numpy(dtype=np.float64)
    units = pd.factorize(pd.Index([patients.get(i, i) if patients else i for i in ids]), sort=True)[0]
    n_units = int(units.max()) + 1
    unit_counts = resample_counts(n_units, n_boot, seed) if n_boot > 0 else np.zeros((0, n_units))
    point, reps = {}, {}
    for j, f in enumerate(findings):
        ok = np.isfinite(y[:, j])
        yj = y[ok, j] > 0.5
        if yj.all() or not yj.any():
            continue
        point[f] = float(weighted_auroc(p[ok, j], yj, np.ones((1, ok.sum())))[0])
        chunks = [  # 100 replicates at a time: image weights = their patient's count, never all at once
            weighted_auroc(p[ok, j], yj, unit_counts[b : b + 100][:, units[ok]]) for b in range(0, len(unit_counts), 100)
        ]
        reps[f] = np.concatenate(chunks) if chunks else np.zeros(0)
    out: dict = {"per_class": point, "mean": float(np.mean(list(point.values()))) if point else None,
                 "n_images": len(ids), "ci": {}}
    if n_boot > 0 and reps:
        mat = np.stack([reps[f] for f in point], axis=1)
        lo, hi = percentile_ci(mat, level)
        out["ci"] = {f: [float(a), float(b)] for f, a, b in zip(point, lo, hi)}
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no positives of any class
            mean_reps = np.nanmean(mat, axis=1)
        mlo, mhi = percentile_ci(mean_reps[:, None], level)
        out["ci"]["mean"] = [float(mlo[0]), float(mhi[0])]
    return out
