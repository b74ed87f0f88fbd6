"""Map-level metrics on the normalised, image-size map: pointing game, mIoU over thresholds, CNR, PxAP.

All use the pixel convention of `wsl_bench.localize.maps` (a pixel is "in" a box when its centre is).
"""

from __future__ import annotations

import numpy as np

from wsl_bench.localize.geometry import pixel_span

# AFLoc thresholds its map, min-max normalised to [-1, 1], at 0.1..0.5; on our [0, 1] scale that is
# (t + 1) / 2. This is our reading of AFLoc's released code; configurable as ``miou_thresholds``.
MIOU_THRESHOLDS = (0.55, 0.6, 0.65, 0.7, 0.75)


def pointing_hits(norm: np.ndarray, informative: bool, gt_xyxy: np.ndarray, tolerance: float = 0.0,
                  peak: tuple[int, int] | None = None) -> np.ndarray:
    """Is the map's maximum inside each box (grown by `tolerance` pixels)? bool [m].

    The maximum is the first maximal pixel in row-major order (np.argmax), tested by its centre.
    A constant map has no maximum worth pointing at: every box is a miss. `peak`: that pixel
    (row, col) when already known (`PreparedMap.peak`).
    """
    gt = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    if not informative:
        return np.zeros(len(gt), dtype=bool)
    r, c = np.unravel_index(int(np.argmax(norm)), norm.shape) if peak is None else peak
    px, py = c + 0.5, r + 0.5
    t = float(tolerance)
    return (px >= gt[:, 0] - t) & (px < gt[:, 2] + t) & (py >= gt[:, 1] - t) & (py < gt[:, 3] + t)


def _union_rect(gt: np.ndarray, shape) -> tuple[slice, slice, np.ndarray]:
    """Bounding rectangle of the union of boxes and the union mask inside it."""
    spans = [(pixel_span(b[1], b[3], shape[0]), pixel_span(b[0], b[2], shape[1])) for b in gt]
    ra, rb = min(s[0][0] for s in spans), max(s[0][1] for s in spans)
    ca, cb = min(s[1][0] for s in spans), max(s[1][1] for s in spans)
    sub = np.zeros((rb - ra, cb - ca), dtype=bool)
    for (r0, r1), (c0, c1) in spans:
        sub[r0 - ra : r1 - ra, c0 - ca : c1 - ca] = True
    return slice(ra, rb), slice(ca, cb), sub


def region_stats(norm: np.ndarray, gt_xyxy: np.ndarray, thresholds=MIOU_THRESHOLDS,
                 rect_above=None) -> tuple[float, float]:
    """(mIoU, CNR) of the map against the union of the boxes' masks.

    mIoU: pixel IoU of ``norm > t`` with the box mask, averaged over `thresholds` (AFLoc/cheXlocalize
    style). CNR = (mean_in - mean_out) / sqrt(var_in + var_out) with population variances; NaN when
    both variances are 0 (a constant map, or a map that is exactly the box) or nothing is outside.
    `rect_above`: t -> a rectangle (r0, r1, c0, c1) holding every pixel above t, or None when there
    is none (`PreparedMap.rect_above`); the foreground is then counted inside it only.
    """
    gt = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    rs, cs, mask = _union_rect(gt, norm.shape)
    inside = norm[rs, cs][mask].astype(np.float64)
    n_in = inside.size
    n_all = norm.size
    ious = []
    for t in thresholds:
        t32 = np.float32(t)
        inter = int(np.count_nonzero(inside > t32))
        if rect_above is None:
            fg = int(np.count_nonzero(norm > t32))
        else:
            rect = rect_above(t)
            fg = 0 if rect is None else int(np.count_nonzero(norm[rect[0] : rect[1], rect[2] : rect[3]] > t32))
        union = fg + n_in - inter
        ious.append(inter / union if union > 0 else 0.0)
    miou = float(np.mean(ious)) if ious else float("nan")

    n_out = n_all - n_in
    if n_out == 0:
        return miou, float("nan")
    flat = norm.ravel()
    s_all = float(flat.sum())  # float32 pairwise sums: no float64 copies, no BLAS threads
    q_all = float(np.einsum("i,i->", flat, flat))
    s_in, q_in = float(inside.sum()), float(np.einsum("i,i->", inside, inside))
    return miou, _cnr(n_in, s_in, q_in, n_out, s_all, q_all)


