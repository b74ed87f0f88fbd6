"""Mask Dice and mask IoU: the map thresholded at a fixed tau against a human-outlined pixel mask.

cheXlocalize's segmentation scores: each map is min-max normalised to [0, 1], binarised at tau (0.5 by
default, pixels strictly above it) and compared with the ground-truth mask of its (image, label). The
metric is active only inside `mask_metrics(tau)`: a run turns it on when its score config says
``mask_metrics: true`` (datasets whose masks are human outlines, e.g. SIIM-ACR), so every other run
writes exactly what it wrote before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from wsl_bench.metrics.registry import MapView, Metric, class_means, register_metric, unregister_metric

MASK_TAU = 0.5
# The score config's keys for this metric (a run's score stage reads them; the scorer never sees them).
MASK_KEYS = ("mask_metrics", "mask_tau")
COLUMNS = ("mask_dice", "mask_iou")


def mask_overlap(norm: np.ndarray, mask: np.ndarray, tau: float = MASK_TAU) -> tuple[float, float]:
    """(Dice, IoU) of ``norm > tau`` against the boolean `mask` (same shape); NaN for both when the
    prediction and the mask are both empty (nothing to compare)."""
    pred = np.asarray(norm) > float(tau)
    truth = np.asarray(mask, dtype=bool)
    inter = int(np.count_nonzero(pred & truth))
    n_pred, n_truth = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    union = n_pred + n_truth - inter
    if union == 0:
        return float("nan"), float("nan")
    return 2.0 * inter / (n_pred + n_truth), inter / union


class MaskOverlap(Metric):
    """Dice and IoU of the thresholded map with the pixel mask, per map (repeated on the map's box rows);
    summary: mean over maps per class, macro over classes, micro over maps."""

    name = "mask_overlap"
    title = "Mask Dice"
    kind = "per_class"
    summary_keys = ("mask_dice", "mask_iou")
    needs = ("masks",)
    tau: ClassVar[float] = MASK_TAU

    def columns(self, opts: dict[str, Any]) -> tuple[str, ...]:
        return COLUMNS

    def accumulate(self, view: MapView) -> dict[str, Any]:
        if view.mask is None:
            return {}
        if tuple(np.shape(view.mask)) != tuple(view.norm.shape):
            raise ValueError(f"mask of {view.key!r} is {np.shape(view.mask)[1]}x{np.shape(view.mask)[0]} (w x h) but "
                             f"its image is {view.norm.shape[1]}x{view.norm.shape[0]}; the masks must be at the "
                             f"image's original size")
        dice, iou = mask_overlap(view.norm, view.mask, self.tau)
        return {"mask_dice": dice, "mask_iou": iou}

    def compute(self, per_box: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        maps = per_box.drop_duplicates(["image_id", "label"])  # one value per map, whatever its box count
        return {col: class_means(maps, col) for col in COLUMNS}


@contextlib.contextmanager
def mask_metrics(tau: float = MASK_TAU) -> Iterator[type[MaskOverlap]]:
    """Inside the block, `score()` also writes mask Dice / IoU at threshold `tau` for every map with a mask."""
    tau = float(tau)
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"score.mask_tau must be in [0, 1), got {tau}")
    cls = register_metric(type("MaskOverlap", (MaskOverlap,), {"tau": tau, "__doc__": MaskOverlap.__doc__}))
    try:
        yield cls
    finally:
        unregister_metric(cls.name)


def mask_scope(score_cfg: dict[str, Any]) -> contextlib.AbstractContextManager:
    """The scope a run's score config asks for: `mask_metrics(mask_tau)` when it says ``mask_metrics: true``."""
    if score_cfg.get("mask_metrics", False):
        return mask_metrics(score_cfg.get("mask_tau", MASK_TAU))
    return contextlib.nullcontext()
