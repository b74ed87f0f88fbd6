"""Where SynthCXR's box findings go and how big they are: drawn from the real NIH boxes.

Every box finding's box is drawn from the 984 boxes of `BBox_List_2017` (the torchxrayvision wheel) of
its class, in the frame of the released 1024-px films normalised to [0,1] (the "NIH frame"):

* **Stratified parents.** Each class's real boxes are used in a seeded random order, cycling, so any run
  of n consecutive lesions of a class (a test split, say) has n different parents while n <= the class's
  box count. Every lesion's box still follows the class's smoothed empirical distribution; the cycle
  only removes the extra spread of drawing parents with replacement.
* **Kernel.** A parent (cx, cy, w, h) is jittered by a Gaussian kernel that scales with the box itself
  and with its class: the centre by N(0, s^2) with s = min(KERNEL_CENTRE * w, KERNEL_CLASS * SD of the
  class's cx) (height and cy alike), the width and height by exp(N(0, s^2)) with s = min(KERNEL_LOG_SIZE,
  KERNEL_CLASS * SD of the class's log width / height). Left/right and upper/lower modes of a class stay
  apart, small lesions stay small, and a tight class (Cardiomegaly) stays tight.
* **Alternates.** Each lesion also gets N_ALTERNATES boxes from parents of about the same area (the
  ALTERNATE_POOL nearest in log area): the renderer uses the first box that fits the image's own anatomy
  (see render.py) and the alternates only when it does not, so the size distribution is kept.

The renderer maps a NIH-frame box into an image through that image's lung frame (`map_box`): the
anatomy bank's lung fields sit where the real lung masks sat in their own films (`lung_frame`), so the
mean SynthCXR lung field is the real-mask atlas NIH is scored against, and a box keeps the position it
had relative to the average lungs (its size stays the real one). The renderer then fits the lesion to
this chest (render.py: clipped to the lungs, moved inside them when it overhangs, effusions settled on
the base, pneumothoraces against the chest wall).
"""

from __future__ import annotations

import functools

import numpy as np

from wsl_bench.data import assets

KERNEL_CENTRE = 0.1  # centre jitter, as a fraction of the box's own width / height (SD)
KERNEL_LOG_SIZE = 0.1  # SD of the log width / log height jitter
KERNEL_CLASS = 0.25  # ... and never more than this share of the class's own SD in that coordinate
N_ALTERNATES = 3
ALTERNATE_POOL = 15  # alternates are drawn from this many parents nearest in area to the first box's
MIN_SIDE = 0.012  # no box side below this fraction of the image after jitter (about 3 px at 256)

# Lung frame of the real masks: the mean (x0, y0, x1, y1) of the 429 lung templates in their own films
# (`assets.lung_template_boxes`), used when the bank is built without the templates' boxes.
DEFAULT_LUNG_BOX = (0.0828, 0.1026, 0.9153, 0.8476)
# The bank keeps this share of each template's deviation from the mean frame: the NIH boxes already
# carry their own patients' spread, and the image-level warp adds more.
FRAME_SPREAD = 0.5

# The heart, from the real Cardiomegaly boxes in the mean lung frame (mean box 0.340-0.809 x 0.383-0.755):
# the centre lies HEART_DX widths towards the patient's left of the midline, the bottom at HEART_BOTTOM of
# the lung height below the lung top, and height / width is HEART_ASPECT.
HEART_DX = 0.16
HEART_BOTTOM = 0.876
HEART_ASPECT = 0.79


