"""Lesion shapes of SynthCXR, drawn per image on a crop around a target box (numpy).

Each drawer returns a `Lesion`: where its crop sits, a soft density profile in [0,1] on the crop,
and the exact binary mask the ground-truth box is taken from (the box is the mask's bounding box).
Intrapulmonary lesions are clipped to the lung field by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Lesion:
    label: str  # box-file spelling for the 8 box findings, FINDINGS spelling otherwise
    y0: int
    x0: int
    profile: np.ndarray  # [h,w] float32 in [0,1]: how much density is added (or removed)
    mask: np.ndarray  # [h,w] bool: the exact extent
    amp: float  # density added per unit profile (negative: more lucent)
    suppress_vessels: bool = False  # lung markings vanish inside (pneumothorax)
    extra: np.ndarray | None = None  # second density layer (e.g. a pleural line, air bronchograms)


def _smooth(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def box_grid(box, g: int, margin: float = 0.15):
    """Crop covering `box` (x,y,w,h, pixels) plus a margin, clipped to the image; returns the crop
    origin and box-normalised coordinates (u, v in [-1,1] over the box)."""
    x, y, w, h = box
    mx, my = margin * w + 2, margin * h + 2
    x0, y0 = int(max(0, np.floor(x - mx))), int(max(0, np.floor(y - my)))
    x1, y1 = int(min(g, np.ceil(x + w + mx))), int(min(g, np.ceil(y + h + my)))
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    v = (ys[:, None] - (y + h / 2)) / (h / 2)
    u = (xs[None, :] - (x + w / 2)) / (w / 2)
    return y0, x0, np.broadcast_to(u, (len(ys), len(xs))), np.broadcast_to(v, (len(ys), len(xs)))


def _noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    z = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return z / (z.std() + 1e-6)


def _radial_blob(u, v, rng, roughness: float, n_harm: int = 5):
    rho = np.sqrt(u * u + v * v) + 1e-6
    th = np.arctan2(v, u)
    r = np.ones_like(rho)
    for k in range(2, 2 + n_harm):
        r = r + roughness * rng.uniform(0.3, 1.0) / (k - 1) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    return rho / np.maximum(r, 0.3)


def nodule(box, g, rng, contrast=1.0) -> Lesion:
    """Small round, fairly well-defined opacity."""
    y0, x0, u, v = box_grid(box, g)
    rho = _radial_blob(u, v, rng, 0.06, 3)
    prof = _smooth(1.12, 0.8, rho)
    return Lesion("Nodule", y0, x0, prof.astype(np.float32), rho < 0.96, contrast * rng.uniform(0.32, 0.45))


def mass(box, g, rng, contrast=1.0) -> Lesion:
    """Larger lobulated opacity, slightly denser centrally."""
    y0, x0, u, v = box_grid(box, g)
    rho = _radial_blob(u, v, rng, 0.14, 5)
    prof = _smooth(1.1, 0.75, rho) * (0.85 + 0.15 * _smooth(1.0, 0.2, rho))
    return Lesion("Mass", y0, x0, prof.astype(np.float32), rho < 0.93, contrast * rng.uniform(0.35, 0.5))


def atelectasis(box, g, rng, contrast=1.0) -> Lesion:
    """Linear (plate-like) band or a wedge pointing to the hilum."""
    y0, x0, u, v = box_grid(box, g)
    if rng.random() < 0.5:
        ang = rng.uniform(-0.35, 0.35)
        a = u * np.cos(ang) + v * np.sin(ang)
        b = -u * np.sin(ang) + v * np.cos(ang)
        thick = rng.uniform(0.25, 0.45)
        bend = rng.uniform(-0.25, 0.25)
        d = np.abs(b - bend * a**2) / thick
        prof = _smooth(1.15, 0.75, d) * _smooth(1.05, 0.85, np.abs(a))
    else:
        # wedge: apex at one side of the box, base at the other
        apex_left = rng.random() < 0.5
        s = (u + 1) / 2 if apex_left else (1 - u) / 2  # 0 at the apex, 1 at the base
        half = 0.1 + 0.9 * s
        edge = 0.25 + 0.1 * _noise(rng, u.shape, max(1.0, 0.1 * box[3]))
        prof = _smooth(1.0 + edge, 1.0 - edge, np.abs(v) / np.maximum(half, 1e-3)) * _smooth(-0.1, 0.15, s) * _smooth(1.1, 0.9, s)
    prof = prof.astype(np.float32)
    return Lesion("Atelectasis", y0, x0, prof, prof > 0.5, contrast * rng.uniform(0.3, 0.42))


def infiltrate(box, g, rng, contrast=1.0) -> Lesion:
    """Patchy, ill-defined opacity: clumps of noise under a soft envelope."""
    y0, x0, u, v = box_grid(box, g)
    rho = _radial_blob(u, v, rng, 0.2, 4)
    env = _smooth(1.1, 0.5, rho)
    sig = max(1.0, 0.06 * (box[2] + box[3]) / 2)
    z = _noise(rng, u.shape, sig)
    patch = _smooth(-0.6, 0.6, z)
    prof = (env * (0.35 + 0.65 * patch)).astype(np.float32)
    return Lesion("Infiltrate", y0, x0, prof, prof > 0.4, contrast * rng.uniform(0.3, 0.42))


def pneumonia(box, g, rng, contrast=1.0) -> Lesion:
    """Consolidation (dense, confluent) with branching air bronchograms inside."""
    y0, x0, u, v = box_grid(box, g)
    rho = _radial_blob(u, v, rng, 0.18, 4)
    sig = max(1.0, 0.05 * (box[2] + box[3]) / 2)
    rho = rho * (1 + 0.12 * _noise(rng, u.shape, sig * 2))
    prof = _smooth(1.08, 0.6, rho).astype(np.float32)
    z = _noise(rng, u.shape, sig)
    bronch = np.exp(-((z / 0.18) ** 2)) * _smooth(0.8, 0.3, rho)
    return Lesion(
        "Pneumonia", y0, x0, prof, prof > 0.5, contrast * rng.uniform(0.4, 0.5),
        extra=(-0.12 * contrast * bronch).astype(np.float32),
    )


def consolidation(box, g, rng, contrast=1.0) -> Lesion:
    """Lobar homogeneous opacity with a sharp upper (fissural) border, no bronchograms."""
    y0, x0, u, v = box_grid(box, g)
    rho = _radial_blob(u * 0.9, v, rng, 0.1, 3)
    prof = (_smooth(1.05, 0.7, rho) * _smooth(-0.75, -0.6, v)).astype(np.float32)
    return Lesion("Consolidation", y0, x0, prof, prof > 0.5, contrast * rng.uniform(0.35, 0.45))


def effusion(box, g, rng, right_lung: bool, contrast=1.0) -> Lesion:
    """Basal opacity with a meniscus that climbs laterally; the caller clips it to the lung base,
    which blunts the costophrenic angle."""
    y0, x0, u, v = box_grid(box, g, margin=0.05)
    lat = np.clip((1 - u) / 2 if right_lung else (1 + u) / 2, 0, 1)  # 1 at the lateral wall, 0 medially
    top = 0.8 - 1.6 * rng.uniform(0.55, 0.85) * lat**1.5  # meniscus height (box coords)
    prof = _smooth(top - 0.08, top + 0.12, v) * (0.75 + 0.25 * _smooth(-1, 1, v))
    prof = prof * _smooth(1.08, 1.0, np.abs(u))
    prof = prof.astype(np.float32)
    return Lesion("Effusion", y0, x0, prof, prof > 0.5, contrast * rng.uniform(0.32, 0.45))


def pneumothorax(box, g, rng, right_lung: bool, contrast=1.0) -> Lesion:
    """Air between the chest wall and a visceral pleural line; no lung markings beyond the line."""
    y0, x0, u, v = box_grid(box, g, margin=0.05)
    # The collapsed lung edge: an ellipse centred at the medial-lower corner of the box.
    cu = 1.0 if right_lung else -1.0
    ru, rv = rng.uniform(1.35, 1.6), rng.uniform(1.45, 1.75)
    e = np.sqrt(((u - cu) / ru) ** 2 + ((v - 1.0) / rv) ** 2)
    inside_box = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    region = _smooth(0.97, 1.03, e) * inside_box
    px = max(box[2], box[3]) / 2
    line = np.exp(-(((e - 1.0) * px / 0.9) ** 2)) * inside_box
    return Lesion(
        "Pneumothorax", y0, x0, region.astype(np.float32), region > 0.5, -0.1 * contrast,
        suppress_vessels=True, extra=(0.22 * contrast * line).astype(np.float32),
    )


BOX_DRAWERS = {
    "Nodule": nodule,
    "Mass": mass,
    "Atelectasis": atelectasis,
    "Infiltrate": infiltrate,
    "Pneumonia": pneumonia,
}


def mask_bbox(les: Lesion) -> tuple[float, float, float, float] | None:
    """Bounding box (x, y, w, h) of a lesion's mask in image pixels, None if empty."""
    ys, xs = np.nonzero(les.mask)
    if len(ys) == 0:
        return None
    return (float(les.x0 + xs.min()), float(les.y0 + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))


