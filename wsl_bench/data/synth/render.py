"""Render a chunk of SynthCXR images: warp bank anatomy, draw heart, lesions and findings,
apply acquisition (exposure curve, blur, noise), return uint8 images plus exact lesion masks.

Whole-image work is batched in torch; per-image work touches only crops around lesions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from wsl_bench.data.synth import geometry as G
from wsl_bench.data.synth import lesions as L
from wsl_bench.data.synth.anatomy import AnatomyBank

MIN_LESION_PIXELS = 3
LUNG_AIR_THRESHOLD = 0.15  # air depth above which a pixel is lung field


@dataclass
class LesionRequest:
    """A finding to draw. `cands`: boxes (cx, cy, w, h) in the NIH frame (`geometry.BoxSampler`), the
    first one preferred, mapped into the image through its lung frame; `box` a fixed box (x,y,w,h) px
    drawn exactly there (NIH mirror) instead."""

    label: str
    cands: tuple[tuple[float, float, float, float], ...] = ()
    box: tuple[float, float, float, float] | None = None


@dataclass
class ImageSpec:
    """Everything random about one image, sampled up front so rendering is a pure function."""

    bank_index: int
    seed: int
    rot: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: tuple[float, float] = (0.0, 0.0)
    lo: float = 0.0
    hi: float = 1.25
    gamma: float = 1.0
    noise: float = 0.01
    blur: float = 0.3
    ctr: float = 0.45
    ap: bool = False
    findings: tuple[str, ...] = ()  # image-level findings without boxes (FINDINGS spelling)
    lesions: list[LesionRequest] = field(default_factory=list)
    chest_tube: bool = False
    marker_corner: int = -1  # -1 none, else 0..3 (tl, tr, bl, br)


@dataclass
class DrawnLesion:
    label: str
    y0: int
    x0: int
    mask: np.ndarray  # exact extent (bool crop)
    side: str  # "right" / "left" (patient side)
    zone: str  # "upper" / "middle" / "lower"
    box: tuple[float, float, float, float] | None = None  # fixed box (mirror) else mask bbox

    def bbox(self) -> tuple[float, float, float, float]:
        if self.box is not None:
            return self.box
        ys, xs = np.nonzero(self.mask)
        return (float(self.x0 + xs.min()), float(self.y0 + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))


def _theta(specs: list[ImageSpec]) -> torch.Tensor:
    """affine_grid matrices mapping image coords to anatomy (bank) coords, in [-1,1] units."""
    th = np.zeros((len(specs), 2, 3), dtype=np.float32)
    for i, s in enumerate(specs):
        c, sn = np.cos(s.rot), np.sin(s.rot)
        th[i, :, :2] = np.array([[c, -sn], [sn, c]]) @ np.diag([1 / s.scale[0], 1 / s.scale[1]])
        th[i, :, 2] = [-2 * s.shift[0], -2 * s.shift[1]]
    return torch.from_numpy(th)


class _Frame:
    """Per-image mapping between image pixels and anatomy coordinates (bank [0,1] units)."""

    def __init__(self, theta: np.ndarray, g: int, p: dict, k: int):
        self.A, self.t, self.g = theta[:, :2].astype(np.float64), theta[:, 2].astype(np.float64), g
        self.Ainv = np.linalg.inv(self.A)
        self.cx, self.lw, self.ltop, self.lh = (float(p[n][k]) for n in ("cx", "lw", "ltop", "lh"))
        self.hilum_y = float(p["hilum_y"][k])

    def to_anat(self, xs: np.ndarray, ys: np.ndarray):
        on = np.stack([(2 * xs / self.g) - 1, (2 * ys / self.g) - 1], -1)
        an = on @ self.A.T + self.t
        return (an[..., 0] + 1) / 2, (an[..., 1] + 1) / 2

    def to_img(self, ua, va):
        an = np.stack([np.asarray(ua, float) * 2 - 1, np.asarray(va, float) * 2 - 1], -1)
        on = (an - self.t) @ self.Ainv.T
        return (on[..., 0] + 1) / 2 * self.g, (on[..., 1] + 1) / 2 * self.g

    def midline_x(self, y: float) -> float:
        x, _ = self.to_img(self.cx, (y / self.g))
        return float(x)


def _heart(fr: _Frame, s: ImageSpec, g: int, ref: np.ndarray):
    """The heart filling a box: a fixed box (mirror), the Cardiomegaly request's real-box draw, or a
    normal heart whose width is CTR x lung width, placed as the real Cardiomegaly boxes sit in the lung
    frame (geometry.HEART_*). Returns crop origin and soft mask."""
    fixed = next((r.box for r in s.lesions if r.label == "Cardiomegaly" and r.box is not None), None)
    req = next((r for r in s.lesions if r.label == "Cardiomegaly" and r.cands), None)
    if fixed is not None:
        box = fixed
    elif req is not None:
        box = G.map_box(fr, req.cands[0], ref)
    else:
        W = s.ctr * fr.lw * 1.04 * (1.06 if s.ap else 1.0)
        H = W * G.HEART_ASPECT
        box = G.anat_box(fr, fr.cx + G.HEART_DX * W, fr.ltop + G.HEART_BOTTOM * fr.lh - H / 2, W, H)
    y0, x0, soft = L.heart_in_box(box, g, s.seed)
    return y0, x0, soft


def _side_mask(lung: np.ndarray, mid: float, right: bool) -> np.ndarray:
    xs = np.arange(lung.shape[1]) + 0.5
    return lung & ((xs < mid) if right else (xs >= mid))[None, :]


def _zone(fr: _Frame, y: float, g: int) -> str:
    _, va = fr.to_anat(np.array([fr.g / 2]), np.array([y]))
    rel = (float(va[0]) - fr.ltop) / fr.lh
    return "upper" if rel < 0.38 else ("middle" if rel < 0.68 else "lower")


def _random_point(mask: np.ndarray, rng: np.random.Generator, weight_rows: np.ndarray | None = None):
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return None
    if weight_rows is not None:
        w = weight_rows[idx // mask.shape[1]]
        j = rng.choice(len(idx), p=w / w.sum())
    else:
        j = rng.integers(len(idx))
    y, x = divmod(int(idx[j]), mask.shape[1])
    return x + 0.5, y + 0.5


FIT_IOU = 0.7  # a box is used when the lesion drawn in it, clipped to the anatomy, keeps this IoU with it
NUDGE_BELOW = 0.9  # below this IoU an intrapulmonary lesion's box is also tried moved inside the lungs
INTRAPULMONARY = ("Nodule", "Mass", "Atelectasis", "Infiltrate", "Pneumonia")


def _clip(les: L.Lesion, region: np.ndarray) -> L.Lesion:
    hh, ww = les.profile.shape
    cl = region[les.y0 : les.y0 + hh, les.x0 : les.x0 + ww]
    les.mask = les.mask & cl
    les.profile = les.profile * cl
    if les.extra is not None:
        les.extra = les.extra * cl
    return les


def _ptx_anchor(box, side: np.ndarray, right: bool, g: int):
    """Move a pneumothorax box against the chest wall: its lateral edge onto the lung's lateral edge in
    the box's rows, and below the apex if it sits above it."""
    x, y, w, h = box
    r0, r1 = int(max(0, np.floor(y))), int(min(g, np.ceil(y + h)))
    cols = np.nonzero(side[r0:r1].any(0))[0] if r1 > r0 else np.zeros(0, dtype=np.int64)
    if not len(cols):
        cols = np.nonzero(side.any(0))[0]
        if not len(cols):
            return None
    x = float(cols.min()) if right else float(cols.max() + 1) - w
    c0, c1 = int(max(0, np.floor(x))), int(min(g, np.ceil(x + w)))
    rows = np.nonzero(side[:, c0:c1].any(1))[0] if c1 > c0 else np.zeros(0, dtype=np.int64)
    if len(rows) and y < rows.min():
        y = float(rows.min())
    return (x, y, w, h)


