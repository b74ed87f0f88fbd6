"""Heatmap preparation: bilinear upsampling to the image grid and min-max normalisation.

Pixel convention (used by every policy and metric): pixel (row r, col c) is the unit square
[c, c+1) x [r, r+1) in image coordinates, so its centre is (c+0.5, r+0.5). Upsampling is bilinear
with ``align_corners=False`` (pixel-centre aligned, like cv2.resize and torch's default), so an
s x s map covers the image exactly, each map cell spanning H/s x W/s image pixels.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch and BLAS on one thread inside the block. Scoring is many small ops and runs beside
    other jobs: measured on 2 busy cores, 2-thread resizes and BLAS dots were 3-6x slower."""
    from threadpoolctl import threadpool_limits

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(prev)


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to `size` = (height, width); float32, a fresh array.

    Enlarging uses torch's bilinear, align_corners=False; shrinking a map larger than the image
    adds antialiasing so no pixel of the map is skipped.
    """
    h, w = int(size[0]), int(size[1])
    m = np.ascontiguousarray(heatmap, dtype=np.float32)
    if m.shape == (h, w):
        return m.copy()
    shrink = m.shape[0] > h or m.shape[1] > w
    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(m)[None, None], size=(h, w), mode="bilinear",
                            align_corners=False, antialias=shrink)
    return out[0, 0].numpy()


def normalize_(u: np.ndarray, lo=None, hi=None) -> bool:
    """Min-max normalise `u` in place to [0, 1]; return False (and zero `u`) for a constant map.

    A constant map (all-zero included) carries no location: it becomes all zeros, so no pixel
    exceeds any threshold >= 0 and it yields no candidate box and no pointing hit. `lo`, `hi`:
    ``u.min()`` and ``u.max()`` when already known.
    """
    lo = u.min() if lo is None else lo
    hi = u.max() if hi is None else hi
    if not hi > lo:
        u[...] = 0.0
        return False
    u -= lo
    u /= hi - lo  # (hi-lo)/(hi-lo) == 1 exactly, so the maximum maps to exactly 1.0
    return True


def prepare(heatmap: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Upsample to `size` and min-max normalise; returns (map in [0,1], informative?)."""
    u = upsample(heatmap, size)
    return u, normalize_(u)


