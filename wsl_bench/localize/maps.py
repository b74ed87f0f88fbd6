"""Heatmap preparation: bilinear upsampling to the image grid and min-max normalisation.

Pixel convention (used by every policy and metric): pixel (row r, col c) is the unit square
[c, c+1) x [r, r+1) in image coordinates, so its centre is (c+0.5, r+0.5). Upsampling is bilinear
with ``align_corners=False`` (pixel-centre aligned, like cv2.resize and torch's default), so an
s x s map covers the image exactly, each map cell spanning H/s x W/s image pixels.
"""

from __future__ import annotations

import bisect
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


def _upsample_into(m: np.ndarray, out: np.ndarray) -> None:
    """`upsample` of the float32 map `m` (an enlargement) written into the C-contiguous float32 `out`."""
    with torch.no_grad():
        torch.ops.aten.upsample_bilinear2d.out(torch.from_numpy(m)[None, None], list(out.shape), False,
                                               None, None, out=torch.from_numpy(out)[None, None])


class RowStrips:
    """`upsample(source, size)` computed by bands of rows when they are first read.

    Along an axis whose weights are exact binary fractions (`ExactAxis`), the rows of bands p..q-1
    are rows of the enlargement of source rows p..q (at least two rows; by the same factor, with the
    same column weights): every pixel is computed from the same four values with the same weights and
    the same operations as in the whole map, so they are equal bit for bit (checked once per
    geometry, `_strips_hold`; a strip of one source row is computed differently by torch, hence the
    two). `rows(r0, r1)` returns the map with at least rows r0..r1-1 computed; rows outside the
    computed bands are undefined.
    """

    def __init__(self, source: np.ndarray, size: tuple[int, int], axis: "ExactAxis"):
        self.source = np.ascontiguousarray(source, dtype=np.float32)
        self.axis = axis
        self.k = int(size[0]) // self.source.shape[0]
        self.out = np.empty((int(size[0]), int(size[1])), np.float32)
        self.done = np.zeros(len(axis.starts), bool)
        self._ends = axis.ends.tolist()

    def rows(self, r0: int, r1: int) -> np.ndarray:
        if r1 <= r0:
            return self.out
        p = bisect.bisect_right(self._ends, int(r0))
        q = bisect.bisect_right(self._ends, int(r1) - 1) + 1
        if not self.done[p:q].all():
            self._fill_runs([b for b in range(p, q) if not self.done[b]], 0)
        return self.out

    def all(self) -> np.ndarray:
        return self.rows(0, self.out.shape[0])

    def bands(self, need: np.ndarray, gap: int = 1) -> None:
        """Compute the bands marked in the bool array `need` now, in as few strips as possible: runs
        at most `gap` bands apart are computed as one (a call costs about as much as a band)."""
        self._fill_runs(np.flatnonzero(need & ~self.done).tolist(), gap)

    def _fill_runs(self, todo: list, gap: int) -> None:
        """Compute the bands listed in `todo` (increasing), merging runs at most `gap` bands apart
        (bands computed again get the same values)."""
        if not todo:
            return
        start = prev = todo[0]
        for b in todo[1:]:
            if b - prev - 1 > gap:
                self._fill(start, prev + 1)
                start = b
            prev = b
        self._fill(start, prev + 1)

    def _fill(self, p: int, q: int) -> None:
        """Compute the rows of bands p..q-1 from source rows p..q (from at least two source rows: the
        last band alone takes the row before it too, and its band)."""
        n, k, nb = self.source.shape[0], self.k, len(self.done)
        b = min(q + 1, n)
        a = max(min(p, b - 2), 0)
        r0, r1 = int(self.axis.starts[a]), int(self.axis.ends[q - 1])
        # the strip covers rows k*a..k*b; its rows outside r0..r1 belong to the neighbouring bands
        # and are wrong there (clamped): write in place only if those bands are still to compute
        if (a == 0 or not self.done[a - 1]) and (q >= nb or not self.done[q]):
            _upsample_into(self.source[a:b], self.out[k * a : k * b])
        else:
            tmp = np.empty((k * (b - a), self.out.shape[1]), np.float32)
            _upsample_into(self.source[a:b], tmp)
            self.out[r0:r1] = tmp[r0 - k * a : r1 - k * a]
        self.done[a:q] = True


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