def frame_params(box: np.ndarray) -> tuple[float, float, float, float]:
    """(cx, lw, ltop, lh) of a lung box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 + x1) / 2, x1 - x0, y0, y1 - y0


def lung_frame(template_boxes: np.ndarray | None, template: np.ndarray) -> dict[str, np.ndarray]:
    """Bank lung geometry (cx, lw, ltop, lh per entry) from each entry's template box, pulled towards the
    mean frame by FRAME_SPREAD, plus the mean frame itself ("ref": cx, lw, ltop, lh)."""
    if template_boxes is None or len(template_boxes) == 0:
        ref = np.asarray(DEFAULT_LUNG_BOX, dtype=np.float64)
        boxes = np.tile(ref, (len(template), 1))
    else:
        tb = np.asarray(template_boxes, dtype=np.float64)
        ref = tb.mean(0)
        boxes = ref + FRAME_SPREAD * (tb[np.asarray(template) % len(tb)] - ref)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    return {
        "cx": cx, "lw": boxes[:, 2] - boxes[:, 0], "ltop": boxes[:, 1], "lh": boxes[:, 3] - boxes[:, 1],
        "ref": np.asarray(frame_params(ref), dtype=np.float64),
    }


@functools.lru_cache(maxsize=1)
def _nih_boxes() -> dict[str, np.ndarray]:
    """Real NIH boxes per class as (cx, cy, w, h) in the NIH frame."""
    b = assets.real_boxes()
    out = {}
    for lab, grp in b.groupby("label"):
        a = grp[["x", "y", "w", "h"]].to_numpy(np.float64) / 1024.0
        out[str(lab)] = np.stack([a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2, a[:, 2], a[:, 3]], 1)
    return out


class BoxSampler:
    """Draws NIH-frame boxes (cx, cy, w, h) per class: stratified parents, scale-adaptive kernel."""

    def __init__(self, seed: int):
        self.boxes = _nih_boxes()
        # per class: SD of cx, cy, log w, log h (the kernel never exceeds KERNEL_CLASS of it)
        self.spread = {lab: np.array([b[:, 0].std(), b[:, 1].std(), np.log(b[:, 2]).std(), np.log(b[:, 3]).std()])
                       for lab, b in self.boxes.items()}
        self._rng = np.random.default_rng([int(seed), 4242])
        self._order: dict[str, np.ndarray] = {}
        self._pos: dict[str, int] = {}

    def _next_parent(self, label: str) -> np.ndarray:
        n = len(self.boxes[label])
        pos = self._pos.get(label, 0)
        if pos % n == 0:
            self._order[label] = self._rng.permutation(n)
        self._pos[label] = pos + 1
        return self.boxes[label][self._order[label][pos % n]]

    def _jitter(self, label: str, parent: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, float]:
        cx, cy, w, h = parent
        z = rng.standard_normal(4)
        sd = self.spread[label]
        cx = cx + min(KERNEL_CENTRE * w, KERNEL_CLASS * sd[0]) * z[0]
        cy = cy + min(KERNEL_CENTRE * h, KERNEL_CLASS * sd[1]) * z[1]
        w = w * np.exp(min(KERNEL_LOG_SIZE, KERNEL_CLASS * sd[2]) * z[2])
        h = h * np.exp(min(KERNEL_LOG_SIZE, KERNEL_CLASS * sd[3]) * z[3])
        w, h = float(np.clip(w, MIN_SIDE, 1.0)), float(np.clip(h, MIN_SIDE, 1.0))
        return float(np.clip(cx, w / 2, 1 - w / 2)), float(np.clip(cy, h / 2, 1 - h / 2)), w, h

    def draw(self, label: str, rng: np.random.Generator) -> tuple[tuple[float, float, float, float], ...]:
        """The lesion's box and its alternates (NIH frame), first the stratified one. Alternates come from
        the ALTERNATE_POOL parents nearest in area to the first one's, so replacing a box that does not fit
        the chest changes where the lesion is, not how big it is."""
        boxes = self.boxes[label]
        parent = self._next_parent(label)
        first = self._jitter(label, parent, rng)
        log_area = np.log(boxes[:, 2] * boxes[:, 3])
        near = np.argsort(np.abs(log_area - np.log(parent[2] * parent[3])), kind="stable")[1 : ALTERNATE_POOL + 1]
        alts = [self._jitter(label, boxes[int(near[rng.integers(len(near))])], rng) for _ in range(N_ALTERNATES)]
        return (first, *alts)


def anat_box(fr, ua: float, va: float, wa: float, ha: float) -> tuple[float, float, float, float]:
    """A box centred at anatomy point (ua, va) with anatomy width / height (wa, ha), in image pixels
    (x, y, w, h) through the image warp of `fr` (render._Frame), clipped to the image. The warp's rotation
    is small: the box stays axis-aligned and takes the warp's scale."""
    xs, ys = fr.to_img(np.array([ua, ua + wa / 2, ua]), np.array([va, va, va + ha / 2]))
    half_w = float(np.hypot(xs[1] - xs[0], ys[1] - ys[0]))
    half_h = float(np.hypot(xs[2] - xs[0], ys[2] - ys[0]))
    g = float(fr.g)
    x0, x1 = max(0.0, float(xs[0]) - half_w), min(g, float(xs[0]) + half_w)
    y0, y1 = max(0.0, float(ys[0]) - half_h), min(g, float(ys[0]) + half_h)
    return x0, y0, max(1.0, x1 - x0), max(1.0, y1 - y0)


def map_box(fr, box: tuple[float, float, float, float], ref: np.ndarray) -> tuple[float, float, float, float]:
    """A NIH-frame box (cx, cy, w, h) in image pixels (x, y, w, h) through the image's lung frame `fr`
    (render._Frame): its centre keeps its place relative to the lungs (the mean frame `ref` = cx, lw, ltop,
    lh mapped onto this chest's), its width and height stay the real box's (times the image warp's zoom),
    so the size distribution is the real one and is not spread again by the chests' own sizes."""
    rcx, rlw, rtop, rlh = (float(v) for v in ref)
    cx, cy, w, h = box
    return anat_box(fr, fr.cx + (cx - rcx) * fr.lw / rlw, fr.ltop + (cy - rtop) * fr.lh / rlh, w, h)
