"""The stages of a run, in order, each satisfying the protocol in `wsl_bench.stages.base`.

A run goes through PASSES in order. A pass of per-method stages takes one method after another through all
of its stages (a method that fails leaves the pass; the others go on): every method is fitted first (the
extra DDP processes help only there), then each method is explained, randomization-tested and scored in
turn, so its scores exist as soon as they can. The per-run stages (data, report) run once.
"""

from __future__ import annotations

from wsl_bench.stages.base import RunFolder, Stage, entry
from wsl_bench.stages.data import DATA
from wsl_bench.stages.explain import EXPLAIN
from wsl_bench.stages.fit import FIT
from wsl_bench.stages.randomization import RANDOMIZATION
from wsl_bench.stages.report import REPORT
from wsl_bench.stages.score import SCORE

PASSES: tuple[tuple[Stage, ...], ...] = ((DATA,), (FIT,), (EXPLAIN, RANDOMIZATION, SCORE), (REPORT,))
STAGES: tuple[Stage, ...] = tuple(s for p in PASSES for s in p)


def get_stage(name: str) -> Stage:
    """The stage called `name` (data, fit, explain, randomization, score, report)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; the stages are {', '.join(s.name for s in STAGES)}")


__all__ = ["DATA", "EXPLAIN", "FIT", "PASSES", "RANDOMIZATION", "REPORT", "SCORE", "STAGES", "RunFolder", "Stage",
           "entry", "get_stage"]