def _cnr(n_in: int, s_in: float, q_in: float, n_out: int, s_all: float, q_all: float) -> float:
    """CNR from pixel counts, sums and sums of squares inside the boxes and over the whole map."""
    m_in = s_in / n_in
    m_out = (s_all - s_in) / n_out
    v_in = max(q_in / n_in - m_in * m_in, 0.0)
    v_out = max((q_all - q_in) / n_out - m_out * m_out, 0.0)
    den = np.sqrt(v_in + v_out)
    if den == 0:  # flat inside and outside: contrast-to-noise is undefined (excluded from means)
        return float("nan")
    return float((m_in - m_out) / den)


def prepared_region_stats(pm, gt_xyxy: np.ndarray, thresholds=MIOU_THRESHOLDS) -> tuple[float, float]:
    """`region_stats` of a `PreparedMap`: the same mIoU (bit for bit), counting the foreground on the
    upsampled map at the thresholds' levels (`PreparedMap.levels`) and only in the rectangles that can
    hold it, normalising only the pixels inside the boxes; CNR from the map's closed-form sums
    (`PreparedMap.sums`, float64) where `region_stats` accumulates the pixels in float32."""
    if pm.bounds is None:
        return region_stats(pm.norm, gt_xyxy, thresholds)
    gt = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    shape = pm.shape
    rs, cs, mask = _union_rect(gt, shape)
    reg = pm.rows(rs.start, rs.stop)[rs, cs]
    inside_u = reg.ravel() if len(gt) == 1 else reg[mask]  # one box: its rectangle is the mask
    n_in = inside_u.size
    n_all = shape[0] * shape[1]
    ts = [float(t) for t in thresholds]
    levels = pm.levels(ts) if ts else np.zeros(0, np.float32)
    ious = []
    for v in levels:
        inter = int(np.count_nonzero(inside_u > v))
        rect = pm.rect_above_level(v)
        if rect is None:
            fg = 0
        else:
            fg = int(np.count_nonzero(pm.rows(rect[0], rect[1])[rect[0] : rect[1], rect[2] : rect[3]] > v))
        union = fg + n_in - inter
        ious.append(inter / union if union > 0 else 0.0)
    miou = float(np.mean(ious)) if ious else float("nan")
    n_out = n_all - n_in
    if n_out == 0:
        return miou, float("nan")
    s_all, q_all = pm.sums()
    inside = pm.normalised(inside_u).astype(np.float64)  # normalize_'s float32 operations
    s_in, q_in = float(inside.sum()), float(np.dot(inside, inside))
    return miou, _cnr(n_in, s_in, q_in, n_out, s_all, q_all)


class PxAPAccumulator:
    """Pixel average precision from score histograms (wsolevaluation's MaskEvaluator, our code).

    `accumulate` adds one map and its boolean mask per class; `compute` gives AP per class in [0,1]:
    thresholds at k/bins, precision/recall of ``norm >= k/bins`` against the mask,
    AP = sum_k (recall_k - recall_{k+1}) * precision_k.
    """

    def __init__(self, bins: int = 100):
        self.bins = int(bins)
        self.pos: dict[str, np.ndarray] = {}
        self.neg: dict[str, np.ndarray] = {}

    def accumulate(self, label: str, norm: np.ndarray, mask: np.ndarray, key: str = "") -> None:
        mask = np.asarray(mask)
        if mask.shape != norm.shape:
            raise ValueError(f"mask {key!r}: shape {mask.shape} differs from the image size {norm.shape}")
        idx = np.minimum((norm * self.bins).astype(np.int64), self.bins - 1).ravel()
        m = mask.astype(bool).ravel()
        pos = np.bincount(idx[m], minlength=self.bins)
        neg = np.bincount(idx[~m], minlength=self.bins)
        self.pos[label] = self.pos.get(label, 0) + pos
        self.neg[label] = self.neg.get(label, 0) + neg

    def compute(self) -> dict[str, float]:
        out = {}
        for label in self.pos:
            tp = np.cumsum(self.pos[label][::-1])[::-1].astype(np.float64)
            fp = np.cumsum(self.neg[label][::-1])[::-1].astype(np.float64)
            if tp[0] == 0:
                out[label] = float("nan")
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
            recall = tp / tp[0]
            out[label] = float(np.sum((recall - np.r_[recall[1:], 0.0]) * precision))
        return out