class _PtxShapes:
    """The real pneumothorax masks, indexed by their boxes mirrored onto the image-left side."""

    def __init__(self, shapes: np.ndarray, boxes: np.ndarray):
        self.shapes = shapes
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        w, h = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3), np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
        self.flip = cx > 0.5
        self.key = np.stack([np.where(self.flip, 1 - cx, cx), cy, np.log(w), np.log(h)], 1)

    def pick(self, cand, rng, image_left: bool, k: int = 4) -> np.ndarray:
        """One of the k masks whose boxes are nearest to `cand` (cx, cy, w, h, NIH frame), mirrored to the side."""
        cx, cy, w, h = cand
        q = np.array([min(cx, 1 - cx), cy, np.log(w), np.log(h)])
        d = ((self.key - q) ** 2 * np.array([4.0, 4.0, 1.0, 1.0])).sum(1)
        j = int(np.argpartition(d, k)[rng.integers(k)]) if len(d) > k else int(np.argmin(d))
        shape = self.shapes[j].astype(np.float32) / 255.0
        return shape[:, ::-1] if self.flip[j] == image_left else shape


PLEURAL_BAND = 0.03  # pleural fluid may lie this far (fraction of the side) lateral to the aerated lung
NUDGE_STEPS = (-0.5, -0.25, 0.0, 0.25, 0.5)  # shifts tried, in box widths / heights
NUDGE_COVER = 0.9  # the nudged box is the nearest shift whose lung cover reaches this (none: not moved)


