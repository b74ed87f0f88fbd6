"""Scoring: box metrics, pixel metrics, bootstrap CIs and the `score` entry point."""

from wsl_bench.metrics.aggregate import IOBB_THRESHOLDS, IOU_THRESHOLDS, SIZE_BINS, summarize_boxes
from wsl_bench.metrics.bootstrap import paired_bootstrap
from wsl_bench.metrics.evaluator import DEFAULT_OPTIONS, ScoreResult, calibration_split, score, write_result
from wsl_bench.metrics.readers import check_boxes, read_bbox_csv, read_labels_csv, read_probs_csv

__all__ = [
    "DEFAULT_OPTIONS",
    "IOBB_THRESHOLDS",
    "IOU_THRESHOLDS",
    "SIZE_BINS",
    "ScoreResult",
    "calibration_split",
    "check_boxes",
    "paired_bootstrap",
    "read_bbox_csv",
    "read_labels_csv",
    "read_probs_csv",
    "score",
    "summarize_boxes",
    "write_result",
]