def working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The grid a threshold sweep runs on: `size` scaled so its longer side is at most `max_side`."""
    h, w = int(size[0]), int(size[1])
    if not max_side or max(h, w) <= max_side:
        return h, w
    f = max_side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


# --- bounds from the source map: where an upsampled map can exceed a level, without reading it ---

# Rounding slack of torch's bilinear kernel, relative to the largest |source value|: each output pixel
# is a convex combination of 4 source values computed in float32 (a few roundings of 2^-24 each).
_UPSAMPLE_SLACK = 2.0**-20
_NORM_SLACK = 2.0**-20  # rounding of (u - lo) / (hi - lo) in float32, on the [0, 1] scale


@functools.lru_cache(maxsize=64)
def _band_starts(n_out: int, n_in: int):
    from wsl_bench.localize.tiles import band_starts

    out = band_starts(n_out, n_in)
    if out is not None:
        out.setflags(write=False)  # shared between calls
    return out


class TileBounds:
    """Per-tile lower and upper bounds of a bilinearly enlarged map, read off its source map.

    A tile is the block of output pixels whose lower source indices (row and column) are equal; each
    of its pixels is a convex combination of 4 source values, so it lies between the minimum and the
    maximum of the source values around the tile. The window is one source sample wider on each
    side than the 2 x 2 the pixel uses (band edges computed in float32 by torch may fall a pixel
    either side of ours) and a rounding slack is added. The bounds are used to skip pixels that
    cannot matter (the maximum, the pixels above a threshold); every value used is read from the
    actual map, so results equal those of full passes (tested).
    """

    def __init__(self, source: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        h_in, w_in = source.shape
        s = np.pad(source, ((1, 2), (1, 2)), mode="edge")
        lo = np.minimum(np.minimum(s[:-3], s[1:-2]), np.minimum(s[2:-1], s[3:]))  # 4-wide windows, rows
        lo = np.minimum(np.minimum(lo[:, :-3], lo[:, 1:-2]), np.minimum(lo[:, 2:-1], lo[:, 3:]))
        hi = np.maximum(np.maximum(s[:-3], s[1:-2]), np.maximum(s[2:-1], s[3:]))
        hi = np.maximum(np.maximum(hi[:, :-3], hi[:, 1:-2]), np.maximum(hi[:, 2:-1], hi[:, 3:]))
        slack = _UPSAMPLE_SLACK * max(abs(float(lo.min())), abs(float(hi.max())))
        self.lo = lo.astype(np.float64) - slack  # [h_in, w_in]: tile (i, j) has lower indices (i, j)
        self.hi = hi.astype(np.float64) + slack
        self.rows, self.cols = rows, cols  # first output row (column) of each tile row (column)
        self.shape = (int(rows[-1]), int(cols[-1]))  # rows/cols carry the end as a last entry

    @classmethod
    def of(cls, heatmap: np.ndarray, size: tuple[int, int]) -> "TileBounds | None":
        """Bounds for `heatmap` enlarged to `size` by `upsample`; None when it is not an enlargement
        by at least 4x along both axes (then there is nothing worth skipping)."""
        h, w = int(size[0]), int(size[1])
        if heatmap.ndim != 2:
            return None
        rb, cb = _band_starts(h, heatmap.shape[0]), _band_starts(w, heatmap.shape[1])
        if rb is None or cb is None or len(rb) != heatmap.shape[0] or len(cb) != heatmap.shape[1]:
            return None
        return cls(np.asarray(heatmap, dtype=np.float32), np.r_[rb, h], np.r_[cb, w])

    def _tile(self, i: int, j: int) -> tuple[slice, slice]:
        return slice(self.rows[i], self.rows[i + 1]), slice(self.cols[j], self.cols[j + 1])

    def _extreme(self, u: np.ndarray, sign: int):
        """The exact maximum (sign 1) or minimum (sign -1) of `u` (numpy float32 scalar)."""
        bound = self.hi if sign > 0 else -self.lo
        i, j = np.unravel_index(int(np.argmax(bound)), bound.shape)
        sub = u[self._tile(i, j)]
        best = sub.max() if sign > 0 else sub.min()
        sub = u[self.rect(bound >= sign * float(best))]  # every tile that may hold a more extreme pixel
        return sub.max() if sign > 0 else sub.min()

    def rect(self, tiles: np.ndarray) -> tuple[slice, slice]:
        """The pixel rectangle spanning the tiles marked in the bool array `tiles` (not all False)."""
        rows = np.flatnonzero(tiles.any(axis=1))
        cols = np.flatnonzero(tiles.any(axis=0))
        return (slice(self.rows[rows[0]], self.rows[rows[-1] + 1]),
                slice(self.cols[cols[0]], self.cols[cols[-1] + 1]))

    def extremes(self, u: np.ndarray):
        """(min, max) of `u`, the map these bounds describe, equal to (u.min(), u.max())."""
        return self._extreme(u, -1), self._extreme(u, 1)

    def normalised(self, lo: float, hi: float) -> "NormBounds":
        """Upper bounds per tile of the map after `normalize_` with these lo, hi (hi > lo)."""
        return NormBounds(self, (self.hi - float(lo)) / (float(hi) - float(lo)) + _NORM_SLACK)


class NormBounds:
    """Upper bounds per tile of a min-max normalised enlarged map: which pixels can exceed a level."""

    def __init__(self, tiles: TileBounds, upper: np.ndarray):
        self.tiles = tiles
        self.upper = upper

    def rect_above(self, t: float) -> tuple[int, int, int, int] | None:
        """Rows [r0, r1) and columns [c0, c1) holding every pixel of the map above `t`; None if none."""
        on = self.upper > float(t)
        rows = np.flatnonzero(on.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(on.any(axis=0))
        tr, tc = self.tiles.rows, self.tiles.cols
        return int(tr[rows[0]]), int(tr[rows[-1] + 1]), int(tc[cols[0]]), int(tc[cols[-1] + 1])

    def first_max(self, region) -> tuple[int, int]:
        """(row, col) of the first maximal pixel (row-major) of the normalised map, whose maximum is
        exactly 1.0, equal to ``np.unravel_index(np.argmax(norm), norm.shape)``. `region(rs, cs)`:
        the normalised pixels of a rectangle."""
        rs, cs = self.tiles.rect(self.upper >= 1.0)  # every pixel equal to the maximum, 1.0, is inside
        sub = region(rs, cs)  # row-major order inside the rectangle is the map's row-major order
        r, c = divmod(int(np.argmax(sub)), sub.shape[1])
        return rs.start + r, cs.start + c


def _bilinear_weights(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights of torch's bilinear enlargement (align_corners=False) in float64."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    a = np.zeros((n_out, n_in))
    np.add.at(a, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(a, (np.arange(n_out), i1), w1)
    return a


@functools.lru_cache(maxsize=64)
def _moments(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Column sums [n_in] and Gram matrix [n_in, n_in] of the bilinear weights along one axis."""
    a = _bilinear_weights(n_out, n_in)
    w, g = a.sum(axis=0), a.T @ a
    w.setflags(write=False)
    g.setflags(write=False)
    return w, g


