"""Heatmap -> boxes: upsampling, normalisation, connected components and the box-policy registry."""

from wsl_bench.localize.components import Candidates, threshold_candidates
from wsl_bench.localize.geometry import box_mask, overlaps, xywh_to_xyxy
from wsl_bench.localize.maps import normalize_, prepare, upsample, working_size
from wsl_bench.localize.policies import (
    COMPONENT_RULES,
    SWEEP_GRID,
    WANG2017_THRESHOLDS,
    BoxPolicy,
    sweep_overlaps,
    threshold,
    wang2017,
)
from wsl_bench.localize.registry import (
    ChosenSetting,
    Policy,
    PolicyTable,
    get_policy,
    policy_names,
    register_policy,
    unregister_policy,
)


def __getattr__(name: str):
    if name == "POLICY_NAMES":  # the registered policy names, read when asked for (plug-ins included)
        return policy_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMPONENT_RULES",
    "POLICY_NAMES",
    "SWEEP_GRID",
    "WANG2017_THRESHOLDS",
    "BoxPolicy",
    "Candidates",
    "ChosenSetting",
    "Policy",
    "PolicyTable",
    "box_mask",
    "get_policy",
    "normalize_",
    "overlaps",
    "policy_names",
    "prepare",
    "register_policy",
    "sweep_overlaps",
    "threshold",
    "threshold_candidates",
    "unregister_policy",
    "upsample",
    "wang2017",
    "working_size",
    "xywh_to_xyxy",
]
