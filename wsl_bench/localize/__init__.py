"""Heatmap -> boxes: upsampling, normalisation, connected components and the named policies."""

from wsl_bench.localize.components import Candidates, threshold_candidates
from wsl_bench.localize.geometry import box_mask, overlaps, xywh_to_xyxy
from wsl_bench.localize.maps import normalize_, prepare, upsample, working_size
from wsl_bench.localize.policies import (
    COMPONENT_RULES,
    POLICY_NAMES,
    SWEEP_GRID,
    WANG2017_THRESHOLDS,
    BoxPolicy,
    sweep_overlaps,
    threshold,
    wang2017,
)

__all__ = [
    "COMPONENT_RULES",
    "POLICY_NAMES",
    "SWEEP_GRID",
    "WANG2017_THRESHOLDS",
    "BoxPolicy",
    "Candidates",
    "box_mask",
    "normalize_",
    "overlaps",
    "prepare",
    "sweep_overlaps",
    "threshold",
    "threshold_candidates",
    "upsample",
    "wang2017",
    "working_size",
    "xywh_to_xyxy",
]