# Largest error of one pixel of `upsample` against the exact bilinear value with its weights, relative
# to the largest |source value|, when the weights are exact binary fractions: a pixel combines 4 source
# values with weights summing to 1, in float32, with a few roundings of 2^-24 of partial results no
# larger than 2 max|s| whatever the order of the operations (fused or not): about 6 * 2^-24 at most
# (measured: 2^-22.5). The bound is 5x that; `_rounding_holds` checks torch against it once.
ROUNDING = 2.0**-19


def _axis_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower source index, upper source index, weight of the upper) per output index, as torch's
    bilinear kernel (align_corners=False) computes them in float32."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, w1.astype(np.float64)


class ExactAxis:
    """The weights of `upsample` along one axis when they are exact binary fractions: per output
    index the lower and upper source index and the upper's weight (i0, i1, w1; w0 = 1 - w1), the
    bands (output indices sharing i0: `starts`, `ends`), and the bands in which every index uses
    source indices (b, b + 1) with strictly increasing weights (`interior`, with the smallest weight
    step in each, `step`); the others are clamped at the border or degenerate."""

    def __init__(self, i0: np.ndarray, i1: np.ndarray, w1: np.ndarray, starts: np.ndarray):
        self.i0, self.i1, self.w1 = i0, i1, w1
        self.w0 = 1.0 - w1
        self.starts = starts
        self.ends = np.append(starts[1:], len(i0))
        interior, step = [], []
        for b, (a, e) in enumerate(zip(starts.tolist(), self.ends.tolist())):
            st = np.diff(w1[a:e])
            if e - a >= 2 and np.all(i0[a:e] == b) and np.all(i1[a:e] == b + 1) and st.min() > 0:
                interior.append(b)
                step.append(float(st.min()))
        self.interior = np.asarray(interior, dtype=np.int64)
        self.step = np.asarray(step, dtype=np.float64)
        self.edge = np.setdiff1d(np.arange(len(starts)), self.interior)
        for a in (self.i0, self.i1, self.w1, self.w0, self.starts, self.ends, self.interior, self.step, self.edge):
            a.setflags(write=False)


@functools.lru_cache(maxsize=64)
def _exact_axis(n_out: int, n_in: int) -> ExactAxis | None:
    """The `ExactAxis` of an enlargement by a power of two (at least 4x), after checking once that
    `upsample` agrees (a ramp enlarged along this axis reproduces the positions exactly); else None."""
    ratio = n_out // n_in if n_in else 0
    if n_in < 2 or ratio * n_in != n_out or ratio < 4 or ratio & (ratio - 1) or n_out >= 2**22:
        return None
    i0, i1, w1 = _axis_weights(n_out, n_in)
    starts = _band_starts(n_out, n_in)
    if starts is None or not np.array_equal(starts, np.flatnonzero(np.r_[True, i0[1:] != i0[:-1]])):
        return None
    ramp = np.repeat(np.arange(n_in, dtype=np.float32)[:, None], 2, axis=1)
    got = upsample(ramp, (n_out, 2))[:, 0].astype(np.float64)
    if not np.array_equal(got, i0 * (1.0 - w1) + i1 * w1):
        return None
    return ExactAxis(i0, i1, w1, starts)


