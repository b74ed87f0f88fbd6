"""Exact component boxes of an upsampled map at many thresholds in one pass ("monotone tiles").

A map made by bilinear upsampling is, inside each tile between four neighbouring source samples,
monotone along every row and along every column (the interpolant is bilinear). This module uses
that as a *hint* only: every property it relies on is checked, and when a check fails it returns
None and the caller labels each threshold at full resolution. So the result is the exact
full-resolution answer (8-connected components of ``norm > t``, one box per component), never an
approximation of it.

How, for every threshold t at once:

1. Tiles. Row and column bands follow the upsampling geometry (torch's bilinear, align_corners
   False). A tile is split by at most one row cut and one column cut (a saddle of the bilinear
   patch) into rectangles in which the map is monotone along rows and along columns (checked from
   the signs of the horizontal and vertical differences). In such a rectangle ``norm > t`` is an
   up-set towards one corner (the anchor): connected, non-empty iff the anchor exceeds t, and its
   bounding box is read off the anchor's row and column.
2. Pass values. Two rectangles are joined at t iff some 8-adjacent pixel pair across their border
   has both pixels > t, i.e. iff max over pairs of min(pair) > t. All such pairs lie on band lines
   and cut segments, a few per cent of the pixels.
3. Join tree. Each rectangle whose anchor is matched at its own level by a higher neighbour hangs
   under it (it is joined whenever it exists); the remaining roots (about one per local maximum)
   are merged level by level (Kruskal, highest pass first). The box of a component at a level is
   the union of its rectangles' boxes at that level: per root group and level, the lowest (highest)
   coordinate of an anchor-row or anchor-column pixel above the level, from one scatter of the
   anchor pixels' levels and a running minimum (maximum) over the levels.

The signs of step 1 are read from the pixels (two passes over the map), or, when the source map is
given and the enlargement's weights are exact binary fractions (`maps.exact_axes`), from the source
map: along a column of a tile the exact bilinear value is affine in the row weight, so every
difference has the sign of one number computed from the source; where that number clears the
float32 rounding of the upsampling (`maps.ROUNDING`) by a margin the sign is certain, and the few
band-columns where it does not (near a saddle, flat plateaus, the clamped border bands) are read
from the pixels as before.

Cost: one or two passes over the map for the signs plus work on the band lines and the anchor
rows and columns, independent of the number of thresholds; labelling each threshold costs one
labelling pass per threshold.
"""

from __future__ import annotations

import numpy as np

_MARGIN = 2.000001  # two pixels' rounding, and the float64 error of the source differences
MIN_BAND = 4  # tiles narrower than this (little or no upsampling) are not worth it: label instead


def _transpose(u: np.ndarray) -> np.ndarray:
    try:
        import cv2

        return cv2.transpose(u)  # several times faster than numpy's strided copy
    except ImportError:  # pragma: no cover - cv2 comes with grad-cam
        return np.ascontiguousarray(u.T)


