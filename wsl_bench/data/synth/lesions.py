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
