"""Scoring: box metrics, pixel metrics, bootstrap CIs, the metric registry and the `score` entry point."""

from wsl_bench.metrics.aggregate import IOBB_THRESHOLDS, IOU_THRESHOLDS, SIZE_BINS, summarize_boxes
from wsl_bench.metrics.bootstrap import paired_bootstrap
from wsl_bench.metrics.evaluator import DEFAULT_OPTIONS, ScoreResult, calibration_split, score, write_result
from wsl_bench.metrics.readers import check_boxes, read_bbox_csv, read_labels_csv, read_probs_csv
from wsl_bench.metrics.registry import (
    MapView,
    Metric,
    available_metrics,
    class_means,
    get_metric,
    register_metric,
    unregister_metric,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "IOBB_THRESHOLDS",
    "IOU_THRESHOLDS",
    "SIZE_BINS",
    "MapView",
    "Metric",
    "ScoreResult",
    "available_metrics",
    "calibration_split",
    "check_boxes",
    "class_means",
    "get_metric",
    "paired_bootstrap",
    "read_bbox_csv",
    "read_labels_csv",
    "read_probs_csv",
    "register_metric",
    "score",
    "summarize_boxes",
    "unregister_metric",
    "write_result",
]