def box_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def fit_to_box(les: Lesion, box, g: int, tol: float = 0.03) -> Lesion:
    """Resample a drawn lesion (profile, mask, extra) so that its mask's bounding box is `box`
    (x, y, w, h, pixels): the shape is drawn in box units but its mask rarely fills the box exactly
    (thresholded soft edges, noise, plate-like bands), and the ground-truth box is the mask's."""
    from scipy.ndimage import map_coordinates

    mb = mask_bbox(les)
    if mb is None:
        return les
    tx, ty, tw, th = (float(v) for v in box)
    sx, sy = tw / mb[2], th / mb[3]
    if abs(sx - 1) < tol and abs(sy - 1) < tol and abs(tx - mb[0]) < 0.5 and abs(ty - mb[1]) < 0.5:
        return les
    hh, ww = les.mask.shape
    # where the old crop lands, clipped to the image
    nx0 = int(max(0, np.floor(tx + (les.x0 - mb[0]) * sx)))
    nx1 = int(min(g, np.ceil(tx + (les.x0 + ww - mb[0]) * sx)))
    ny0 = int(max(0, np.floor(ty + (les.y0 - mb[1]) * sy)))
    ny1 = int(min(g, np.ceil(ty + (les.y0 + hh - mb[1]) * sy)))
    if nx1 <= nx0 or ny1 <= ny0:
        return les
    # source pixel-index coordinates of the new crop's pixel centres
    xs = mb[0] + (np.arange(nx0, nx1) + 0.5 - tx) / sx - les.x0 - 0.5
    ys = mb[1] + (np.arange(ny0, ny1) + 0.5 - ty) / sy - les.y0 - 0.5
    coords = np.stack(np.broadcast_arrays(ys[:, None], xs[None, :]))

    def warp(a: np.ndarray) -> np.ndarray:
        return map_coordinates(a.astype(np.float32), coords, order=1, mode="constant", cval=0.0).astype(np.float32)

    mask = warp(les.mask) >= 0.5
    if not mask.any():
        return les
    return Lesion(les.label, ny0, nx0, warp(les.profile), mask, les.amp, les.suppress_vessels,
                  None if les.extra is None else warp(les.extra))