def _pleural_space(side_lung: np.ndarray, right: bool, d: int) -> np.ndarray:
    """The lung of one side plus a band d px wide lateral to it (the pleural space along the chest wall)."""
    out = side_lung.copy()
    for k in range(1, d + 1):
        if right:  # image-left lung: lateral is towards x = 0
            out[:, :-k] |= side_lung[:, k:]
        else:
            out[:, k:] |= side_lung[:, :-k]
    return out


def _nudge(box, lung_sum: np.ndarray, g: int):
    """`box` moved to the nearest shift (NUDGE_STEPS of its size) at which the lung covers NUDGE_COVER of
    it; `box` itself when no shift does. `lung_sum` is the lung's summed-area table [g+1,g+1]."""
    x, y, w, h = box
    st = np.asarray(NUDGE_STEPS)
    dx, dy = np.meshgrid(st * w, st * h)
    dx, dy = dx.ravel(), dy.ravel()
    x0 = np.clip(np.round(x + dx), 0, g).astype(int)
    y0 = np.clip(np.round(y + dy), 0, g).astype(int)
    x1 = np.clip(np.round(x + dx + w), 0, g).astype(int)
    y1 = np.clip(np.round(y + dy + h), 0, g).astype(int)
    inside = lung_sum[y1, x1] - lung_sum[y0, x1] - lung_sum[y1, x0] + lung_sum[y0, x0]
    cover = inside / max(1.0, w * h)
    if cover.max() < NUDGE_COVER:
        return box
    dist = np.hypot(dx / w, dy / h)
    j = int(np.argmin(np.where(cover >= NUDGE_COVER, dist, np.inf)))
    return (x + float(dx[j]), y + float(dy[j]), w, h)


def _draw_at(lab: str, box, lung: np.ndarray, mid: float, g: int, rng, contrast: float, ptx: _PtxShapes | None, cand):
    """Draw `lab` at a mapped box, fitted to the anatomy; returns (lesion, right, target box) or None."""
    x, y, w, h = box
    right = (x + w / 2) < mid
    if lab in INTRAPULMONARY:
        les = L.fit_to_box(L.BOX_DRAWERS[lab](box, g, rng, contrast), box, g)
        return _clip(les, lung), right, box
    bilateral = lab == "Effusion" and x < mid - 0.05 * g and x + w > mid + 0.05 * g
    region = lung if bilateral else _side_mask(lung, mid, right)
    if lab == "Effusion":
        d = max(1, int(round(PLEURAL_BAND * g)))

        def space(field):  # the field of the side(s) plus the pleural band along the lateral wall
            sides = (True, False) if bilateral else (right,)
            out = np.zeros_like(field)
            for side in sides:
                out |= _pleural_space(_side_mask(field, mid, side), side, d)
            return out

        fluid_space = space(lung)
        out = L.effusion_at_base(box, fluid_space, g, rng, right, mid, bilateral, contrast)
        if out is None:
            return None
        les, target = out
        return _clip(les, fluid_space), right, target
    # Pneumothorax
    target = _ptx_anchor(box, region, right, g)
    if target is None:
        return None
    if ptx is None:
        return _clip(L.pneumothorax(target, g, rng, right, contrast), region), right, target
    shape = ptx.pick(cand, rng, image_left=right)
    les = L.pneumothorax_from_shape(target, shape, lambda y0, x0, hh, ww: region[y0 : y0 + hh, x0 : x0 + ww], g, contrast)
    return les, right, target


