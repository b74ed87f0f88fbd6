"""The built-in metrics' declarations: the per-box columns and summary.json keys each one writes.

Their values come from the scorer's own code (`evaluator.BoxScorer`, `aggregate.summarize_boxes`,
`pixel.PxAPAccumulator`, `classification.auroc_summary`), which streams each map once for all of them;
these classes say what that code writes, in the order the report lists them.
"""

from __future__ import annotations

from wsl_bench.metrics.aggregate import IOBB_THRESHOLDS, IOU_THRESHOLDS, fp_column, hit_column
from wsl_bench.metrics.registry import Metric, register_metric


class _Builtin(Metric):
    builtin = True


@register_metric
class IoUAccuracy(_Builtin):
    """Fraction of boxes whose best candidate has IoU > T, per class / macro / micro, per size bin."""

    name = "iou_acc"
    title = "IoU accuracy"
    kind = "thresholds"
    summary_keys = ("iou_acc",)
    threshold_option = "iou_thresholds"
    default_thresholds = IOU_THRESHOLDS

    def columns(self, opts):
        return ("best_iou", *(hit_column("iou", t) for t in opts["iou_thresholds"]))


@register_metric
class IoBBAccuracy(_Builtin):
    """Fraction of boxes whose best candidate has IoBB (intersection over the candidate) > T."""

    name = "iobb_acc"
    title = "IoBB accuracy"
    kind = "thresholds"
    summary_keys = ("iobb_acc",)
    threshold_option = "iobb_thresholds"
    default_thresholds = IOBB_THRESHOLDS

    def columns(self, opts):
        return ("best_iobb", *(hit_column("iobb", t) for t in opts["iobb_thresholds"]))


@register_metric
class AverageFalsePositives(_Builtin):
    """Wang et al.'s AFP: candidates with IoBB <= T against every box of their map, per scored map."""

    name = "afp"
    title = "Average false positives"
    kind = "thresholds"
    summary_keys = ("afp",)
    threshold_option = "iobb_thresholds"
    default_thresholds = IOBB_THRESHOLDS

    def columns(self, opts):
        return ("n_candidates", *(fp_column(t) for t in opts["iobb_thresholds"]))


@register_metric
class Pointing(_Builtin):
    """Pointing game: the map's maximum inside the box (grown by pointing_tolerance pixels)."""

    name = "pointing"
    title = "Pointing game"
    summary_keys = ("pointing",)

    def columns(self, opts):
        return ("pointing_hit",)


@register_metric
class MeanIoU(_Builtin):
    """Pixel IoU of the thresholded map with the box mask, averaged over miou_thresholds."""

    name = "miou"
    title = "mIoU"
    summary_keys = ("miou",)

    def columns(self, opts):
        return ("miou",)


@register_metric
class ContrastToNoise(_Builtin):
    """Contrast-to-noise ratio of the normalised map inside against outside the boxes."""

    name = "cnr"
    title = "CNR"
    summary_keys = ("cnr",)

    def columns(self, opts):
        return ("cnr",)


@register_metric
class MeanBestIoU(_Builtin):
    """Mean over boxes of the best candidate's IoU."""

    name = "mean_best_iou"
    title = "Mean best IoU"
    summary_keys = ("mean_best_iou",)

    def columns(self, opts):
        return ("best_iou",)


@register_metric
class PixelAP(_Builtin):
    """Pixel average precision against pixel masks (wsolevaluation's PxAP), per class and macro."""

    name = "pxap"
    title = "PxAP"
    summary_keys = ("pxap",)
    needs = ("masks",)


@register_metric
class ClassificationAUROC(_Builtin):
    """Classification AUROC of the image-level probabilities per finding, with patient-bootstrap CIs."""

    name = "auroc"
    title = "Classification AUROC"
    kind = "other"
    summary_keys = ("auroc",)
    needs = ("probs", "labels")
