"""Box geometry in continuous pixel-edge coordinates (x0, y0, x1, y1), no "+1" convention.

A ground-truth box (x, y, w, h) covers [x, x+w) x [y, y+h); areas are w*h. With this convention a
box shifted by half its width overlaps the original with IoU exactly 1/3.
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(xywh) -> np.ndarray:
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def overlaps(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and IoBB (intersection / area of the *predicted* box) for every (gt, pred) pair: [m, n]."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(gt[:, None, 2], pred[None, :, 2]) - np.maximum(gt[:, None, 0], pred[None, :, 0])
    ih = np.minimum(gt[:, None, 3], pred[None, :, 3]) - np.maximum(gt[:, None, 1], pred[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_g = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[:, None]
    area_p = ((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(inter > 0, inter / (area_g + area_p - inter), 0.0)
        iobb = np.where(inter > 0, inter / area_p, 0.0)
    return iou, iobb


def pixel_span(a0: float, a1: float, n: int) -> tuple[int, int]:
    """Indices [lo, hi) of the pixels whose centres lie in [a0, a1), clipped to [0, n); never empty."""
    lo = max(0, min(n, int(np.ceil(a0 - 0.5))))
    hi = max(0, min(n, int(np.ceil(a1 - 0.5))))
    if hi <= lo:  # a box thinner than a pixel still marks the pixel holding its centre
        lo = max(0, min(n - 1, int(np.floor((a0 + a1) / 2))))
        hi = lo + 1
    return lo, hi


def box_mask(boxes_xyxy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the union of boxes: a pixel is in when its centre is inside a box."""
    m = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4):
        ca, cb = pixel_span(x0, x1, shape[1])
        ra, rb = pixel_span(y0, y1, shape[0])
        m[ra:rb, ca:cb] = True
    return m