def band_starts(n_out: int, n_in: int) -> np.ndarray | None:
    """First output index of each bilinear band (pixels sharing the lower source index)."""
    if n_in < 2 or n_out < MIN_BAND * n_in:
        return None
    c = np.arange(n_out, dtype=np.float64)
    src = np.maximum((c + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    starts = np.flatnonzero(np.r_[True, lo[1:] != lo[:-1]])
    if np.diff(np.r_[starts, n_out]).min() < 2:
        return None
    return starts


class Levels:
    """``np.searchsorted(thr, v, side="left")`` (the number of thresholds strictly below v) for many
    float32 values v at once, through a table of bins over the thresholds' range: a value's bin
    gives the thresholds certainly below it, and it is compared with the few (usually one) that lie
    in or at the edge of its bin. Exact for any non-decreasing thresholds (ties allowed) and values
    (NaN counts none); several times faster than a binary search per value."""

    def __init__(self, thr: np.ndarray):
        self.thr = np.asarray(thr, dtype=np.float32)
        t = self.thr.astype(np.float64)
        k = len(t)
        self.a = float(t[0]) if k else 0.0
        span = float(t[-1] - t[0]) if k else 0.0
        self.cand = None
        if k == 0 or not (span > 0 and np.isfinite(span)):
            return  # one distinct threshold (or none): binary search
        self.n = n = 2 * k
        self.scale = n / span
        # bin B covers [a + (B-1) w, a + B w) for 1 <= B <= n, B = 0 lies below a and B = n + 1 at
        # or above the last threshold; thresholds within 1e-6 bins of a bin's edges are compared
        # with its values, lower ones counted (the bin of a value is found within 1e-9 bins)
        bm = np.arange(n + 2, dtype=np.float64) - 1
        lo_edge = np.where(bm <= -1, -np.inf, self.a + (bm - 1e-6) / self.scale)
        hi_edge = np.where(bm >= n, np.inf, self.a + (bm + 1 + 1e-6) / self.scale)
        first = np.searchsorted(t, lo_edge, side="left")  # thresholds below the bin: counted
        last = np.searchsorted(t, hi_edge, side="right")
        self.base = first.astype(np.int64)
        c = int((last - first).max())
        if c > 8:
            return
        self.cand = []
        for j in range(max(c, 1)):
            cj = np.full(n + 2, np.inf, np.float32)
            has = first + j < last
            cj[has] = self.thr[(first + j)[has]]
            self.cand.append(cj)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        if self.cand is None:
            return np.searchsorted(self.thr, v, side="left").astype(np.int64)
        x = (v.astype(np.float64) - self.a) * self.scale
        np.fmax(x, -1.0, out=x)  # (NaN, never above a threshold, goes below them all)
        np.fmin(x, self.n, out=x)
        b = x.astype(np.int64)  # floor for x >= 0
        b += 1
        b[x < 0] = 0
        q = self.base[b]
        for c in self.cand:
            q += v > c[b]
        return q


def _band_signs(u: np.ndarray, starts: np.ndarray, levels: Levels) -> np.ndarray | None:
    """Sign (-1/0/+1) of the differences along axis 0 of `u` within each band of rows, per column:
    [n_bands, n_cols]. A band-column whose differences have both signs but whose values all lie
    between the same two thresholds is constant for thresholding (sign 0). None if another has both.
    """
    n = u.shape[0]
    ends = np.r_[starts[1:], n]
    d = np.empty_like(u)
    np.subtract(u[1:], u[:-1], out=d[:-1])
    d[ends - 1] = 0  # no difference across a band border
    lo = np.stack([np.minimum.reduce(d[a:b], axis=0) for a, b in zip(starts, ends)])
    hi = np.stack([np.maximum.reduce(d[a:b], axis=0) for a, b in zip(starts, ends)])
    del d
    sign = (hi > 0).astype(np.int8) - (lo < 0).astype(np.int8)
    bi, ci = np.nonzero((hi > 0) & (lo < 0))
    if bi.size:
        for b in np.unique(bi).tolist():
            cols = ci[bi == b]
            seg = u[starts[b] : ends[b], cols]
            if np.any(levels(seg.min(axis=0)) != levels(seg.max(axis=0))):
                return None
        sign[bi, ci] = 0
    return sign


def _pixel_signs(seg: np.ndarray, levels: Levels) -> np.ndarray | None:
    """`_band_signs` of one band given as rows [n, m]: the sign of the differences of `seg` along
    axis 0 per column; None where one has both signs and its values straddle a threshold."""
    if seg.shape[0] < 2:
        return np.zeros(seg.shape[1], np.int8)
    d = seg[1:] - seg[:-1]
    lo, hi = d.min(axis=0), d.max(axis=0)
    sign = (hi > 0).astype(np.int8) - (lo < 0).astype(np.int8)
    mixed = (hi > 0) & (lo < 0)
    if mixed.any():
        s = seg[:, mixed]
        if np.any(levels(s.min(axis=0)) != levels(s.max(axis=0))):
            return None
        sign[mixed] = 0
    return sign


def _certified_signs(u: np.ndarray, axis: int, along, across, source: np.ndarray, bound: float,
                     levels: Levels) -> np.ndarray | None:
    """`_band_signs` of the differences of `u` along `axis` within its bands, per index of the other
    axis: [n_bands, n_other]. From the source map where the sign is certain (see the module notes),
    from the pixels elsewhere. `along`, `across`: the `maps.ExactAxis` of `axis` and of the other
    axis; `source`: float32 [n_in0, n_in1]; `bound`: the largest rounding error of one pixel."""
    s = source.astype(np.float64)
    if axis == 1:
        s = s.T
    nb = len(along.starts)
    sign = np.zeros((nb, u.shape[1 - axis]), np.int8)
    ib = along.interior
    if ib.size:
        # in band b the exact value is affine in w1 with slope (source row b+1 - row b), interpolated
        # along the other axis: the difference of neighbours is that slope times the weight step
        ds = s[ib + 1] - s[ib]  # [n_interior, n_in_other], exact
        dd = ds[:, across.i0] * across.w0 + ds[:, across.i1] * across.w1  # [n_interior, n_other]
        sign[ib] = (dd > 0).view(np.int8) - (dd < 0).view(np.int8)
        limit = _MARGIN * bound / along.step
        unsure = np.abs(dd) <= limit[:, None]
        bi, oi = np.nonzero(unsure)
        if bi.size:  # read the pixels of these band-lines, grouped by band length
            length = (along.ends - along.starts)[ib][bi]
            for n_len in np.unique(length).tolist():
                sel = length == n_len
                lines = along.starts[ib[bi[sel]]][None, :] + np.arange(n_len)[:, None]  # [n_len, n_sel]
                seg = u[lines, oi[sel][None, :]] if axis == 0 else u[oi[sel][None, :], lines]
                sg = _pixel_signs(seg, levels)
                if sg is None:
                    return None
                sign[ib[bi[sel]], oi[sel]] = sg
    for b in along.edge.tolist():  # clamped or degenerate bands: the pixels decide
        a, e = int(along.starts[b]), int(along.ends[b])
        sg = _pixel_signs(u[a:e] if axis == 0 else _transpose(u[:, a:e]), levels)
        if sg is None:
            return None
        sign[b] = sg
    return sign


def _cuts(sign: np.ndarray, starts: np.ndarray, n: int):
    """For a [n, m] array of -1/0/+1 along axis 0 grouped into segments (`starts`): per segment and
    column, the index of the one sign flip (n_end = no flip), the sign before and after it (zeros
    are ignored: a flip is where the non-zero signs change).

    Returns (cut [nseg, m], sign_a [nseg, m], sign_b [nseg, m]) or None if a segment flips twice.
    """
    ends = np.r_[starts[1:], n]
    idx = np.arange(n, dtype=np.int32)[:, None]
    pos, neg = sign > 0, sign < 0
    pf = np.minimum.reduceat(np.where(pos, idx, np.int32(n)), starts, axis=0)  # first +, per segment
    pl = np.maximum.reduceat(np.where(pos, idx, np.int32(-1)), starts, axis=0)  # last +
    nf = np.minimum.reduceat(np.where(neg, idx, np.int32(n)), starts, axis=0)
    nl = np.maximum.reduceat(np.where(neg, idx, np.int32(-1)), starts, axis=0)
    has_p, has_n = pl >= 0, nl >= 0
    both = has_p & has_n
    up_first = pl < nf  # every + before every -
    if np.any(both & ~up_first & ~(nl < pf)):
        return None  # the signs interleave: two flips or more
    cut = np.where(both, np.where(up_first, nf, pf), ends[:, None]).astype(np.int64)
    first = np.where(both, np.where(up_first, 1, -1), has_p.astype(np.int64) - has_n)
    sign_a = first.astype(np.int8)
    sign_b = np.where(both, -first, 0).astype(np.int8)
    return cut, sign_a, sign_b


def tiled_candidates(norm: np.ndarray, thresholds, source_shape, source=None) -> tuple[np.ndarray, np.ndarray] | None:
    """Boxes [n,4] (x0,y0,x1,y1, exclusive ends) and threshold index [n] of every 8-connected
    component of ``norm > float32(t)`` for each t in `thresholds` (non-decreasing); None if the map
    does not have the checked tile structure (the caller then labels each threshold).

    `source`: the float32 map of which `norm` is exactly ``maps.upsample(source, norm.shape)`` (not
    normalised; thresholds in its units), when known: the signs of step 1 then come from it where
    they are certain (see the module notes)."""
    u = np.ascontiguousarray(norm)
    h, w = u.shape
    if source_shape is None or len(source_shape) != 2:
        return None
    rb, cb = band_starts(h, int(source_shape[0])), band_starts(w, int(source_shape[1]))
    if rb is None or cb is None:
        return None
    thr = np.asarray(thresholds, dtype=np.float64).astype(np.float32)
    k = len(thr)
    if k == 0:
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    levels = Levels(thr)
    re, ce = np.r_[rb[1:], h], np.r_[cb[1:], w]
    nrb, ncb = len(rb), len(cb)

    # 1. signs of the differences inside each tile column (sv) and tile row (sh)
    exact = None
    if source is not None:
        from wsl_bench.localize.maps import ROUNDING, exact_axes

        source = np.asarray(source, dtype=np.float32)
        exact = exact_axes(source.shape, (h, w)) if source.shape == tuple(source_shape) else None
    if exact is not None:
        bound = ROUNDING * float(np.abs(source).max())
        sv = _certified_signs(u, 0, exact[0], exact[1], source, bound, levels)  # [nrb, w]
        if sv is None:
            return None
        sh = _certified_signs(u, 1, exact[1], exact[0], source, bound, levels)  # [ncb, h]
        if sh is None:
            return None
        sh = np.ascontiguousarray(sh.T)
    else:
        sv = _band_signs(u, rb, levels)  # [nrb, w]
        if sv is None:
            return None
        sh = _band_signs(_transpose(u), cb, levels)  # [ncb, h]
        if sh is None:
            return None
        sh = sh.T
    rc = _cuts(sh, rb, h)  # row cuts per (row band, col band)
    cc = _cuts(np.ascontiguousarray(sv.T), cb, w)  # column cuts per (col band, row band)
    if rc is None or cc is None:
        return None
    rcut, xs_a, xs_b = rc  # [nrb, ncb]; x-direction signs of the rows above / below the cut
    ccut, ys_a, ys_b = (a.T for a in cc)  # [nrb, ncb]; y-direction signs left / right of the cut

    # 2. rectangles: tile (i, j) -> up to 2 x 2 parts, ids base + rowpart * ncp + colpart
    R0, R1 = np.broadcast_to(rb[:, None], (nrb, ncb)), np.broadcast_to(re[:, None], (nrb, ncb))
    C0, C1 = np.broadcast_to(cb[None, :], (nrb, ncb)), np.broadcast_to(ce[None, :], (nrb, ncb))
    nrp = 1 + (rcut < R1)
    ncp = 1 + (ccut < C1)
    cnt = (nrp * ncp).ravel()
    base = np.r_[0, np.cumsum(cnt)[:-1]]
    n_rect = int(cnt.sum())
    r0 = np.empty(n_rect, np.int64)
    r1, c0, c1 = np.empty_like(r0), np.empty_like(r0), np.empty_like(r0)
    xs, ys = np.empty(n_rect, np.int8), np.empty(n_rect, np.int8)
    flat = lambda a: np.ascontiguousarray(a).ravel()  # noqa: E731
    for rp in (0, 1):
        for cp in (0, 1):
            sel = ((nrp > rp) & (ncp > cp)).ravel()
            ids = base[sel] + rp * flat(ncp)[sel] + cp
            r0[ids] = flat(rcut if rp else R0)[sel]
            r1[ids] = flat(R1 if rp else rcut)[sel]
            c0[ids] = flat(ccut if cp else C0)[sel]
            c1[ids] = flat(C1 if cp else ccut)[sel]
            xs[ids] = flat(xs_b if rp else xs_a)[sel]
            ys[ids] = flat(ys_b if cp else ys_a)[sel]
    ya = np.where(ys >= 0, r1 - 1, r0)  # anchor: the rectangle's maximum
    xa = np.where(xs >= 0, c1 - 1, c0)
    q_rect = levels(u[ya, xa])  # thresholds the anchor exceeds

    row_band = np.repeat(np.arange(nrb), re - rb)
    col_band = np.repeat(np.arange(ncb), ce - cb)
    rcut_f, ccut_f, ncp_f = flat(rcut), flat(ccut), flat(ncp)

    def rect_id(r, c):
        t = row_band[r] * ncb + col_band[c]
        return base[t] + (r >= rcut_f[t]) * ncp_f[t] + (c >= ccut_f[t])

    # 3. pass values on band lines and cut segments (8-adjacent pairs across rectangle borders)
    def line_edges(vp, vq, brk, piece, coords):
        """Pairs p_i-q_i and the diagonals p_i-q_{i+1}, p_{i+1}-q_i along lines given flat (values
        vp, vq), one piece after another; `brk` marks where the rectangles on either side may
        change; coords(idx) -> (pr, pc, qr, qc) of the pairs at flat positions idx."""
        wbest = np.minimum(vp, vq)
        diag = np.maximum(np.minimum(vp[:-1], vq[1:]), np.minimum(vp[1:], vq[:-1]))
        same = ~brk[1:]
        wbest[:-1] = np.where(same, np.maximum(wbest[:-1], diag), wbest[:-1])
        st = np.flatnonzero(brk)
        pr, pc, qr, qc = coords(st)
        out_a, out_b = [rect_id(pr, pc)], [rect_id(qr, qc)]
        out_w = [np.maximum.reduceat(wbest, st)]
        x = np.flatnonzero(brk[1:] & ~piece[1:])  # a border inside a piece: diagonals cross it
        if x.size:
            pr, pc, qr, qc = coords(x)
            pr1, pc1, qr1, qc1 = coords(x + 1)
            out_a += [rect_id(pr, pc), rect_id(pr1, pc1)]
            out_b += [rect_id(qr1, qc1), rect_id(qr, qc)]
            out_w += [np.minimum(vp[x], vq[x + 1]), np.minimum(vp[x + 1], vq[x])]
        return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_w)

    # the columns on either side of the column-band borders and the outer columns, transposed once:
    # the vertical band lines and most anchor columns read them as rows
    col_pos = np.full(w, -1, np.int64)
    table_cols = np.unique(np.r_[0, cb[1:] - 1, cb[1:], w - 1])
    col_pos[table_cols] = np.arange(len(table_cols))
    col_table = np.ascontiguousarray(u[:, table_cols].T)  # [n_table, h]

    edges = []
    nl = ncb - 1  # vertical band lines, between column bands j-1 and j: [nl, h] laid out flat
    if nl:
        brk = np.zeros((nl, h), bool)
        brk[:, rb] = True
        for side in (0, 1):
            ii, jj = np.nonzero(rcut[:, side : side + nl] < R1[:, :nl])
            brk[jj, rcut[ii, jj + side]] = True
        piece = np.zeros((nl, h), bool)
        piece[:, 0] = True
        lc = cb[1:]

        def vcoords(i, lc=lc):
            r, c = i % h, lc[i // h]
            return r, c - 1, r, c

        vp = col_table[col_pos[lc - 1]].ravel()
        vq = col_table[col_pos[lc]].ravel()
        edges.append(line_edges(vp, vq, brk.ravel(), piece.ravel(), vcoords))
    nl = nrb - 1  # horizontal band lines
    if nl:
        brk = np.zeros((nl, w), bool)
        brk[:, cb] = True
        for side in (0, 1):
            ii, jj = np.nonzero(ccut[side : side + nl] < C1[:nl])
            brk[ii, ccut[ii + side, jj]] = True
        piece = np.zeros((nl, w), bool)
        piece[:, 0] = True
        lr = rb[1:]

        def hcoords(i, lr=lr):
            r, c = lr[i // w], i % w
            return r - 1, c, r, c

        edges.append(line_edges(u[lr - 1].ravel(), u[lr].ravel(), brk.ravel(), piece.ravel(), hcoords))
    ii, jj = np.nonzero(ccut < C1)  # vertical cuts inside tiles
    if ii.size:
        n_i = re[ii] - rb[ii]
        rr = np.repeat(rb[ii], n_i) + (np.arange(n_i.sum()) - np.repeat(np.cumsum(n_i) - n_i, n_i))
        cc_ = np.repeat(ccut[ii, jj], n_i)
        piece = np.zeros(len(rr), bool)
        piece[np.cumsum(n_i) - n_i] = True
        brk = piece | (rr == np.repeat(rcut[ii, jj], n_i))
        edges.append(line_edges(u[rr, cc_ - 1], u[rr, cc_], brk, piece,
                                lambda i, rr=rr, cc_=cc_: (rr[i], cc_[i] - 1, rr[i], cc_[i])))
    ii, jj = np.nonzero(rcut < R1)  # horizontal cuts inside tiles
    if ii.size:
        n_j = ce[jj] - cb[jj]
        cc_ = np.repeat(cb[jj], n_j) + (np.arange(n_j.sum()) - np.repeat(np.cumsum(n_j) - n_j, n_j))
        rr = np.repeat(rcut[ii, jj], n_j)
        piece = np.zeros(len(cc_), bool)
        piece[np.cumsum(n_j) - n_j] = True
        brk = piece | (cc_ == np.repeat(ccut[ii, jj], n_j))
        edges.append(line_edges(u[rr - 1, cc_], u[rr, cc_], brk, piece,
                                lambda i, rr=rr, cc_=cc_: (rr[i] - 1, cc_[i], rr[i], cc_[i])))
    if edges:
        ea, eb, ew = (np.concatenate([e[i] for e in edges]) for i in range(3))
    else:
        ea = eb = np.zeros(0, np.int64)
        ew = np.zeros(0, np.float32)

    # 4. hang each rectangle under a neighbour that joins it whenever it exists; groups = trees
    parent = np.arange(n_rect)
    thr_below = np.r_[-np.inf, thr.astype(np.float64)]  # highest threshold under each anchor level
    for a, b in ((ea, eb), (eb, ea)):
        qa, qb = q_rect[a], q_rect[b]
        up = (qa > 0) & (ew > thr_below[qa]) & ((qb > qa) | ((qb == qa) & (b > a)))
        parent[a[up]] = b[up]
    root = parent  # parents rise in (level, id): a forest; its roots by pointer jumping
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    tops, group = np.unique(root, return_inverse=True)
    n_g = len(tops)
    q_group = q_rect[tops]  # a root is the highest rectangle of its tree

    # 5. group extents per level [n_g, k]: the union of the member rectangles' boxes. Along x, a
    # rectangle rising to the right (xs >= 0) covers columns [first anchor-row pixel above the
    # level, c1): events (group, pixel level, column) for the low end and (group, anchor level, c1)
    # for the high end; mirrored for xs < 0, and the same along y with the anchor column.
    big = np.int64(1 << 40)

    def extents(lo_, hi_, sgn, lengths, vals, pix_pos):
        pos = sgn >= 0
        rect_key = group * (k + 1)
        key = np.repeat(rect_key, lengths) + levels(vals)  # per pixel: (group, level)
        pos_p = np.repeat(pos, lengths)
        lo_ev = np.full(n_g * (k + 1), big)
        hi_ev = np.full(n_g * (k + 1), -big)
        np.minimum.at(lo_ev, key[pos_p], pix_pos[pos_p])
        np.maximum.at(hi_ev, key[~pos_p], pix_pos[~pos_p] + 1)
        rk = rect_key + q_rect
        np.minimum.at(lo_ev, rk[~pos], lo_[~pos])
        np.maximum.at(hi_ev, rk[pos], hi_[pos])
        lo_ev = np.minimum.accumulate(lo_ev.reshape(n_g, k + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]
        hi_ev = np.maximum.accumulate(hi_ev.reshape(n_g, k + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]
        return lo_ev, hi_ev  # [n_g, k]: level l takes the events of levels > l

    def spans(start, lengths):
        """start[i] + 0 .. lengths[i] - 1, one rectangle after another."""
        first = np.cumsum(lengths) - lengths
        return np.repeat(start - first, lengths) + np.arange(int(lengths.sum()))

    wid, hgt = c1 - c0, r1 - r0
    cols = spans(c0, wid)  # anchor rows, read in place
    vals = u.ravel()[np.repeat(ya * w, wid) + cols]
    gx0, gx1 = extents(c0, c1, xs, wid, vals, cols)
    rows = spans(r0, hgt)  # anchor columns, from the column table where it has them
    tpos = col_pos[xa]
    in_table = np.repeat(tpos >= 0, hgt)
    vals = np.empty(len(rows), u.dtype)
    vals[in_table] = col_table.ravel()[(np.repeat(tpos * h, hgt) + rows)[in_table]]
    if not in_table.all():
        vals[~in_table] = u[rows[~in_table], np.repeat(xa, hgt)[~in_table]]
    gy0, gy1 = extents(r0, r1, ys, hgt, vals, rows)

    # 6. merge groups level by level, highest pass first
    ga, gb = group[ea], group[eb]
    cross = ga != gb
    ga, gb, gw = ga[cross], gb[cross], ew[cross]
    gq = levels(gw)
    keep = gq > 0
    ga, gb, gq = np.minimum(ga, gb)[keep], np.maximum(ga, gb)[keep], gq[keep]
    key = ga * n_g + gb
    o = np.lexsort((-gq, key))
    first = np.r_[True, key[o][1:] != key[o][:-1]][: len(o)]
    ga, gb, gq = ga[o][first], gb[o][first], gq[o][first]  # one edge per group pair, its best pass
    o = np.argsort(-gq, kind="stable")
    ga, gb, gq = ga[o].tolist(), gb[o].tolist(), gq[o].tolist()
    # union-find over the few groups; a snapshot of the roots after each level's joins
    root = list(range(n_g))

    def find(x):
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    snaps, snap_level = [list(range(n_g))], [k]  # snapshot i holds for levels below snap_level[i]
    for e in range(len(gq)):
        a, b = find(ga[e]), find(gb[e])
        if a != b:
            root[b] = a
        if e + 1 == len(gq) or gq[e + 1] != gq[e]:
            snaps.append([find(x) for x in range(n_g)])
            snap_level.append(gq[e])
    # level l uses the last snapshot whose joins all pass l (snap_level > l)
    snap_of = np.searchsorted(-np.asarray(snap_level), -np.arange(k), side="left") - 1
    comp = np.asarray(snaps, np.int64)[snap_of]  # [k, n_g]
    alive = q_group[None, :] > np.arange(k)[:, None]  # [k, n_g]
    lev_idx, g_idx = np.nonzero(alive)
    if lev_idx.size == 0:
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    c_idx = comp[lev_idx, g_idx]
    bx0 = np.full((k, n_g), big)
    by0 = np.full((k, n_g), big)
    bx1 = np.full((k, n_g), -big)
    by1 = np.full((k, n_g), -big)
    np.minimum.at(bx0, (lev_idx, c_idx), gx0[g_idx, lev_idx])
    np.minimum.at(by0, (lev_idx, c_idx), gy0[g_idx, lev_idx])
    np.maximum.at(bx1, (lev_idx, c_idx), gx1[g_idx, lev_idx])
    np.maximum.at(by1, (lev_idx, c_idx), gy1[g_idx, lev_idx])
    lv, cc_ = np.nonzero(bx1 > -big)
    boxes = np.stack([bx0[lv, cc_], by0[lv, cc_], bx1[lv, cc_], by1[lv, cc_]], axis=1).astype(np.float64)
    return boxes, lv.astype(np.int64)