def heart_in_box(box, g: int, seed: int, margin: float = 0.1):
    """The heart as a tilted, lobulated ellipse (ventricle, atrium) filling `box` (x, y, w, h, pixels),
    denser centrally. Returns the crop origin and the soft mask [h,w] in [0,1]."""
    y0, x0, u, v = box_grid(box, g, margin=margin)
    phi, a, b = 0.4, 1.0, 0.72
    ex = np.sqrt((a * np.cos(phi)) ** 2 + (b * np.sin(phi)) ** 2)
    ey = np.sqrt((a * np.sin(phi)) ** 2 + (b * np.cos(phi)) ** 2)
    U, V = u * ex, v * ey
    p = (U * np.cos(phi) + V * np.sin(phi)) / a
    q = (-U * np.sin(phi) + V * np.cos(phi)) / b
    rho = np.sqrt(p * p + q * q)
    ang = np.arctan2(q, p)
    rho = rho / (1 + 0.05 * np.cos(2 * ang + seed % 7) + 0.03 * np.cos(3 * ang + 1.3))
    soft = _smooth(1.06, 0.94, rho) * (0.8 + 0.2 * _smooth(1.0, 0.3, rho))
    return y0, x0, soft.astype(np.float32)


# An effusion box ending above the lung base moves down by this share of the gap and grows by the rest
# (the real effusion boxes end, at the median, about 0.06 of the image above the deepest lung row of the
# real-mask frame: halfway between keeping their position and keeping their size).
EFFUSION_SETTLE = 0.5


