"""Heatmap preparation: bilinear upsampling to the image grid and min-max normalisation.

Pixel convention (used by every policy and metric): pixel (row r, col c) is the unit square
[c, c+1) x [r, r+1) in image coordinates, so its centre is (c+0.5, r+0.5). Upsampling is bilinear
with ``align_corners=False`` (pixel-centre aligned, like cv2.resize and torch's default), so an
s x s map covers the image exactly, each map cell spanning H/s x W/s image pixels.
"""

from __future__ import annotations

import contextlib
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


def normalize_(u: np.ndarray) -> bool:
    """Min-max normalise `u` in place to [0, 1]; return False (and zero `u`) for a constant map.

    A constant map (all-zero included) carries no location: it becomes all zeros, so no pixel
    exceeds any threshold >= 0 and it yields no candidate box and no pointing hit.
    """
    lo = u.min()
    hi = u.max()
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
