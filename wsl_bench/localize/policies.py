"""Heatmap -> candidate boxes: the single-map part of the box policies.

`BoxPolicy` is what a policy applies to one map: fixed thresholds on the [0,1]-normalised map and a
component rule. The named policies (`wsl_bench.localize.registry`) build it:

- ``wang2017`` (Wang et al., CVPR 2017): min-max normalise to 0..255, threshold at 60 and at 180,
  one box per connected component of each binary map; all of them are candidates. We compare the
  float map (not a uint8-rounded one): ``255*norm > 60``.
- ``threshold``: one threshold tau on the [0,1] normalised map, ``components`` all or largest.
- ``calibrated``: tau and the component rule chosen per class on a calibration split and frozen
  (`wsl_bench.localize.calibrated`); applied as a ``threshold`` policy.
- ``maxboxacc``: Choe et al.'s MaxBoxAccV2 oracle sweep, tau in 0.00, 0.01, ..., 0.99, all
  components (`sweep_overlaps`, `wsl_bench.localize.maxboxacc`); an upper bound, never a headline.

This module knows nothing about datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsl_bench.localize.components import Candidates, empty_candidates, level_candidates, threshold_candidates
from wsl_bench.localize.geometry import overlaps

COMPONENT_RULES = ("all", "largest")
WANG2017_THRESHOLDS = (60 / 255, 180 / 255)
# Choe et al.'s cam_curve_interval 0.01: np.arange(0, 1, 0.01).
SWEEP_GRID = tuple(round(0.01 * i, 2) for i in range(100))


def __getattr__(name: str):
    if name == "POLICY_NAMES":  # the registered policy names, read when asked for (plug-ins included)
        from wsl_bench.localize.registry import policy_names

        return policy_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_rule(components: str) -> str:
    if components not in COMPONENT_RULES:
        raise ValueError(f"components must be one of {', '.join(COMPONENT_RULES)}, got {components!r}")
    return components


@dataclass(frozen=True)
class BoxPolicy:
    """Fixed thresholds on the [0,1]-normalised map plus a component rule."""

    name: str
    thresholds: tuple[float, ...]
    components: str = "all"

    def __post_init__(self):
        check_rule(self.components)
        for t in self.thresholds:
            if not (0.0 <= float(t) < 1.0):
                raise ValueError(f"threshold tau must be in [0, 1), got {t}")

    def candidates(self, norm: np.ndarray, informative: bool = True, source_shape=None,
                   rect_above=None) -> Candidates:
        """Candidate boxes in `norm`'s pixel grid (empty for a constant map). `source_shape`: the
        shape of the map `norm` was upsampled from, if any; `rect_above`: where pixels above a
        threshold can be (`PreparedMap.rect_above`). Both are faster paths to the same boxes."""
        if not informative:
            return empty_candidates()
        largest = self.components == "largest"
        c = threshold_candidates(norm, sorted(self.thresholds), need_area=largest, source_shape=source_shape,
                                 rect_above=rect_above)
        return c.largest_per_level() if largest else c

    def candidates_of(self, pm) -> Candidates:
        """`candidates` of a `PreparedMap`, reading only the rectangle that can hold the lowest
        threshold's foreground. For an enlarged map the thresholds are applied to the upsampled map
        at their levels (`PreparedMap.levels`), without normalising it. The same boxes."""
        thr = sorted(self.thresholds)
        if not pm.informative or not thr:
            return empty_candidates()
        enlarged = pm.bounds is not None
        if enlarged:
            levels = pm.levels(thr).astype(np.float64)
            rect_of = pm.rect_above_level
        else:
            levels = np.asarray(thr, dtype=np.float64)
            rect_of = pm.rect_above
        rect = rect_of(levels[0])
        if rect is None:
            return empty_candidates()
        r0, r1, c0, c1 = rect
        sub = pm.rows(r0, r1)[r0:r1, c0:c1] if enlarged else pm.region(slice(r0, r1), slice(c0, c1))

        def shifted(t):
            r = rect_of(t)
            return None if r is None else (r[0] - r0, r[1] - r0, r[2] - c0, r[3] - c0)

        largest = self.components == "largest"
        c = level_candidates(sub, levels, need_area=largest, rect_above=shifted)
        if largest:
            c = c.largest_per_level()
        return Candidates(c.boxes + np.array([c0, r0, c0, r0], np.float64), c.areas, c.level)

    def describe(self) -> dict:
        return {"name": self.name, "thresholds": [float(t) for t in self.thresholds], "components": self.components}


def wang2017() -> BoxPolicy:
    return BoxPolicy("wang2017", WANG2017_THRESHOLDS, "all")


def threshold(tau: float = 0.5, components: str = "all") -> BoxPolicy:
    return BoxPolicy("threshold", (float(tau),), components)


def sweep_overlaps(
    norm: np.ndarray,
    informative: bool,
    gt_xyxy: np.ndarray,
    image_size: tuple[int, int],
    grid=SWEEP_GRID,
    rules=COMPONENT_RULES,
    source_shape=None,
    levels=None,
    source=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU and IoBB of each gt box at every grid threshold, per rule: two arrays [rules, m, K].

    `norm` may be on a coarser working grid than the image; boxes are scaled to image pixels.
    `source_shape`: the shape of the map `norm` was upsampled from, if any (see `threshold_candidates`).
    `levels`: the grid's thresholds in the units of `norm` when it is not normalised (the upsampled
    map and `PreparedMap.levels(grid)`); `source`: the map it is exactly the upsampling of.
    """
    m, k = len(gt_xyxy), len(grid)
    iou_out = np.zeros((len(rules), m, k))
    iobb_out = np.zeros((len(rules), m, k))
    if not informative or m == 0:
        return iou_out, iobb_out
    g = np.asarray(grid, dtype=np.float64).ravel()
    if g.size > 1 and np.any(np.diff(g) <= 0):
        raise ValueError(f"thresholds must be strictly increasing, got {g.tolist()}")
    thr = g if levels is None else np.asarray(levels, dtype=np.float32).astype(np.float64)
    c = level_candidates(norm, thr, need_area="largest" in rules, source_shape=source_shape, source=source)
    c = c.scaled(image_size[1] / norm.shape[1], image_size[0] / norm.shape[0])
    rows = np.arange(m)[:, None]
    for i, rule in enumerate(rules):
        cr = c.largest_per_level() if check_rule(rule) == "largest" else c
        if len(cr) == 0:
            continue
        iou, iobb = overlaps(gt_xyxy, cr.boxes)
        np.maximum.at(iou_out[i], (rows, cr.level[None, :]), iou)
        np.maximum.at(iobb_out[i], (rows, cr.level[None, :]), iobb)
    return iou_out, iobb_out