@functools.lru_cache(maxsize=64)
def _rounding_holds(shape_in: tuple[int, int], size: tuple[int, int]) -> bool:
    """Once per geometry: `upsample` of a random map stays well inside ROUNDING of the exact
    bilinear values (float32 arithmetic, not a lower precision)."""
    rows, cols = _exact_axis(size[0], shape_in[0]), _exact_axis(size[1], shape_in[1])
    s = np.random.default_rng(0).standard_normal(shape_in).astype(np.float32)
    ar, ac = _bilinear_weights(size[0], shape_in[0])[::5], _bilinear_weights(size[1], shape_in[1])
    exact = (ar @ s.astype(np.float64)) @ ac.T  # every 5th row
    err = np.abs(upsample(s, size)[::5].astype(np.float64) - exact).max()
    return rows is not None and cols is not None and err <= ROUNDING / 4 * float(np.abs(s).max())


@functools.lru_cache(maxsize=64)
def _strips_hold(shape_in: tuple[int, int], size: tuple[int, int]) -> bool:
    """Once per geometry: `RowStrips` gives the rows of `upsample` bit for bit (a random map, bands
    computed in several runs and orders, in place and through a buffer)."""
    rows = _exact_axis(size[0], shape_in[0])
    if rows is None:
        return False
    s = np.random.default_rng(1).standard_normal(shape_in).astype(np.float32)
    full = upsample(s, size)
    nb = len(rows.starts)
    strips = RowStrips(s, size, rows)
    for p, q in ((nb // 2, nb // 2 + 2), (0, 1), (nb - 1, nb), (1, nb // 2), (nb // 2 + 2, nb - 1)):
        if 0 <= p < q <= nb:
            strips.rows(int(rows.starts[p]), int(rows.ends[q - 1]))
    strips.all()
    return bool(np.array_equal(strips.out, full))


def row_strips(heatmap: np.ndarray, size: tuple[int, int]) -> RowStrips | None:
    """A `RowStrips` of `heatmap` enlarged to `size` where its rows have exact weights (and strips
    are checked to equal the whole map for this geometry), else None."""
    h, w = int(size[0]), int(size[1])
    rows = _exact_axis(h, int(heatmap.shape[0]))
    if rows is None or int(heatmap.shape[1]) > w or not _strips_hold(tuple(int(v) for v in heatmap.shape), (h, w)):
        return None
    return RowStrips(heatmap, (h, w), rows)


def exact_axes(shape_in: tuple[int, int], size: tuple[int, int]) -> tuple[ExactAxis, ExactAxis] | None:
    """(`ExactAxis` of the rows, of the columns) of `upsample` from `shape_in` to `size` when its
    weights are exact binary fractions and torch is checked to compute them as expected (once per
    geometry), else None. Then each pixel is within ROUNDING * max|source| of
    sum_ij w_i(r) w_j(c) source[i, j] with these weights."""
    h, w = int(size[0]), int(size[1])
    rows, cols = _exact_axis(h, int(shape_in[0])), _exact_axis(w, int(shape_in[1]))
    if rows is None or cols is None or not _rounding_holds((int(shape_in[0]), int(shape_in[1])), (h, w)):
        return None
    return rows, cols


@functools.lru_cache(maxsize=64)
def _band_edges(n_out: int, n_in: int):
    """`_band_starts` with the end `n_out` appended (shared between calls)."""
    out = np.append(_band_starts(n_out, n_in), n_out)
    out.setflags(write=False)
    return out


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
    maximum of the source values around the tile. When the enlargement's weights are exact binary
    fractions (`exact_axes`) the band edges are exact and the window is the 2 x 2 the pixels use,
    with a slack of ROUNDING * max|s|. Otherwise the window is one source sample wider on each side
    (band edges computed in float32 by torch may fall a pixel either side of ours) and the slack
    2^-20 * max|s|. The bounds are used to skip pixels that cannot matter (the maximum, the pixels
    above a threshold); every value used is read from the actual map, so results equal those of
    full passes (tested).
    """

    def __init__(self, source: np.ndarray, rows: np.ndarray, cols: np.ndarray, exact: bool = False):
        if exact:  # tile (i, j) uses rows i, min(i+1, n-1) and columns j, min(j+1, n-1)
            lo, hi = source.astype(np.float64), source.astype(np.float64)
            np.minimum(lo[:-1], source[1:], out=lo[:-1])
            np.maximum(hi[:-1], source[1:], out=hi[:-1])
            np.minimum(lo[:, :-1], lo[:, 1:], out=lo[:, :-1])  # column j+1 is read before it is written
            np.maximum(hi[:, :-1], hi[:, 1:], out=hi[:, :-1])
            slack = ROUNDING * max(-float(lo.min()), float(hi.max()))
        else:
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
        self.exact = exact
        self.hi_rows, self.hi_cols = self.hi.max(axis=1), self.hi.max(axis=0)

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
        exact = exact_axes(heatmap.shape, (h, w)) is not None
        return cls(np.asarray(heatmap, dtype=np.float32), _band_edges(h, heatmap.shape[0]),
                   _band_edges(w, heatmap.shape[1]), exact)

    def _tile(self, i: int, j: int) -> tuple[slice, slice]:
        return slice(self.rows[i], self.rows[i + 1]), slice(self.cols[j], self.cols[j + 1])

    def _extreme(self, rows, sign: int):
        """The exact maximum (sign 1) or minimum (sign -1) of the map (numpy float32 scalar); `rows`:
        (r0, r1) -> the map with those rows computed."""
        bound = (self.hi if sign > 0 else -self.lo).ravel()
        n_cols = self.hi.shape[1]

        def read(t):
            rs, cs = self._tile(*divmod(t, n_cols))
            sub = rows(rs.start, rs.stop)[rs, cs]
            return sub.max() if sign > 0 else sub.min()

        first = int(np.argmax(bound))
        best = read(first)
        cand = np.flatnonzero(bound >= sign * float(best))  # the tiles that may hold a more extreme pixel
        # by their bound, most extreme first, until no other tile can
        for t in cand[np.argsort(-bound[cand], kind="stable")].tolist():
            if bound[t] < sign * float(best):
                break
            if t != first:
                v = read(t)
                best = max(best, v) if sign > 0 else min(best, v)
        return best

    def rect(self, tiles: np.ndarray) -> tuple[slice, slice]:
        """The pixel rectangle spanning the tiles marked in the bool array `tiles` (not all False)."""
        rows = np.flatnonzero(tiles.any(axis=1))
        cols = np.flatnonzero(tiles.any(axis=0))
        return (slice(self.rows[rows[0]], self.rows[rows[-1] + 1]),
                slice(self.cols[cols[0]], self.cols[cols[-1] + 1]))

    def extremes(self, u):
        """(min, max) of `u`, the map these bounds describe, equal to (u.min(), u.max()). `u`: the
        map, or (r0, r1) -> the map with those rows computed (`RowStrips.rows`)."""
        rows = u if callable(u) else (lambda r0, r1: u)
        return self._extreme(rows, -1), self._extreme(rows, 1)

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


def _f32_key(x: np.ndarray) -> np.ndarray:
    """Integers in the order of the float32 values `x` (-0.0 and 0.0 share 0)."""
    i = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def _scalar_key(x) -> int:
    i = int(np.float32(x).view(np.int32))
    return i if i >= 0 else -(i & 0x7FFFFFFF)


_NEAR = np.arange(-4, 5)


def _f32_of_key(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.int64)
    return np.where(k < 0, -k + 2**31, k).astype(np.uint32).view(np.float32)


class PreparedMap:
    """A map upsampled to the image and min-max normalised, as `prepare`, with what the scorer reads
    from it found cheaply.

    `norm` is the normalised map of `prepare` (bit for bit). For an enlarged map (`bounds` set) it is
    normalised only when asked for, into a copy: `u` stays the upsampled map. `region(rs, cs)` gives
    the normalised pixels of a rectangle with the same float32 operations, `rect_above(t)` a
    rectangle holding every pixel above t, `peak` the first maximal pixel (row-major), and `sums()`
    the sum and the sum of squares of the whole normalised map.

    Thresholds can also be applied to `u` itself: normalising is non-decreasing in u, so
    ``norm > float32(t)`` exactly where ``u > level(t)``, the largest float32 whose normalised value
    is at most t (`levels`); `rect_above_level(v)` holds every pixel of `u` above v.

    `prepare_map` defers the work of an enlarged map: the extremes are found when first needed, and
    rows are upsampled when first read (`RowStrips`) unless `prefetch` computed them together.
    """

    def __init__(self, u, informative, bounds=None, lo=None, hi=None, source=None):
        # u: the map, or a `RowStrips` computing its rows when first read (enlarged maps only)
        self._strips = u if isinstance(u, RowStrips) else None
        self._u = u.out if self._strips is not None else u
        self._informative = informative
        self._bounds = bounds
        self._lo, self._hi, self._source = lo, hi, source
        self._norm = None if bounds is not None else self._u  # without bounds, u is normalised already
        self._peak = None
        self._window = None
        self._levels = {}
        self._tiles = None  # set while the extremes are still to find

    @classmethod
    def deferred(cls, u, tiles: "TileBounds", source: np.ndarray) -> "PreparedMap":
        """An enlarged map (the array, or a `RowStrips`) whose extremes are found from `tiles` when
        first needed."""
        pm = cls(u, True, None, None, None, np.asarray(source, dtype=np.float32))
        pm._norm = None
        pm._tiles = tiles
        return pm

    def _resolve(self) -> None:
        tiles, self._tiles = self._tiles, None
        lo, hi = tiles.extremes(self._strips.rows if self._strips is not None else self._u)
        if hi > lo:
            self._lo, self._hi, self._bounds = lo, hi, tiles.normalised(lo, hi)
            return
        u = self._strips.all() if self._strips is not None else self._u
        self._informative, self._source, self._strips = normalize_(u, lo, hi), None, None
        self._norm = u

    @property
    def informative(self) -> bool:
        if self._tiles is not None:
            self._resolve()
        return self._informative

    @property
    def bounds(self) -> "NormBounds | None":
        if self._tiles is not None:
            self._resolve()
        return self._bounds

    def prefetch(self, thresholds=None, row_ranges=()) -> None:
        """Compute now, in few strips, the rows that will be read: with `thresholds` (normalised),
        those that can hold the extremes, the peak and the pixels above the lowest threshold, and
        the rows in `row_ranges` ((r0, r1) pairs); without, all rows. A no-op for a map computed
        whole."""
        if self._strips is None:
            return
        tiles = self._tiles if self._tiles is not None else (self._bounds.tiles if self._bounds is not None else None)
        want = None
        if thresholds is not None and tiles is not None:
            want = _rows_wanted(tiles, self._source, self.shape, thresholds, row_ranges)
        if want is None:
            self._strips.all()
        else:
            self._strips.bands(want)

    @property
    def shape(self) -> tuple[int, int]:
        return self._u.shape

    @property
    def source(self) -> np.ndarray | None:
        """The float32 source map of an enlarged map (`u` is exactly ``upsample(source)``)."""
        return self._source

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """The upsampled, not normalised map of an enlarged map with at least rows r0..r1-1 computed
        (read only; other rows may be undefined)."""
        if self.bounds is None:
            raise ValueError("only an enlarged map keeps its upsampled values apart from its normalised ones")
        return self._strips.rows(r0, r1) if self._strips is not None else self._u

    @property
    def u(self) -> np.ndarray:
        """The upsampled, not normalised map of an enlarged map (read only)."""
        return self.rows(0, self._u.shape[0])

    @property
    def norm(self) -> np.ndarray:
        if self._tiles is not None:
            self._resolve()
        if self._norm is None:
            n = self.u - self._lo  # normalize_'s float32 operations, into a copy
            n /= self._hi - self._lo
            self._norm = n
        return self._norm

    def normalised(self, v: np.ndarray) -> np.ndarray:
        """`v` (values of `u`) normalised with the float32 operations of `normalize_`."""
        n = np.asarray(v, dtype=np.float32) - self._lo
        n /= self._hi - self._lo
        return n

    def levels(self, thresholds) -> np.ndarray:
        """float32 [len(thresholds)]: for each t the largest float32 v with normalised value at most
        float32(t), so that ``norm > float32(t)`` iff ``u > v`` (-inf below 0, +inf from 1 on)."""
        if self.bounds is None:
            raise ValueError("levels apply to the upsampled values of an enlarged, informative map")
        ts = np.asarray(thresholds, dtype=np.float64).ravel().tolist()
        known = self._levels
        todo = [t for t in ts if t not in known]
        if todo:
            known.update(zip(todo, self._find_levels(np.asarray(todo, dtype=np.float64)).tolist()))
        return np.array([known[t] for t in ts], dtype=np.float32)

    def _find_levels(self, ts: np.ndarray) -> np.ndarray:
        t32 = ts.astype(np.float32)
        out = np.where(t32 < 0, -np.inf, np.inf).astype(np.float32)
        inner = np.flatnonzero((t32 >= 0) & (t32 < 1))
        if inner.size == 0:
            return out
        t = t32[inner]
        lo, hi = self._lo, self._hi
        k_lo, k_hi = _scalar_key(lo), _scalar_key(hi)
        # the level lies within a few float32 steps of lo + t * (hi - lo): try those first
        guess = _f32_key(float(lo) + t.astype(np.float64) * (float(hi) - float(lo)))
        near = np.minimum(np.maximum(guess[:, None] + _NEAR, k_lo), k_hi)  # [n, 9], increasing
        ok = self.normalised(_f32_of_key(near)) <= t[:, None]  # True...True False...False
        n_ok = np.count_nonzero(ok, axis=1)
        found = ok[:, 0] & ~ok[:, -1]
        a = near[np.arange(len(t)), np.maximum(n_ok - 1, 0)]
        if not found.all():  # bisection over the float32 values in [lo, hi]
            b = a + 1
            a[~found], b[~found] = k_lo, k_hi  # invariant: normalised(a) <= t < normalised(b)
            while True:
                wide = b - a > 1
                if not wide.any():
                    break
                m = (a + b) // 2
                below = self.normalised(_f32_of_key(m)) <= t
                a = np.where(wide & below, m, a)
                b = np.where(wide & ~below, m, b)
        out[inner] = _f32_of_key(a)
        return out

    def rect_above_level(self, v: float) -> tuple[int, int, int, int] | None:
        """A rectangle (r0, r1, c0, c1) holding every pixel of `u` above v (None: no such pixel)."""
        tb = self.bounds.tiles
        rows = np.flatnonzero(tb.hi_rows > float(v))  # tile rows (columns) with a tile bound above v
        if rows.size == 0:
            return None
        cols = np.flatnonzero(tb.hi_cols > float(v))
        return int(tb.rows[rows[0]]), int(tb.rows[rows[-1] + 1]), int(tb.cols[cols[0]]), int(tb.cols[cols[-1] + 1])

    def region(self, rs: slice, cs: slice) -> np.ndarray:
        """The normalised pixels of rows `rs`, columns `cs` (read only). The largest rectangle
        normalised so far is kept, and a rectangle inside it is a view of it."""
        if self._tiles is not None:
            self._resolve()
        if self._norm is not None:
            return self._norm[rs, cs]
        w = self._window
        if w is not None and w[0] <= rs.start and rs.stop <= w[1] and w[2] <= cs.start and cs.stop <= w[3]:
            return w[4][rs.start - w[0] : rs.stop - w[0], cs.start - w[2] : cs.stop - w[2]]
        sub = self.rows(rs.start, rs.stop)[rs, cs] - self._lo  # normalize_'s float32 operations, on a rectangle
        sub /= self._hi - self._lo
        if w is None or sub.size > w[4].size:
            self._window = (rs.start, rs.stop, cs.start, cs.stop, sub)
        return sub

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
        if self._tiles is not None:
            self._resolve()
        if self._source is None:
            flat = self.norm.ravel()
            return float(flat.sum()), float(np.einsum("i,i->", flat, flat))
        h, w = self.shape
        wr, gr = _moments(h, self._source.shape[0])
        wc, gc = _moments(w, self._source.shape[1])
        s = (self._source.astype(np.float64) - float(self._lo)) / (float(self._hi) - float(self._lo))
        return float(wr @ s @ wc), float(np.sum(s * (gr @ s @ gc)))


def _rows_wanted(tb: TileBounds, source: np.ndarray, size, thresholds, row_ranges) -> np.ndarray | None:
    """Bool per tile row: the tile rows that finding the extremes and the peak, and reading the
    pixels above each threshold t (normalised) and the rows in `row_ranges`, will read (a superset
    in all but odd cases; rows read beyond it are computed when read). From the tile bounds and the
    exact bilinear values of the pixels next to each source sample (each within ROUNDING * max|s| of
    the map's): the map's maximum is at least their largest less that, its minimum at most their
    smallest plus that. None without exact weights."""
    axes = exact_axes(source.shape, size)
    if axes is None or not tb.exact:
        return None
    near = []
    for ax in axes:  # the output index just past each source sample (clamped at the far end)
        idx = np.minimum(np.searchsorted(ax.i0 + ax.w1, np.arange(len(ax.starts)), "left"), len(ax.i0) - 1)
        a = np.zeros((len(idx), source.shape[len(near)]))
        a[np.arange(len(idx)), ax.i0[idx]] += ax.w0[idx]
        a[np.arange(len(idx)), ax.i1[idx]] += ax.w1[idx]
        near.append(a)
    vals = near[0] @ source.astype(np.float64) @ near[1].T
    bound = ROUNDING * float(np.abs(source).max())
    max_lb, min_ub = float(vals.max()) - bound, float(vals.min()) + bound
    want = ((tb.hi >= max_lb) | (tb.lo <= min_ub)).any(axis=1)  # the extremes and the peak
    ts = [float(t) for t in thresholds]
    if ts and min(ts) < 1:
        t = max(min(ts), 0.0)
        lo_lb = float(tb.lo.min())
        v = (1 - t) * lo_lb + t * max_lb - 2.0**-20 * max(abs(lo_lb), abs(max_lb))  # at most t's level
        above = np.flatnonzero((tb.hi > v).any(axis=1))
        if above.size:  # the rectangle above a level spans the tile rows between
            want[above[0] : above[-1] + 1] = True
    edges = tb.rows
    for r0, r1 in row_ranges:
        if r1 > r0:
            want[max(np.searchsorted(edges, r0, "right") - 1, 0) : np.searchsorted(edges, r1 - 1, "right")] = True
    return want


def prepare_map(heatmap: np.ndarray, size: tuple[int, int]) -> PreparedMap:
    """`prepare` (the same `norm`, bit for bit) plus the peak, the tile bounds and the sums of an
    enlarged map, found without passes over the whole map (see `PreparedMap`). The rows of an
    enlarged map are upsampled when first read where that is exact (`RowStrips`; `prefetch` computes
    those that will be read at once), and its extremes found when first needed."""
    h, w = int(size[0]), int(size[1])
    m = np.asarray(heatmap)
    tb = TileBounds.of(m, (h, w)) if m.ndim == 2 else None
    if tb is None:
        u = upsample(heatmap, (h, w))
        return PreparedMap(u, normalize_(u))
    strips = row_strips(m, (h, w))
    return PreparedMap.deferred(strips if strips is not None else upsample(m, (h, w)), tb, m)
