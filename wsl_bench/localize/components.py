"""Connected components of thresholded maps, as boxes.

A candidate box is the bounding box of one 8-connected component of ``{map > tau}`` (strictly
greater, as cv2.threshold's THRESH_BINARY used by wsolevaluation), in pixel-edge coordinates
``x0, y0, x1, y1`` with exclusive ends: a component spanning columns c0..c1 gives x0=c0, x1=c1+1.
8-connectivity matches the outer contours of cv2.findContours; holes do not make boxes.

Two exact ways to the same boxes: a map upsampled from a smaller one (`source_shape` given) goes
through `wsl_bench.localize.tiles` (all thresholds in one pass, checked on the actual pixels);
otherwise, or when those checks fail, or when component areas are needed, each threshold is
labelled. Superlevel sets are nested, so thresholds are processed in increasing order and each
labelling pass only looks at the bounding box of the previous foreground (and, given `rect_above`,
only at the tiles that can exceed the threshold).

Labelling without areas traces the outer borders of the components with OpenCV's `findContours`
(Suzuki-Abe border following: foreground 8-connected, holes 4-connected; `RETR_CCOMP` keeps an
island inside a hole as a component of its own); the bounding box of a component's outer border is
the component's bounding box, and its first point is the component's first pixel in row-major
order, so sorting by it gives scipy's label order. Equal to `scipy.ndimage.label` + `find_objects`
(tested on random masks) and an order of magnitude faster (it reads the mask once and walks the
borders only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

try:
    import cv2
except ImportError:  # pragma: no cover - cv2 comes with grad-cam; scipy labels instead
    cv2 = None

from wsl_bench.localize.tiles import tiled_candidates

_EIGHT = np.ones((3, 3), dtype=bool)
# The tiled path costs about as much as labelling ~3 thresholds (measured on 1024² maps from 32²):
# use it for sweeps, label a handful of thresholds (wang2017, threshold) directly.
TILED_MIN_THRESHOLDS = 8


@dataclass(frozen=True)
class Candidates:
    """Candidate boxes of one map: boxes [n,4] (x0,y0,x1,y1), pixel areas [n], threshold index [n]."""

    boxes: np.ndarray
    areas: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def scaled(self, sx: float, sy: float) -> "Candidates":
        """Boxes mapped from a working grid to image pixels (x times sx, y times sy)."""
        if sx == 1 and sy == 1:
            return self
        b = self.boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
        return Candidates(b, self.areas * (sx * sy), self.level)

    def at(self, k: int) -> "Candidates":
        sel = self.level == k
        return Candidates(self.boxes[sel], self.areas[sel], self.level[sel])

    def largest_per_level(self) -> "Candidates":
        """Keep, for each threshold, only the component with the most pixels (first on ties)."""
        if len(self) == 0:
            return self
        order = np.lexsort((-self.areas, self.level))
        lv = self.level[order]
        first = np.r_[True, lv[1:] != lv[:-1]]
        keep = np.sort(order[first])
        return Candidates(self.boxes[keep], self.areas[keep], self.level[keep])


def empty_candidates() -> Candidates:
    return Candidates(np.zeros((0, 4), np.float64), np.zeros(0, np.float64), np.zeros(0, np.int64))


def threshold_candidates(norm: np.ndarray, thresholds, need_area: bool = False, source_shape=None,
                         rect_above=None, source=None) -> Candidates:
    """All component boxes of ``norm > t`` for each t in `thresholds` (must be increasing).

    `source_shape`: the shape of the map `norm` was upsampled from (bilinear, `maps.upsample`), if
    any; it selects the one-pass tiled path, whose boxes equal the per-threshold labelling's.
    `source`: that map itself, when `norm` is exactly ``upsample(source)`` (thresholds then in the
    units of the upsampled map, see `PreparedMap.levels`); the tiled path reads its signs from it.
    `rect_above`: t -> a rectangle (r0, r1, c0, c1) holding every pixel above t, or None
    (`PreparedMap.rect_above`); labelling then reads only that rectangle.
    """
    thr = np.asarray(thresholds, dtype=np.float64).ravel()
    if thr.size > 1 and np.any(np.diff(thr) <= 0):
        raise ValueError(f"thresholds must be strictly increasing, got {thr.tolist()}")
    return level_candidates(norm, thr, need_area, source_shape, rect_above, source)


def level_candidates(norm: np.ndarray, thr: np.ndarray, need_area: bool = False, source_shape=None,
                     rect_above=None, source=None) -> Candidates:
    """`threshold_candidates` for non-decreasing thresholds `thr` (float64, equal ones allowed:
    levels of a map that several thresholds share), unchecked."""
    if source_shape is not None and not need_area and thr.size >= TILED_MIN_THRESHOLDS:
        tiled = tiled_candidates(norm, thr, source_shape, source=source)
        if tiled is not None:
            boxes, level = tiled
            return Candidates(boxes, np.zeros(len(boxes), np.float64), level)
    return labelled_candidates(norm, thr, need_area, rect_above)


def contour_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding boxes (x0, y0, x1, y1) of the 8-connected components of a 2-D bool mask, in the
    order of `scipy.ndimage.label` (first pixel, row-major): [n, 4] int64."""
    m = np.ascontiguousarray(mask).view(np.uint8)
    contours, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 4), np.int64)
    outer = np.flatnonzero(hier[0][:, 3] < 0)  # outer borders; holes have a parent
    if len(outer) <= 8:  # few components: OpenCV's bounding rectangles, ordered by first point
        rects = []
        for i in outer.tolist():
            x, y, w, h = cv2.boundingRect(contours[i])
            fx, fy = contours[i][0, 0]
            rects.append((int(fy), int(fx), x, y, x + w, y + h))
        rects.sort()
        return np.array([r[2:] for r in rects], np.int64)
    pts = [contours[i].reshape(-1, 2) for i in outer.tolist()]
    lens = np.fromiter((len(p) for p in pts), np.int64, len(pts))
    xy = np.concatenate(pts).astype(np.int64)
    st = np.r_[0, np.cumsum(lens)[:-1]]
    lo = np.minimum.reduceat(xy, st, axis=0)
    hi = np.maximum.reduceat(xy, st, axis=0) + 1
    first = xy[st]
    order = np.lexsort((first[:, 0], first[:, 1]))
    return np.concatenate([lo, hi], axis=1)[order]