class PreparedMap:
    """A map upsampled to the image and min-max normalised, as `prepare`, with what the scorer reads
    from it found cheaply.

    `norm` is the normalised map of `prepare` (bit for bit). For an enlarged map (`bounds` set) it is
    normalised only when asked for; `region(rs, cs)` gives the normalised pixels of a rectangle with
    the same float32 operations, `rect_above(t)` a rectangle holding every pixel above t, `peak` the
    first maximal pixel (row-major), and `sums()` the sum and the sum of squares of the whole
    normalised map.
    """

    def __init__(self, u, informative, bounds=None, lo=None, hi=None, source=None):
        self._u = u
        self.informative = informative
        self.bounds = bounds
        self._lo, self._hi, self._source = lo, hi, source
        self._norm = None if bounds is not None else u  # without bounds, u is normalised already
        self._peak = None
        self._window = None

    @property
    def shape(self) -> tuple[int, int]:
        return self._u.shape

    @property
    def norm(self) -> np.ndarray:
        if self._norm is None:
            normalize_(self._u, self._lo, self._hi)
            self._norm = self._u
        return self._norm

    def region(self, rs: slice, cs: slice) -> np.ndarray:
        """The normalised pixels of rows `rs`, columns `cs` (read only). The largest rectangle
        normalised so far is kept, and a rectangle inside it is a view of it."""
        if self._norm is not None:
            return self._norm[rs, cs]
        w = self._window
        if w is not None and w[0] <= rs.start and rs.stop <= w[1] and w[2] <= cs.start and cs.stop <= w[3]:
            return w[4][rs.start - w[0] : rs.stop - w[0], cs.start - w[2] : cs.stop - w[2]]
        sub = self._u[rs, cs] - self._lo  # the float32 operations of normalize_, on a rectangle
        sub /= self._hi - self._lo
        if w is None or sub.size > w[4].size:
            self._window = (rs.start, rs.stop, cs.start, cs.stop, sub)
        return sub

    def warm(self, t: float) -> None:
        """Normalise the rectangle that holds every pixel above `t` once, for the reads that follow."""
        rect = self.rect_above(t) if self.bounds is not None else None
        if rect is not None:
            self.region(slice(rect[0], rect[1]), slice(rect[2], rect[3]))

    @property
    def peak(self) -> tuple[int, int] | None:
        if not self.informative:
            return None
        if self._peak is None:
            if self.bounds is not None:
                self._peak = self.bounds.first_max(self.region)
            else:
                self._peak = tuple(int(v) for v in np.unravel_index(int(np.argmax(self.norm)), self.shape))
        return self._peak

    def rect_above(self, t: float) -> tuple[int, int, int, int] | None:
        """A rectangle holding every pixel of `norm` above `t` (None: no such pixel)."""
        if not self.informative and t >= 0:
            return None
        if self.bounds is None:
            return 0, self.shape[0], 0, self.shape[1]
        return self.bounds.rect_above(t)

    def sums(self) -> tuple[float, float]:
        """(sum, sum of squares) of the normalised map. For an enlarged map they are computed in
        closed form from the source map (the bilinear interpolant's exact sums, in float64: the
        weights along each axis give column sums w and a Gram matrix G, so the sum is w_r' s w_c and
        the sum of squares is <s, G_r s G_c>); otherwise in float32 over the pixels."""
        if self._source is None:
            flat = self.norm.ravel()
            return float(flat.sum()), float(np.einsum("i,i->", flat, flat))
        h, w = self.shape
        wr, gr = _moments(h, self._source.shape[0])
        wc, gc = _moments(w, self._source.shape[1])
        s = (self._source.astype(np.float64) - float(self._lo)) / (float(self._hi) - float(self._lo))
        return float(wr @ s @ wc), float(np.sum(s * (gr @ s @ gc)))


def prepare_map(heatmap: np.ndarray, size: tuple[int, int]) -> PreparedMap:
    """`prepare` (the same `norm`, bit for bit) plus the peak, the tile bounds and the sums of an
    enlarged map, found without passes over the whole map (see `PreparedMap`)."""
    u = upsample(heatmap, size)
    tb = TileBounds.of(np.asarray(heatmap), u.shape)
    if tb is None:
        return PreparedMap(u, normalize_(u))
    lo, hi = tb.extremes(u)
    if not hi > lo:
        return PreparedMap(u, normalize_(u, lo, hi))
    return PreparedMap(u, True, tb.normalised(lo, hi), lo, hi, np.asarray(heatmap, dtype=np.float32))