def effusion_at_base(box, region: np.ndarray, g: int, rng, right: bool, mid: float, bilateral: bool, contrast=1.0):
    """Pleural fluid at the base of the hemithorax under `box`'s columns (x, y, w, h, pixels). The fluid
    keeps the box's columns and reaches down to the deepest row of `region` in those columns (fluid lies
    at the base): a box that ends above the base moves down by EFFUSION_SETTLE of the gap and grows by the
    rest; one that reaches below it keeps its top and is cut there. In each column the fluid rises from that column's base by a share lat**gamma of the way
    to the top, lat going from 0 at the box's medial edge to 1 at the lateral wall: a meniscus that is
    highest against the chest wall and meets the base medially (a blunted costophrenic angle).
    `region`: where fluid can lie (the lung field plus the pleural band along the wall), one side or both
    for a bilateral box. Returns (Lesion, the settled box) or None."""
    x, y, w, h = (float(v) for v in box)
    c0, c1 = int(max(0, np.floor(x))), int(min(g, np.ceil(x + w)))
    if c1 <= c0:
        return None
    sub = region[:, c0:c1]
    has = sub.any(0)
    if not has.any():
        return None
    base = np.where(has, g - np.argmax(sub[::-1], axis=0), 0).astype(np.float32)  # one past the deepest row
    bottom = float(base.max())
    gap = bottom - (y + h)
    top_box = min(y + EFFUSION_SETTLE * max(gap, 0.0), bottom - 1.0)
    h = bottom - top_box
    X = np.arange(c0, c1, dtype=np.float32) + 0.5
    if bilateral:
        dist = np.abs(X - mid)
        lat = dist / max(float(dist[has].max()), 1.0)
    else:
        wall = float(X[has].min()) if right else float(X[has].max())  # the lateral edge in the box
        medial = x + w if right else x
        span = (medial - wall) if right else (wall - medial)
        lat = np.clip(((medial - X) if right else (X - medial)) / span, 0, 1) if span > 0 else np.ones_like(X)
    gamma = rng.uniform(1.2, 2.0)
    top = np.where(has, base - np.maximum(base - top_box, 0) * lat**gamma, g).astype(np.float32)
    y0 = int(max(0, np.floor(top_box) - 2))
    y1 = int(min(g, np.ceil(bottom)))
    if y1 <= y0:
        return None
    rows = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    prof = _smooth(top[None, :] - 1.0, top[None, :] + 1.0, rows) * (rows < base[None, :])
    prof = prof * (0.75 + 0.25 * _smooth(top_box, bottom, rows))
    prof = prof.astype(np.float32)
    return Lesion("Effusion", y0, c0, prof, prof > 0.5, contrast * rng.uniform(0.32, 0.45)), (x, top_box, w, h)


def pneumothorax_from_shape(box, shape: np.ndarray, region_crop_fn, g: int, contrast=1.0):
    """Air space shaped as a real pneumothorax mask (`shape`, [S,S] in [0,1], the mask's bounding-box crop,
    already mirrored to the lesion's side) stretched over `box` (x, y, w, h, pixels). `region_crop_fn(y0, x0,
    h, w)` gives the lung field there: the air is clipped to it and the visceral pleural line is drawn
    where the air meets lung."""
    from scipy.ndimage import binary_dilation, gaussian_filter, map_coordinates

    x, y, w, h = (float(v) for v in box)
    x0, y0 = int(max(0, np.floor(x) - 1)), int(max(0, np.floor(y) - 1))
    x1, y1 = int(min(g, np.ceil(x + w) + 1)), int(min(g, np.ceil(y + h) + 1))
    S = shape.shape[0]
    xs = (np.arange(x0, x1) + 0.5 - x) / w * S - 0.5
    ys = (np.arange(y0, y1) + 0.5 - y) / h * S - 0.5
    coords = np.stack(np.broadcast_arrays(ys[:, None], xs[None, :]))
    prof = map_coordinates(shape.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
    lung = region_crop_fn(y0, x0, y1 - y0, x1 - x0)
    mask = (prof >= 0.5) & lung
    region = np.clip(gaussian_filter(mask.astype(np.float32), 0.6), 0, 1) * lung
    edge = binary_dilation(mask) & ~mask & lung  # lung pixels touching the air: the visceral pleura
    line = np.clip(gaussian_filter(edge.astype(np.float32), 0.5) * 2.0, 0, 1)
    return Lesion(
        "Pneumothorax", y0, x0, region.astype(np.float32), mask, -0.1 * contrast,
        suppress_vessels=True, extra=(0.22 * contrast * line).astype(np.float32),
    )
