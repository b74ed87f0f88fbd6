"""The single-map policies: ``wang2017`` and ``threshold`` apply one `BoxPolicy` to every map."""

from __future__ import annotations

from wsl_bench.localize.policies import BoxPolicy, threshold, wang2017
from wsl_bench.localize.registry import Policy, register_policy


@register_policy
class Wang2017(Policy):
    """Wang et al. (CVPR 2017): thresholds 60/255 and 180/255, every component a candidate."""

    name = "wang2017"
    description = "Wang et al. 2017: min-max normalise, threshold at 60/255 and 180/255, all components"
    fixed_options = ("tau", "components")

    def single_map(self, opts) -> BoxPolicy:
        return wang2017()

    def from_summary(self, summary, label) -> BoxPolicy:
        return wang2017()


@register_policy
class Threshold(Policy):
    """One threshold tau on the [0,1]-normalised map, all components or the largest."""

    name = "threshold"
    description = "one threshold tau on the [0,1]-normalised map; components all (default) or largest"
    options = {"tau": 0.5, "components": None}
    recorded_options = ("tau", "components")

    def single_map(self, opts) -> BoxPolicy:
        return threshold(opts["tau"], opts["components"] or "all")

    def from_summary(self, summary, label) -> BoxPolicy:
        opts = summary.get("policy_options", {}) or {}
        return threshold(float(opts.get("tau", 0.5)), opts.get("components") or "all")
