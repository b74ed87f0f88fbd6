"""The randomization stage: the model-randomisation test of a fitted method (Adebayo et al. 2018).

Runs for trainable methods when `score.sanity` is on; writes heatmaps/<method>.randomization.json, which
the method's score stage reads into its sanity summary (`wsl_bench.metrics.run_sanity`).
"""

from __future__ import annotations

from wsl_bench.config import config_hash
from wsl_bench.metrics.run_sanity import RANDOMIZATION_SUFFIX, randomization_stage, wants_randomization
from wsl_bench.metrics.sanity import INSTRUMENTS_VERSION
from wsl_bench.stages.base import RunFolder, is_rank_zero


def sanity_key(run: RunFolder, name: str, explain_key: str) -> str | None:
    """The randomisation stage's key (None when the test does not apply to this method)."""
    if not wants_randomization(run.config, name):
        return None
    sc = run.config["score"]
    return config_hash({"explain": explain_key, "images": sc.get("sanity_images", 16), "seed": run.config["seed"],
                        "instruments": INSTRUMENTS_VERSION})


class RandomizationStage:
    """Cascading re-initialisation of the method's network, maps compared with the trained ones."""

    name = "randomization"
    title = "randomization test"
    per_method = True

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str | None:
        return sanity_key(run, method, upstream[f"explain/{method}"])

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return (f"explain/{method}",)

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return (f"heatmaps/{method}{RANDOMIZATION_SUFFIX}",)

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        return is_rank_zero()

    def run(self, run: RunFolder, cohort, method: str | None, key: str) -> None:
        randomization_stage(run, cohort, method, key)


RANDOMIZATION = RandomizationStage()
