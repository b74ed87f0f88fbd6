"""Normal chest anatomy for SynthCXR: a bank of precomputed "patients" rendered once per size.

Each bank entry is a frontal chest in density units (0 = air outside the body, 1 = soft tissue),
stored as channels that later stages combine per image:
  body    soft tissue, mediastinum, spine, ribs, clavicles, diaphragm, breasts, hila
  air     how much the lungs lower the density (lung air depth; 0 outside the lungs)
  lung    the lung field in [0,1] (soft edge), shaped by a real lung mask
  vessels branching vascular markings radiating from the hila (0 outside the lungs)
The heart is drawn per image (its size is a finding), see `render.py`.
Rendering the bank vectorised over entries keeps per-image cost to a warp and a few crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsl_bench.data.synth.geometry import lung_frame

CHANNELS = ("body", "air", "lung", "vessels")


@dataclass
class AnatomyBank:
    """K normal chests at side G: `maps` [K,4,G,G] float32 plus the per-entry geometry."""

    maps: torch.Tensor
    params: dict[str, np.ndarray]  # per entry: cx, lw, ltop, lh, female, ap, hilum_y, template; "ref": mean frame
    vessel_gain: float = 0.45
    ptx_shapes: tuple[np.ndarray, np.ndarray] | None = None  # real pneumothorax masks (shapes, boxes)

    def __post_init__(self) -> None:
        # What every image warps: [density, air] (density already includes lungs and vessels).
        body, air, _lung, ves = self.maps.unbind(1)
        self.warp_maps = torch.stack([body - air + self.vessel_gain * ves, air], dim=1).contiguous()

    @property
    def size(self) -> int:
        return int(self.maps.shape[-1])

    def __len__(self) -> int:
        return int(self.maps.shape[0])


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,H,W] (reflect padding)."""
    if sigma <= 0:
        return x
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    k = k[len(k) // 2 - r : len(k) // 2 + r + 1]
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x


def smoothstep(e0, e1, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _col(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32)).view(-1, 1, 1)


def sample_bank_params(
    rng: np.random.Generator, k: int, n_templates: int, template_boxes: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Geometry of K normal chests; half are female (breast shadows), half AP views.

    The lung field of an entry sits where its real lung mask sat in its own film (`template_boxes`,
    `assets.lung_template_boxes`), pulled half-way to the mean frame (`geometry.lung_frame`); "ref" is
    that mean frame (cx, lw, ltop, lh), the frame the lesion boxes are mapped from."""
    template = rng.integers(0, n_templates, k)
    frame = lung_frame(template_boxes, template)
    p = {
        "cx": frame["cx"],
        "lw": frame["lw"],
        "ltop": frame["ltop"],
        "lh": frame["lh"],
        "ref": frame["ref"],
        "female": (np.arange(k) % 2).astype(np.float32),
        "ap": ((np.arange(k) // 2) % 2).astype(np.float32),
        "template": template,
        "rib_curve": rng.uniform(0.08, 0.14, k),
        "rib_phase": rng.uniform(-0.25, 0.25, k),
        "rib_gamma": rng.uniform(0.8, 0.95, k),
        "n_ribs": rng.uniform(9.0, 10.5, k),
        "clav_y": rng.uniform(0.0, 0.04, k),
        "clav_tilt": rng.uniform(-0.08, 0.02, k),
        "bubble": (rng.random(k) < 0.7).astype(np.float32),
        "bubble_dx": rng.uniform(0.10, 0.20, k),
        "spine_w": rng.uniform(0.075, 0.095, k),
        "soft_lat": rng.uniform(0.0, 0.15, k),
    }
    p["hilum_y"] = p["ltop"] + 0.42 * p["lh"]
    # AP films: clavicles project higher and more horizontal.
    p["clav_y"] = p["clav_y"] - 0.03 * p["ap"]
    return p


def _vessel_field(
    uu: torch.Tensor, vv: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Thin branching lines radiating from a hilum at (hx, hy): zero crossings of a noise field
    that is smooth along the radius and rough across angles; widths taper with distance."""
    k = hx.shape[0]
    dx, dy = uu - hx, vv - hy
    r = torch.sqrt(dx * dx + dy * dy) + 1e-3
    theta = torch.atan2(dy, dx)
    A, R = 160, 48
    z = torch.randn(k, 1, R, A, generator=gen)
    # Anisotropic smoothing: strong along radius (rows), light across angle (columns).
    z = _blur_axis(z, 5.0, axis=2)
    z = _blur_axis(z, 1.3, axis=3)
    z = z / z.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    gy = (torch.log(r / 0.01) / np.log(0.6 / 0.01)).clamp(0, 1) * 2 - 1
    # Vessels curve: bend the angle by a smooth random function of (angle, radius).
    bend = _blur_axis(_blur_axis(torch.randn(k, 1, 12, 24, generator=gen), 1.5, axis=2), 2.0, axis=3)
    bend = bend / bend.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    gx0, gy0 = torch.broadcast_tensors(theta / np.pi, gy)
    b = F.grid_sample(bend, torch.stack([gx0, gy0], dim=-1), align_corners=False, padding_mode="border")[:, 0]
    gx = (gx0 + 0.06 * b + 1) % 2 - 1
    grid = torch.stack([gx, gy0], dim=-1)
    zs = F.grid_sample(z, grid, align_corners=False, padding_mode="border")[:, 0]
    width = 0.22 * (0.035 / r).clamp(max=3.0) ** 0.7
    lines = torch.exp(-((zs / width) ** 2))
    fade = torch.exp(-r / 0.25) * smoothstep(0.01, 0.07, r)
    return lines * fade


def _blur_axis(x: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1, 1) if axis == 2 else (k / k.sum()).view(1, 1, 1, -1)
    pad = (0, 0, r, r) if axis == 2 else (r, r, 0, 0)
    mode = "reflect" if axis == 2 else "circular"
    return F.conv2d(F.pad(x, pad, mode=mode), k)


def build_bank(
    templates: np.ndarray, size: int, k: int, seed: int, template_boxes: np.ndarray | None = None,
    ptx_shapes: tuple[np.ndarray, np.ndarray] | None = None,
) -> AnatomyBank:
    """Render K normal chests at side `size` from real lung-shape templates [T,2,t,t] uint8, placed
    where they sat in their films (`template_boxes` [T,4]); `ptx_shapes` (shapes, boxes) are the real
    pneumothorax masks the renderer draws from (`assets.pneumothorax_shapes`)."""
    rng = np.random.default_rng([seed, 7001])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    p = sample_bank_params(rng, k, len(templates), template_boxes)
    g = size
    ax = (torch.arange(g, dtype=torch.float32) + 0.5) / g
    # 1-D coordinates broadcast against each other: terms depending on one axis stay cheap.
    uu, vv = ax.view(1, 1, g), ax.view(1, g, 1)
    cx, lw, ltop, lh = _col(p["cx"]), _col(p["lw"]), _col(p["ltop"]), _col(p["lh"])
    female, ap = _col(p["female"]), _col(p["ap"])

    # Lung field from a real mask, stretched to this chest's lung box.
    tm = torch.as_tensor(templates[p["template"]], dtype=torch.float32) / 255.0
    tm = tm.amax(dim=1, keepdim=True)
    grid = torch.stack(
        [((uu - (cx - lw / 2)) / lw * 2 - 1).expand(k, g, g), ((vv - ltop) / lh * 2 - 1).expand(k, g, g)], dim=-1
    )
    lung_raw = F.grid_sample(tm, grid, align_corners=False, padding_mode="zeros")
    lung = smoothstep(0.3, 0.7, gaussian_blur(lung_raw, g / 256))[:, 0]
    depth = gaussian_blur(lung[:, None], g * 0.03)[:, 0]
    vrel = ((vv - ltop) / lh).clamp(0, 1.2)
    air = 0.62 * lung * (0.45 + 0.55 * depth) * (1 - 0.22 * vrel**2)

    dxm = uu - cx  # signed distance from the midline
    adx = dxm.abs()
    # Body outline: neck at the top widening into shoulders; air above the shoulders.
    half = 0.11 + 0.42 * smoothstep(0.0, 0.16, vv) + 0.03 * smoothstep(0.5, 1.0, vv)
    body = smoothstep(0.0, 0.025, half - adx)
    # Lateral soft tissue and arms a little denser than the trunk.
    body = body * (0.9 + _col(p["soft_lat"]) * smoothstep(0.30, 0.46, adx) + 0.08 * smoothstep(0.38, 0.48, adx))
    lung_bottom = ltop + lh
    # Upper abdomen below the diaphragm is denser; liver under the right dome.
    body = body + 0.10 * smoothstep(lung_bottom - 0.12, lung_bottom + 0.05, vv) * smoothstep(0.0, 0.05, half - adx)
    # Mediastinum: denser central column, wider below the aortic arch.
    med_half = 0.05 + 0.04 * smoothstep(ltop + 0.1, ltop + 0.3, vv)
    body = body + 0.12 * smoothstep(0.02, -0.01, adx - med_half) * smoothstep(0.0, 0.1, vv)
    # Aortic knob on the patient's left (image right).
    kx, ky = cx + 0.065, ltop + 0.17
    body = body + 0.10 * smoothstep(0.035, 0.025, torch.sqrt((uu - kx) ** 2 + (vv - ky) ** 2))
    # Spine: vertebral bodies with darker disc spaces, pedicles as faint ovals.
    sw = _col(p["spine_w"]) / 2
    spine = smoothstep(0.008, -0.004, adx - sw)
    period = 0.043 + 0.01 * vv
    vert = 0.75 + 0.25 * torch.cos(2 * np.pi * vv / period).clamp(min=-0.2)
    ped = torch.exp(-(((adx - sw * 0.75) / 0.008) ** 2)) * (0.5 + 0.5 * torch.cos(2 * np.pi * vv / period + 1.0))
    body = body + (0.10 * spine * vert + 0.05 * ped * spine) * smoothstep(0.02, 0.1, vv)
    # Trachea: an air column down to the carina.
    carina = ltop + 0.25
    trach = smoothstep(0.018, 0.01, (uu - cx - 0.004 * torch.sin(vv * 20)).abs()) * smoothstep(carina, carina - 0.03, vv)
    body = body - 0.16 * trach * smoothstep(0.02, 0.06, vv)
    for side in (-1.0, 1.0):  # main bronchi
        bx = cx + side * (vv - carina).clamp(min=0) * 0.8
        bron = smoothstep(0.012, 0.006, (uu - bx).abs()) * smoothstep(carina - 0.01, carina + 0.005, vv) * smoothstep(carina + 0.07, carina + 0.05, vv)
        body = body - 0.1 * bron
    # Hila: lobulated vascular density at the lung roots.
    hy = _col(p["hilum_y"])
    for side in (-1.0, 1.0):
        hx = cx + side * 0.085 * lw / 0.72
        d = torch.sqrt(((uu - hx) / 0.045) ** 2 + ((vv - hy) / 0.07) ** 2)
        body = body + 0.22 * torch.exp(-(d**2))
    # Breast shadows (female): soft density over the lower lateral lung fields.
    for side in (-1.0, 1.0):
        bx, by = cx + side * 0.22, lung_bottom - 0.02
        d = torch.sqrt(((uu - bx) / 0.2) ** 2 + ((vv - by) / 0.16) ** 2)
        body = body + female * 0.1 * smoothstep(1.0, 0.6, d) * lung
    # Posterior ribs: bands that leave the spine, rise slightly, then curve down laterally.
    dx_n = (adx / (lw / 2)).clamp(0, 1.3)
    t = vv - ltop + 0.04 - (-0.03 * dx_n + _col(p["rib_curve"]) * dx_n**2)
    phase = (t.clamp(min=0) / (lh + 0.08)) ** _col(p["rib_gamma"]) * _col(p["n_ribs"]) + _col(p["rib_phase"])
    f = phase - torch.floor(phase)
    rib = smoothstep(0.0, 0.07, f) * smoothstep(0.46, 0.38, f)
    cortex = torch.exp(-(((f - 0.03) / 0.025) ** 2)) + torch.exp(-(((f - 0.42) / 0.025) ** 2))
    cage = smoothstep(1.12, 1.0, dx_n) * smoothstep(0.03, 0.06, adx) * smoothstep(lung_bottom + 0.05, lung_bottom - 0.05, vv)
    body = body + (0.055 * rib + 0.03 * cortex) * cage * (0.3 + 0.7 * lung)
    # Anterior ribs: fainter bands descending towards the midline.
    t2 = vv - ltop - 0.08 + 0.16 * (1 - dx_n)
    ph2 = (t2.clamp(min=0) / lh) * 6.5
    f2 = ph2 - torch.floor(ph2)
    arib = smoothstep(0.0, 0.1, f2) * smoothstep(0.5, 0.4, f2) * smoothstep(0.2, 0.5, dx_n) * smoothstep(1.05, 0.9, dx_n)
    body = body + 0.04 * arib * lung * smoothstep(lung_bottom - 0.1, lung_bottom - 0.25, vv)
    # Clavicles: S-curved bony bars from the sternal notch out to the shoulders.
    cy0 = ltop + 0.04 + _col(p["clav_y"])
    clav_c = cy0 + _col(p["clav_tilt"]) * (adx / 0.3) - 0.03 * torch.sin(np.pi * (adx / 0.34).clamp(0, 1))
    clav = smoothstep(0.016, 0.008, (vv - clav_c).abs()) * smoothstep(0.025, 0.04, adx) * smoothstep(0.36, 0.31, adx)
    body = body + 0.2 * clav
    # Humeral heads and scapulae at the upper corners (scapulae overlap the lungs on AP films).
    for side in (-1.0, 1.0):
        d = torch.sqrt((uu - (cx + side * 0.49)) ** 2 + (vv - (ltop + 0.04)) ** 2)
        body = body + 0.08 * smoothstep(0.07, 0.05, d)
        scap_x = cx + side * (0.36 - 0.06 * ap)
        sc = smoothstep(0.02, 0.0, (uu - scap_x) * side) * smoothstep(0.0, 0.02, (uu - scap_x + side * 0.1) * side)
        body = body + 0.05 * sc * smoothstep(ltop + 0.35, ltop + 0.25, vv) * smoothstep(ltop - 0.02, ltop + 0.05, vv)
    # Gastric bubble under the left hemidiaphragm.
    bxs, bys = cx + _col(p["bubble_dx"]), lung_bottom + 0.035
    d = torch.sqrt(((uu - bxs) / 0.05) ** 2 + ((vv - bys) / 0.03) ** 2)
    body = body - 0.18 * _col(p["bubble"]) * smoothstep(1.0, 0.8, d) * (1 - lung)

    hx_r, hx_l = cx - 0.085 * lw / 0.72, cx + 0.085 * lw / 0.72
    vessels = torch.maximum(_vessel_field(uu, vv, hx_r, hy, gen), _vessel_field(uu, vv, hx_l, hy, gen))
    vessels = vessels * lung * smoothstep(0.05, 0.3, depth)
    full = (k, g, g)
    maps = torch.stack([t.expand(full) for t in (body, air, lung, vessels)], dim=1).contiguous()
    return AnatomyBank(maps=maps, params=p, ptx_shapes=ptx_shapes)