def labelled_candidates(norm: np.ndarray, thr: np.ndarray, need_area: bool = False, rect_above=None) -> Candidates:
    """The per-threshold path: label ``norm > t`` (8-connected) inside the previous foreground's box
    (and inside `rect_above(t)` when given)."""
    boxes, areas, levels = [], [], []
    r0, c0 = 0, 0
    sub = norm
    for k, t in enumerate(thr):
        if rect_above is not None:
            rect = rect_above(float(t))
            if rect is None:
                break
            ra, rb = max(rect[0] - r0, 0), min(rect[1] - r0, sub.shape[0])
            ca, cb = max(rect[2] - c0, 0), min(rect[3] - c0, sub.shape[1])
            if rb <= ra or cb <= ca:
                break
            sub = sub[ra:rb, ca:cb]
            r0 += ra
            c0 += ca
        mask = sub > np.float32(t)
        if not need_area and cv2 is not None:
            b = contour_boxes(mask)
            if len(b) == 0:
                break
            # the next threshold's foreground lies inside this one's: crop to its box
            ra, ca = int(b[:, 1].min()), int(b[:, 0].min())
            rb, cb = int(b[:, 3].max()), int(b[:, 2].max())
            sub = sub[ra:rb, ca:cb]
            b = (b + np.array([c0, r0, c0, r0])).astype(np.float64)
            r0 += ra
            c0 += ca
            boxes.append(b)
            areas.append(np.zeros(len(b), np.float64))
            levels.append(np.full(len(b), k, np.int64))
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            break  # nested sets: every higher threshold is empty too
        cols = np.flatnonzero(mask.any(axis=0))
        ra, rb, ca, cb = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        mask = mask[ra:rb, ca:cb]
        sub = sub[ra:rb, ca:cb]
        r0 += ra
        c0 += ca
        lab, n = ndi.label(mask, structure=_EIGHT)
        sl = ndi.find_objects(lab)
        b = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in sl], dtype=np.float64)
        b += np.array([c0, r0, c0, r0], dtype=np.float64)
        boxes.append(b)
        if need_area:
            areas.append(np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64))
        else:
            areas.append(np.zeros(n, np.float64))
        levels.append(np.full(n, k, np.int64))
    if not boxes:
        return empty_candidates()
    return Candidates(np.concatenate(boxes), np.concatenate(areas), np.concatenate(levels))