def _place(req: LesionRequest, lung: np.ndarray, fr: _Frame, g: int, rng, contrast: float, ref: np.ndarray,
           ptx: _PtxShapes | None = None):
    """Draw one box finding: at its fixed box (mirror), or at the first of its candidate boxes that fits
    this chest (mapped through its lung frame; intrapulmonary lesions clipped to the lungs, effusions
    settled on the lung base, pneumothoraces against the chest wall)."""
    lab = req.label
    mid = fr.midline_x(g * 0.5)
    if req.box is not None:
        x, y, w, h = req.box
        right = (x + w / 2) < mid
        if lab == "Effusion":
            les = L.effusion(req.box, g, rng, right, contrast)
        elif lab == "Pneumothorax":
            les = L.pneumothorax(req.box, g, rng, right, contrast)
        else:
            les = L.BOX_DRAWERS[lab](req.box, g, rng, contrast)
        return les, right, req.box
    best = None
    lung_sum = None
    for cand in req.cands:
        box = G.map_box(fr, cand, ref)
        here = None  # (fit, lesion, right) of this candidate
        crosses = box[0] < mid - 0.02 * g and box[0] + box[2] > mid + 0.02 * g  # a bilateral box stays put
        for attempt in range(2 if lab in INTRAPULMONARY and not crosses else 1):
            if attempt == 1:  # the lesion lost part of its box to the lung border: move the box inside
                if lung_sum is None:
                    lung_sum = np.pad(lung.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
                moved = _nudge(box, lung_sum, g)
                if moved == box:
                    break
                box = moved
            out = _draw_at(lab, box, lung, mid, g, rng, contrast, ptx, cand)
            if out is None:
                continue
            les, right, target = out
            if les.mask.sum() < MIN_LESION_PIXELS:
                continue
            fit = L.box_iou(L.mask_bbox(les), target)
            if here is None or fit > here[0]:
                here = (fit, les, right)
            if fit >= NUDGE_BELOW:
                break
        if here is None:
            continue
        if here[0] >= FIT_IOU:
            return here[1], here[2], None
        if best is None or here[0] > best[0]:
            best = here
    if best is not None:
        return best[1], best[2], None
    return _place_fallback(req, lung, mid, g, rng, contrast)


def _place_fallback(req: LesionRequest, lung: np.ndarray, mid: float, g: int, rng, contrast: float):
    """No candidate box fits (a tiny image or a tiny lung): grow the box around a random lung point."""
    lab = req.label
    w0, h0 = (req.cands[0][2] * g, req.cands[0][3] * g) if req.cands else (0.1 * g, 0.1 * g)
    les, right = None, False
    for attempt in range(6):
        grow = 1.4**attempt
        w, h = max(w0, 0.05 * g) * grow, max(h0, 0.05 * g) * grow
        c = _random_point(lung, rng)
        if c is None:
            return None
        right = c[0] < mid
        box = (c[0] - w / 2, c[1] - h / 2, float(w), float(h))
        if lab in ("Effusion", "Pneumothorax"):
            les = L.effusion(box, g, rng, right, contrast) if lab == "Effusion" else L.pneumothorax(box, g, rng, right, contrast)
        else:
            les = L.BOX_DRAWERS[lab](box, g, rng, contrast)
        clipped = _clip(L.Lesion(les.label, les.y0, les.x0, les.profile.copy(), les.mask.copy(), les.amp,
                                 les.suppress_vessels, None if les.extra is None else les.extra.copy()), lung)
        if clipped.mask.sum() >= MIN_LESION_PIXELS:
            return clipped, right, None
    # Lungs too small for a clipped lesion of this size: keep the last one unclipped.
    return (les, right, None) if les is not None and les.mask.sum() > 0 else None


def _crop(a: np.ndarray, sl, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """The part of crop `a` (placed at slices `sl` in the image) under the window (y0, x0, h, w); 0 outside it."""
    out = np.zeros((h, w), dtype=np.float32)
    ay, ax = sl[0].start, sl[1].start
    ys0, xs0 = max(y0, ay), max(x0, ax)
    ys1, xs1 = min(y0 + h, ay + a.shape[0]), min(x0 + w, ax + a.shape[1])
    if ys1 > ys0 and xs1 > xs0:
        out[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0] = a[ys0 - ay : ys1 - ay, xs0 - ax : xs1 - ax]
    return out


def _apply(Lmap, vis, les: L.Lesion):
    hh, ww = les.profile.shape
    sl = (slice(les.y0, les.y0 + hh), slice(les.x0, les.x0 + ww))
    Lmap[sl] += les.amp * les.profile
    if les.extra is not None:
        Lmap[sl] += les.extra
    if les.suppress_vessels:
        vis[sl] *= 1 - les.profile


def _lateral_band(lung: np.ndarray, d: int, right: bool) -> np.ndarray:
    """Lung pixels within d px of the lateral lung border."""
    shifted = np.roll(lung, d if right else -d, axis=1)
    if right:
        shifted[:, :d] = False
    else:
        shifted[:, -d:] = False
    return lung & ~shifted


def _image_findings(s: ImageSpec, Lmap, vis, lung, fr: _Frame, g, rng, contrast):
    """The six findings without boxes, drawn as image-level signatures (no ground-truth box)."""
    lungf = lung.astype(np.float32)
    Y, X = np.mgrid[0:g, 0:g].astype(np.float32) + 0.5 if s.findings else (None, None)
    mid = fr.midline_x(g * 0.5)
    for f in s.findings:
        if f == "Consolidation":
            pt = _random_point(lung, rng, weight_rows=np.linspace(0.2, 1.0, g) ** 2)
            if pt is None:
                continue
            sz = rng.uniform(0.12, 0.22) * g
            les = L.consolidation((pt[0] - sz / 2, pt[1] - sz / 2, sz, sz * 0.8), g, rng, contrast)
            hh, ww = les.profile.shape
            les.profile = les.profile * lungf[les.y0 : les.y0 + hh, les.x0 : les.x0 + ww]
            _apply(Lmap, vis, les)
        elif f == "Edema":
            hx = [fr.to_img(fr.cx + sgn * 0.09, fr.hilum_y) for sgn in (-1, 1)]
            haze = sum(np.exp(-(((X - hxx) / (0.13 * g)) ** 2 + ((Y - hyy) / (0.17 * g)) ** 2)) for hxx, hyy in hx)
            band = _lateral_band(lung, max(2, int(0.06 * g)), True) | _lateral_band(lung, max(2, int(0.06 * g)), False)
            period = max(3.0, 0.03 * g)
            kerley = band * (np.sin(2 * np.pi * Y / period + rng.uniform(0, 6)) > 0.8) * (Y > np.percentile(Y[lung], 60) if lung.any() else 0)
            Lmap += contrast * (0.2 * haze * lungf + 0.12 * kerley)
        elif f == "Emphysema":
            Lmap -= contrast * 0.08 * lungf
            vis *= 1 - 0.5 * lungf
        elif f == "Fibrosis":
            z = L._noise(rng, (g, g), max(0.8, g / 256 * 1.2))
            net = np.exp(-((z / 0.3) ** 2))
            band = _lateral_band(lung, max(3, int(0.12 * g)), True) | _lateral_band(lung, max(3, int(0.12 * g)), False)
            ys = np.nonzero(lung.any(1))[0]
            lower = (Y > (ys.min() + 0.45 * (ys.max() - ys.min()))) if len(ys) else np.zeros_like(lung)
            Lmap += contrast * 0.2 * net * band * lower
        elif f == "Pleural_Thickening":
            right = bool(rng.random() < 0.5)
            d = max(2, int(rng.uniform(0.015, 0.03) * g))
            band = _lateral_band(lung, d, right)
            if rng.random() < 0.5:
                band = band | _lateral_band(lung, d, not right)
            Lmap += contrast * 0.3 * band
        elif f == "Hernia":
            ys = np.nonzero(lung.any(1))[0]
            if not len(ys):
                continue
            hcx, hcy = mid + 0.03 * g, ys.max() - 0.07 * g
            rx, ry = 0.07 * g, 0.055 * g
            e = ((X - hcx) / rx) ** 2 + ((Y - hcy) / ry) ** 2
            inside = L._smooth(1.05, 0.95, e)
            level = hcy - 0.1 * ry
            Lmap += contrast * inside * np.where(Y < level, -0.2, 0.25)


def _confounders(s: ImageSpec, Lmap, lung, fr: _Frame, g, rng, ptx_right: bool | None):
    if s.chest_tube:
        right = ptx_right if ptx_right is not None else bool(rng.random() < 0.5)
        side = _side_mask(lung, fr.midline_x(g / 2), right)
        ys, xs = np.nonzero(side)
        if len(ys):
            lat = xs.min() if right else xs.max()
            t = np.linspace(0, 1, 40)
            px = lat + (1 if right else -1) * (0.03 + 0.1 * t**1.5) * g
            py = ys.max() - t * (ys.max() - ys.min()) * 0.8
            Y, X = np.mgrid[0:g, 0:g].astype(np.float32) + 0.5
            d2 = np.min((X[None] - px[:, None, None]) ** 2 + (Y[None] - py[:, None, None]) ** 2, axis=0)
            r = max(0.8, 0.006 * g)
            Lmap += 0.5 * np.exp(-d2 / (r * r))


_GLYPH_R = np.array([[1, 1, 1, 0], [1, 0, 0, 1], [1, 1, 1, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=np.float32)


def _marker(img: np.ndarray, corner: int, g: int):
    """A bright laterality marker glyph stamped in one corner (intensity space)."""
    cell = max(1, g // 64)
    glyph = np.kron(_GLYPH_R, np.ones((cell, cell), dtype=np.float32))
    h, w = glyph.shape
    m = max(2, g // 32)
    y0 = m if corner in (0, 1) else g - m - h
    x0 = m if corner in (0, 2) else g - m - w
    sl = img[y0 : y0 + h, x0 : x0 + w]
    np.maximum(sl, glyph * 0.97, out=sl)


@dataclass
class RenderResult:
    images: np.ndarray  # [B,G,G] uint8
    lungs: np.ndarray  # [B,G,G] bool, visible lung field
    lesions: list[list[DrawnLesion]]


def _grid(theta: torch.Tensor, g: int, y0: int = 0, x0: int = 0, h: int | None = None, w: int | None = None) -> torch.Tensor:
    """Sampling grid [B,h,w,2] of the image region (y0,x0,h,w) in bank coords (align_corners=False)."""
    h = g if h is None else h
    w = g if w is None else w
    xs = (2 * (torch.arange(x0, x0 + w, dtype=torch.float32) + 0.5) / g) - 1
    ys = (2 * (torch.arange(y0, y0 + h, dtype=torch.float32) + 0.5) / g) - 1
    out = torch.empty(theta.shape[0], h, w, 2)
    for c in range(2):
        a, b, t = (theta[:, c, j].view(-1, 1, 1) for j in range(3))
        torch.add(a * xs.view(1, 1, w), b * ys.view(1, h, 1) + t, out=out[..., c])
    return out


def _sample_crop(bank: AnatomyBank, k: int, theta_i: torch.Tensor, channel: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    grid = _grid(theta_i[None], bank.size, y0, x0, h, w)
    out = F.grid_sample(bank.maps[k : k + 1, channel : channel + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, 0].numpy()


def _ptx_index(bank: AnatomyBank) -> _PtxShapes | None:
    if bank.ptx_shapes is None:
        return None
    idx = getattr(bank, "_ptx_index", None)
    if idx is None:
        idx = _PtxShapes(*bank.ptx_shapes)
        bank._ptx_index = idx
    return idx


def render_chunk(bank: AnatomyBank, specs: list[ImageSpec], contrast: float = 1.0) -> RenderResult:
    """Render `specs` on `bank`. Deterministic: every random draw comes from `spec.seed`."""
    g = bank.size
    B = len(specs)
    theta = _theta(specs)
    idx = torch.as_tensor([s.bank_index for s in specs], dtype=torch.long)
    maps = F.grid_sample(bank.warp_maps[idx], _grid(theta, g), mode="bilinear", padding_mode="border", align_corners=False)
    dens, air = maps[:, 0], maps[:, 1]
    dens_np, air_np = dens.numpy(), air.numpy()
    lungs = air_np > LUNG_AIR_THRESHOLD
    drawn: list[list[DrawnLesion]] = []
    vg = bank.vessel_gain
    ref = np.asarray(bank.params["ref"], dtype=np.float64)
    ptx = _ptx_index(bank)
    for i, s in enumerate(specs):
        rng = np.random.default_rng(s.seed)
        fr = _Frame(theta[i].numpy(), g, bank.params, s.bank_index)
        y0, x0, heart = _heart(fr, s, g, ref)
        hh, ww = heart.shape
        sl = (slice(y0, y0 + hh), slice(x0, x0 + ww))
        # The heart replaces lung air (and its vessels) with soft tissue.
        ves_c = _sample_crop(bank, s.bank_index, theta[i], 3, y0, x0, hh, ww)
        dens_np[i][sl] += heart * (air_np[i][sl] - vg * ves_c + 0.06)
        # The lung field stays the whole lung, the part the heart shadow overlaps included: the real
        # lung masks it is shaped by are drawn that way (and so is the atlas NIH is scored against).
        lung = lungs[i]
        dl = np.zeros((g, g), dtype=np.float32)
        vis = np.ones((g, g), dtype=np.float32)
        out: list[DrawnLesion] = []
        ptx_right = None
        for req in s.lesions:
            if req.label == "Cardiomegaly":
                out.append(DrawnLesion("Cardiomegaly", y0, x0, heart > 0.4, "left", "middle", box=req.box))
                continue
            res = _place(req, lung, fr, g, rng, contrast, ref, ptx)
            if res is None:
                continue
            les, right, box = res
            _apply(dl, vis, les)
            if les.suppress_vessels:  # (behind the heart its soft tissue has already replaced them)
                ph, pw = les.profile.shape
                vc = _sample_crop(bank, s.bank_index, theta[i], 3, les.y0, les.x0, ph, pw)
                behind = _crop(heart, sl, les.y0, les.x0, ph, pw)
                dl[les.y0 : les.y0 + ph, les.x0 : les.x0 + pw] -= vg * vc * les.profile * (1 - behind)
            if req.label == "Pneumothorax":
                ptx_right = right
            ys, xs = np.nonzero(les.mask)
            cy = les.y0 + (ys.mean() if len(ys) else les.profile.shape[0] / 2)
            out.append(DrawnLesion(req.label, les.y0, les.x0, les.mask, "right" if right else "left", _zone(fr, cy, g), box=box))
        if s.findings:
            _image_findings(s, dl, vis, lung, fr, g, rng, contrast)
            if "Emphysema" in s.findings:
                vfull = _sample_crop(bank, s.bank_index, theta[i], 3, 0, 0, g, g)
                vfull[sl] *= 1 - heart
                dl -= 0.5 * vg * vfull * lung
        if s.chest_tube:
            _confounders(s, dl, lung, fr, g, rng, ptx_right)
        if out or s.findings or s.chest_tube:
            dens_np[i] += dl
        drawn.append(out)
    lo = torch.tensor([s.lo for s in specs]).view(-1, 1, 1)
    span = torch.tensor([s.hi - s.lo for s in specs]).view(-1, 1, 1)
    gamma = torch.tensor([s.gamma for s in specs]).view(-1, 1, 1)
    img = dens.sub_(lo).div_(span).clamp_(1e-4, 1.0).pow_(gamma)
    alpha = torch.tensor([s.blur for s in specs]).view(-1, 1, 1)
    blurred = F.avg_pool2d(img[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    img.mul_(1 - alpha).add_(blurred.mul_(alpha))
    gen = torch.Generator().manual_seed(int(specs[0].seed) % (2**63))
    sigma = torch.tensor([s.noise * 255 for s in specs]).view(-1, 1, 1)
    noise = torch.randn(img.shape, generator=gen).mul_(sigma)
    out_np = img.mul_(255).add_(noise).round_().clamp_(0, 255).to(torch.uint8).numpy()
    for i, s in enumerate(specs):
        if s.marker_corner >= 0:
            f = out_np[i].astype(np.float32) / 255
            _marker(f, s.marker_corner, g)
            out_np[i] = np.round(f * 255).astype(np.uint8)
    return RenderResult(out_np, lungs, drawn)
