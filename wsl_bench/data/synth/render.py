"""Render a chunk of SynthCXR images: warp bank anatomy, draw heart, lesions and findings,
apply acquisition (exposure curve, blur, noise), return uint8 images plus exact lesion masks.

Whole-image work is batched in torch; per-image work touches only crops around lesions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from wsl_bench.data.synth import lesions as L
from wsl_bench.data.synth.anatomy import AnatomyBank

MIN_LESION_PIXELS = 3
LUNG_AIR_THRESHOLD = 0.15  # air depth above which a pixel is lung field


@dataclass
class LesionRequest:
    """A finding to draw. `size` (w,h) px; `hint` a preferred centre (x,y) px; `box` a fixed box
    (x,y,w,h) px drawn exactly there (NIH mirror) instead of being placed in the lungs."""

    label: str
    size: tuple[float, float] = (0.0, 0.0)
    hint: tuple[float, float] | None = None
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


def _heart(fr: _Frame, s: ImageSpec, g: int):
    """Heart as a tilted ellipse (anatomy coords) whose width is CTR x thorax width, or an
    axis-aligned ellipse filling a fixed box. Returns crop origin and soft mask."""
    fixed = next((r.box for r in s.lesions if r.label == "Cardiomegaly" and r.box is not None), None)
    if fixed is not None:
        x, y, w, h = fixed
        y0, x0, u, v = L.box_grid(fixed, g, margin=0.1)
        rho = np.sqrt(u * u + v * v)
        return y0, x0, (L._smooth(1.06, 0.94, rho) * (0.8 + 0.2 * L._smooth(1.0, 0.3, rho))).astype(np.float32)
    W = s.ctr * fr.lw * 1.04 * (1.06 if s.ap else 1.0)
    phi = 0.4
    a, b = 1.0, 0.72
    ext = 2 * np.sqrt((a * np.cos(phi)) ** 2 + (b * np.sin(phi)) ** 2)
    a, b = a * W / ext, b * W / ext
    hcx = fr.cx + 0.18 * W
    hcy = fr.ltop + fr.lh - b * 1.05
    r = 1.12 * a / 0.95  # covers the lobulated outline
    corners_u = np.array([hcx - r, hcx + r, hcx - r, hcx + r])
    corners_v = np.array([hcy - r, hcy - r, hcy + r, hcy + r])
    cxs, cys = fr.to_img(corners_u, corners_v)
    x0, x1 = int(max(0, np.floor(cxs.min()))), int(min(g, np.ceil(cxs.max())))
    y0, y1 = int(max(0, np.floor(cys.min()))), int(min(g, np.ceil(cys.max())))
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    X, Y = np.meshgrid(xs, ys)
    ua, va = fr.to_anat(X, Y)
    du, dv = ua - hcx, va - hcy
    p = (du * np.cos(phi) + dv * np.sin(phi)) / a
    q = (-du * np.sin(phi) + dv * np.cos(phi)) / b
    rho = np.sqrt(p * p + q * q)
    # Lobulated outline (ventricle, atrium) and a graded density: thicker centrally.
    ang = np.arctan2(q, p)
    rho = rho / (1 + 0.05 * np.cos(2 * ang + s.seed % 7) + 0.03 * np.cos(3 * ang + 1.3))
    soft = L._smooth(1.06, 0.94, rho) * (0.8 + 0.2 * L._smooth(1.0, 0.3, rho))
    return y0, x0, soft.astype(np.float32)


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


def _place(req: LesionRequest, lung: np.ndarray, fr: _Frame, g: int, rng, contrast: float):
    """Draw one box finding: at its fixed box (mirror), or placed in the lungs and clipped to them."""
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
    w0, h0 = req.size
    min_side = (0.08 if lab in ("Effusion", "Pneumothorax") else 0.025) * g
    les, right = None, False
    for _attempt in range(8):
        grow = 1.4 ** max(0, _attempt - 2)
        w, h = max(w0, min_side) * grow, max(h0, min_side) * grow
        right = bool(rng.random() < 0.5)
        if lab in ("Effusion", "Pneumothorax"):
            side = _side_mask(lung, mid, right)
            ys, xs = np.nonzero(side)
            if len(ys) == 0:
                continue
            w_eff = min(w, float(xs.max() - xs.min() + 1))
            if lab == "Effusion":
                bottom = ys.max() + 1
                lower = side[max(0, int(bottom - h)) : bottom]
                lx = np.nonzero(lower.any(0))[0]
                x = (lx.min() - 1) if right else (lx.max() + 2 - w_eff)
                box = (float(x), float(bottom - h + 1), w_eff, float(h))
                les = L.effusion(box, g, rng, right, contrast)
            else:
                top = ys.min()
                upper = side[top : int(top + h)]
                lx = np.nonzero(upper.any(0))[0]
                x = (lx.min() - 1) if right else (lx.max() + 2 - w_eff)
                box = (float(x), float(top - 1), w_eff, float(h))
                les = L.pneumothorax(box, g, rng, right, contrast)
            clip = side
        else:
            c = req.hint if (_attempt == 0 and req.hint is not None) else None
            if c is not None:
                cx, cy = int(np.clip(c[0], 0, g - 1)), int(np.clip(c[1], 0, g - 1))
                if not lung[cy, cx]:
                    c = None
            if c is None:
                c = _random_point(lung, rng)
                if c is None:
                    return None
            right = c[0] < mid
            box = (c[0] - w / 2, c[1] - h / 2, float(w), float(h))
            les = L.BOX_DRAWERS[lab](box, g, rng, contrast)
            clip = lung
        hh, ww = les.profile.shape
        cl = clip[les.y0 : les.y0 + hh, les.x0 : les.x0 + ww]
        if (les.mask & cl).sum() >= MIN_LESION_PIXELS:
            les.mask = les.mask & cl
            les.profile = les.profile * cl
            return les, right, None
    # Lungs too small for a clipped lesion of this size: keep the last one unclipped.
    return (les, right, None) if les is not None and les.mask.sum() > 0 else None


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
    for i, s in enumerate(specs):
        rng = np.random.default_rng(s.seed)
        fr = _Frame(theta[i].numpy(), g, bank.params, s.bank_index)
        y0, x0, h = _heart(fr, s, g)
        hh, ww = h.shape
        sl = (slice(y0, y0 + hh), slice(x0, x0 + ww))
        # The heart replaces lung air (and its vessels) with soft tissue.
        ves_c = _sample_crop(bank, s.bank_index, theta[i], 3, y0, x0, hh, ww)
        dens_np[i][sl] += h * (air_np[i][sl] - vg * ves_c + 0.06)
        lungs[i][sl] &= h < 0.4
        lung = lungs[i]
        dl = np.zeros((g, g), dtype=np.float32)
        vis = np.ones((g, g), dtype=np.float32)
        out: list[DrawnLesion] = []
        ptx_right = None
        for req in s.lesions:
            if req.label == "Cardiomegaly":
                out.append(DrawnLesion("Cardiomegaly", y0, x0, h > 0.4, "left", "middle", box=req.box))
                continue
            res = _place(req, lung, fr, g, rng, contrast)
            if res is None:
                continue
            les, right, box = res
            _apply(dl, vis, les)
            if les.suppress_vessels:
                ph, pw = les.profile.shape
                vc = _sample_crop(bank, s.bank_index, theta[i], 3, les.y0, les.x0, ph, pw)
                dl[les.y0 : les.y0 + ph, les.x0 : les.x0 + pw] -= vg * vc * les.profile
            if req.label == "Pneumothorax":
                ptx_right = right
            ys, xs = np.nonzero(les.mask)
            cy = les.y0 + (ys.mean() if len(ys) else les.profile.shape[0] / 2)
            out.append(DrawnLesion(req.label, les.y0, les.x0, les.mask, "right" if right else "left", _zone(fr, cy, g), box=box))
        if s.findings:
            _image_findings(s, dl, vis, lung, fr, g, rng, contrast)
            if "Emphysema" in s.findings:
                vfull = _sample_crop(bank, s.bank_index, theta[i], 3, 0, 0, g, g)
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
