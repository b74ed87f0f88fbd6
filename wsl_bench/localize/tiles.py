"""Exact component boxes of an upsampled map at many thresholds in one pass ("monotone tiles").

A map made by bilinear upsampling is, inside each tile between four neighbouring source samples,
monotone along every row and along every column (the interpolant is bilinear). This module uses
that as a *hint* only: every property it relies on is checked on the actual float32 pixels, and
when a check fails it returns None and the caller labels each threshold at full resolution. So the
result is the exact full-resolution answer (8-connected components of ``norm > t``, one box per
component), never an approximation of it.

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
   the union of its rectangles' boxes at that level.

Cost: about six vectorised passes over the map plus work on the band lines, independent of the
number of thresholds; labelling each threshold costs one labelling pass per threshold.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

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


def _band_signs(u: np.ndarray, starts: np.ndarray, thr: np.ndarray) -> np.ndarray | None:
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
            qlo = np.searchsorted(thr, seg.min(axis=0), side="left")
            qhi = np.searchsorted(thr, seg.max(axis=0), side="left")
            if np.any(qlo != qhi):
                return None
        sign[bi, ci] = 0
    return sign


def _cuts(sign: np.ndarray, starts: np.ndarray, n: int):
    """For a [n, m] array of -1/0/+1 along axis 0 grouped into segments (`starts`): per segment and
    column, the index of the one sign flip (n_end = no flip), the sign before and after it.

    Returns (cut [nseg, m], sign_a [nseg, m], sign_b [nseg, m]) or None if a segment flips twice.
    """
    nseg, m = len(starts), sign.shape[1]
    seg_of = np.repeat(np.arange(nseg), np.diff(np.r_[starts, n]))
    idx = np.where(sign != 0, np.arange(n)[:, None], -1)
    ff = np.maximum.accumulate(idx, axis=0)  # last non-zero index so far
    valid = ff >= starts[seg_of][:, None]
    last = np.where(valid, np.take_along_axis(sign, np.maximum(ff, 0), axis=0), 0)  # last non-zero sign in segment
    prev = np.zeros_like(last)
    prev[1:] = last[:-1]
    prev[starts] = 0
    flip = (sign != 0) & (prev != 0) & (sign != prev)
    nflip = np.add.reduceat(flip.astype(np.int32), starts, axis=0)
    if np.any(nflip > 1):
        return None
    ends = np.r_[starts[1:], n]
    cut = np.repeat(ends[:, None], m, axis=1)
    rr, cc = np.nonzero(flip)
    cut[seg_of[rr], cc] = rr
    sign_end = last[ends - 1]  # the sign after the flip, or the only sign
    has = cut < ends[:, None]
    sign_b = np.where(has, sign_end, 0)
    sign_a = np.where(has, -sign_end, sign_end)
    return cut, sign_a, sign_b


def tiled_candidates(norm: np.ndarray, thresholds, source_shape) -> tuple[np.ndarray, np.ndarray] | None:
    """Boxes [n,4] (x0,y0,x1,y1, exclusive ends) and threshold index [n] of every 8-connected
    component of ``norm > float32(t)`` for each t in `thresholds` (increasing); None if the map does
    not have the checked tile structure (the caller then labels each threshold)."""
    u = norm
    h, w = u.shape
    if source_shape is None or len(source_shape) != 2:
        return None
    rb, cb = band_starts(h, int(source_shape[0])), band_starts(w, int(source_shape[1]))
    if rb is None or cb is None:
        return None
    thr = np.asarray(thresholds, dtype=np.float64).astype(np.float32)
    k = len(thr)
    re, ce = np.r_[rb[1:], h], np.r_[cb[1:], w]
    nrb, ncb = len(rb), len(cb)

    # 1. signs of the differences inside each tile column (sv) and tile row (sh)
    sv = _band_signs(u, rb, thr)  # [nrb, w]
    if sv is None:
        return None
    sh = _band_signs(_transpose(u), cb, thr)  # [ncb, h]
    if sh is None:
        return None
    sh = sh.T
    rc = _cuts(sh, rb, h)  # row cuts per (row band, col band)
    cc = _cuts(sv.T, cb, w)  # column cuts per (col band, row band)
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
    q_rect = np.searchsorted(thr, u[ya, xa], side="left")  # thresholds the anchor exceeds

    row_band = np.repeat(np.arange(nrb), re - rb)
    col_band = np.repeat(np.arange(ncb), ce - cb)
    rcut_f, ccut_f, ncp_f = flat(rcut), flat(ccut), flat(ncp)

    def rect_id(r, c):
        t = row_band[r] * ncb + col_band[c]
        return base[t] + (r >= rcut_f[t]) * ncp_f[t] + (c >= ccut_f[t])

    # 3. per-rectangle extents at every level, from the anchor row and column
    def counts(lengths, rows, cols):
        rect = np.repeat(np.arange(n_rect), lengths)
        q = np.searchsorted(thr, u[rows, cols], side="left")
        hist = np.bincount(q * n_rect + rect, minlength=(k + 1) * n_rect).reshape(k + 1, n_rect)
        return np.cumsum(hist[::-1], axis=0)[::-1][1:]  # [k, n_rect]: pixels with q > level

    wid, hgt = c1 - c0, r1 - r0
    off = np.arange(int(wid.sum())) - np.repeat(np.cumsum(wid) - wid, wid)
    nx = counts(wid, np.repeat(ya, wid), np.repeat(c0, wid) + off)
    off = np.arange(int(hgt.sum())) - np.repeat(np.cumsum(hgt) - hgt, hgt)
    ny = counts(hgt, np.repeat(r0, hgt) + off, np.repeat(xa, hgt))

    # 4. pass values on band lines and cut segments (8-adjacent pairs across rectangle borders)
    def line_edges(pr, pc, qr, qc, brk, piece):
        """Pairs p_i-q_i and the diagonals p_i-q_{i+1}, p_{i+1}-q_i along lines given flat, one
        piece after another; `brk` marks where the rectangles on either side may change."""
        vp, vq = u[pr, pc], u[qr, qc]
        wbest = np.minimum(vp, vq)
        diag = np.maximum(np.minimum(vp[:-1], vq[1:]), np.minimum(vp[1:], vq[:-1]))
        same = ~brk[1:]
        wbest[:-1] = np.where(same, np.maximum(wbest[:-1], diag), wbest[:-1])
        st = np.flatnonzero(brk)
        out_a, out_b = [rect_id(pr[st], pc[st])], [rect_id(qr[st], qc[st])]
        out_w = [np.maximum.reduceat(wbest, st)]
        x = np.flatnonzero(brk[1:] & ~piece[1:])  # a border inside a piece: diagonals cross it
        if x.size:
            out_a += [rect_id(pr[x], pc[x]), rect_id(pr[x + 1], pc[x + 1])]
            out_b += [rect_id(qr[x + 1], qc[x + 1]), rect_id(qr[x], qc[x])]
            out_w += [np.minimum(vp[x], vq[x + 1]), np.minimum(vp[x + 1], vq[x])]
        return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_w)

    edges = []
    nl = ncb - 1  # vertical band lines, between column bands j-1 and j
    if nl:
        brk = np.zeros((nl, h), bool)
        brk[:, rb] = True
        for side in (0, 1):
            ii, jj = np.nonzero(rcut[:, side : side + nl] < R1[:, :nl])
            brk[jj, rcut[ii, jj + side]] = True
        piece = np.zeros((nl, h), bool)
        piece[:, 0] = True
        rr = np.tile(np.arange(h), nl)
        cc_ = np.repeat(cb[1:], h)
        edges.append(line_edges(rr, cc_ - 1, rr, cc_, brk.ravel(), piece.ravel()))
    nl = nrb - 1  # horizontal band lines
    if nl:
        brk = np.zeros((nl, w), bool)
        brk[:, cb] = True
        for side in (0, 1):
            ii, jj = np.nonzero(ccut[side : side + nl] < C1[:nl])
            brk[ii, ccut[ii + side, jj]] = True
        piece = np.zeros((nl, w), bool)
        piece[:, 0] = True
        cc_ = np.tile(np.arange(w), nl)
        rr = np.repeat(rb[1:], w)
        edges.append(line_edges(rr - 1, cc_, rr, cc_, brk.ravel(), piece.ravel()))
    ii, jj = np.nonzero(ccut < C1)  # vertical cuts inside tiles
    if ii.size:
        n_i = re[ii] - rb[ii]
        rr = np.repeat(rb[ii], n_i) + (np.arange(n_i.sum()) - np.repeat(np.cumsum(n_i) - n_i, n_i))
        cc_ = np.repeat(ccut[ii, jj], n_i)
        piece = np.zeros(len(rr), bool)
        piece[np.cumsum(n_i) - n_i] = True
        brk = piece | (rr == np.repeat(rcut[ii, jj], n_i))
        edges.append(line_edges(rr, cc_ - 1, rr, cc_, brk, piece))
    ii, jj = np.nonzero(rcut < R1)  # horizontal cuts inside tiles
    if ii.size:
        n_j = ce[jj] - cb[jj]
        cc_ = np.repeat(cb[jj], n_j) + (np.arange(n_j.sum()) - np.repeat(np.cumsum(n_j) - n_j, n_j))
        rr = np.repeat(rcut[ii, jj], n_j)
        piece = np.zeros(len(cc_), bool)
        piece[np.cumsum(n_j) - n_j] = True
        brk = piece | (cc_ == np.repeat(ccut[ii, jj], n_j))
        edges.append(line_edges(rr - 1, cc_, rr, cc_, brk, piece))
    if edges:
        ea, eb, ew = (np.concatenate([e[i] for e in edges]) for i in range(3))
    else:
        ea = eb = np.zeros(0, np.int64)
        ew = np.zeros(0, np.float32)

    # 5. hang each rectangle under a neighbour that joins it whenever it exists
    parent = np.arange(n_rect)
    thr_below = np.r_[-np.inf, thr.astype(np.float64)]  # highest threshold under each anchor level
    for a, b in ((ea, eb), (eb, ea)):
        qa, qb = q_rect[a], q_rect[b]
        up = (qa > 0) & (ew > thr_below[qa]) & ((qb > qa) | ((qb == qa) & (b > a)))
        parent[a[up]] = b[up]
    n_g, group = connected_components(
        coo_matrix((np.ones(n_rect), (np.arange(n_rect), parent)), shape=(n_rect, n_rect)), directed=False
    )
    q_group = np.zeros(n_g, np.int64)
    np.maximum.at(q_group, group, q_rect)

    # group extents per level [k, n_g]: union of member rectangles' extents
    alive = np.flatnonzero(q_rect > 0)
    order = alive[np.argsort(group[alive], kind="stable")]
    gs = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0]) if order.size else np.zeros(0, np.int64)
    g_of = group[order[gs]] if order.size else np.zeros(0, np.int64)
    big = np.int64(1 << 40)
    ext = []
    for n_, lo_, hi_, sgn, fn, empty in ((nx, c0, c1, xs, np.minimum, big), (ny, r0, r1, ys, np.minimum, big)):
        n_o = n_[:, order]
        pos = sgn[order] >= 0
        start = np.where(pos, hi_[order] - n_o, lo_[order])  # first covered column (row)
        stop = np.where(pos, hi_[order], lo_[order] + n_o)
        on = n_o > 0
        e0 = np.full((k, n_g), big)
        e1 = np.full((k, n_g), -big)
        if order.size:
            e0[:, g_of] = np.minimum.reduceat(np.where(on, start, big), gs, axis=1)
            e1[:, g_of] = np.maximum.reduceat(np.where(on, stop, -big), gs, axis=1)
        ext += [e0, e1]
    gx0, gx1, gy0, gy1 = ext

    # 6. merge groups level by level, highest pass first
    ga, gb = group[ea], group[eb]
    cross = ga != gb
    ga, gb, gw = ga[cross], gb[cross], ew[cross]
    gq = np.searchsorted(thr, gw, side="left")
    keep = gq > 0
    ga, gb, gq = np.minimum(ga, gb)[keep], np.maximum(ga, gb)[keep], gq[keep]
    key = ga * n_g + gb
    o = np.lexsort((-gq, key))
    first = np.r_[True, key[o][1:] != key[o][:-1]][: len(o)]
    ga, gb, gq = ga[o][first], gb[o][first], gq[o][first]  # one edge per group pair, its best pass
    o = np.argsort(-gq, kind="stable")
    ga, gb, gq = ga[o].tolist(), gb[o].tolist(), gq[o].tolist()
    root = np.arange(n_g)
    comp = np.full((n_g, k), -1, np.int64)
    e = 0
    for lev in range(k - 1, -1, -1):
        while e < len(gq) and gq[e] > lev:
            a, b = root[ga[e]], root[gb[e]]
            if a != b:
                root[root == b] = a
            e += 1
        comp[:, lev] = np.where(q_group > lev, root, -1)
    g_idx, lev_idx = np.nonzero(comp >= 0)
    if g_idx.size == 0:
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    ckey = lev_idx * n_g + comp[g_idx, lev_idx]
    o = np.argsort(ckey, kind="stable")
    ckey, g_idx, lev_idx = ckey[o], g_idx[o], lev_idx[o]
    s = np.flatnonzero(np.r_[True, ckey[1:] != ckey[:-1]])
    boxes = np.stack([
        np.minimum.reduceat(gx0[lev_idx, g_idx], s),
        np.minimum.reduceat(gy0[lev_idx, g_idx], s),
        np.maximum.reduceat(gx1[lev_idx, g_idx], s),
        np.maximum.reduceat(gy1[lev_idx, g_idx], s),
    ], axis=1).astype(np.float64)
    return boxes, lev_idx[s].astype(np.int64)
