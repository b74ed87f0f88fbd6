"""wsl-bench: weakly-supervised localization benchmark for chest X-rays.

`wsl_bench.score(maps, boxes, image_sizes, ...)` scores heatmaps from Python (see docs/scoring.md,
"Scoring from Python"); it is imported on first use, so ``import wsl_bench`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["ScoreResult", "__version__", "score"]


def __getattr__(name: str):
    if name == "score":
        from wsl_bench.metrics.python_api import score_maps

        return score_maps
    if name == "ScoreResult":
        from wsl_bench.metrics.evaluator import ScoreResult

        return ScoreResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
