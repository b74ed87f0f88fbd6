"""The metric registry: every registered metric's declared columns and summary keys appear in a tiny score's
outputs; the report reads its lists from the declarations; plugged metrics are checked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_policies_registry import SIZE, tiny_case

from wsl_bench.labels import FINDINGS
from wsl_bench.metrics import DEFAULT_OPTIONS, Metric, available_metrics, get_metric, register_metric, score
from wsl_bench.metrics import unregister_metric
from wsl_bench.metrics.aggregate import tkey
from wsl_bench.report import summary_access as sa
from wsl_bench.report.tables import other_metrics

BUILTIN = ("iou_acc", "iobb_acc", "afp", "pointing", "miou", "cnr", "mean_best_iou", "pxap", "auroc")
OPTIONS = {"iou_thresholds": (0.2, 0.5), "iobb_thresholds": (0.3,)}


def inputs(needs, boxes, maps, patients):
    """The score() keywords a metric needs: pixel masks, image-level probabilities and labels."""
    kw = {}
    if "masks" in needs:
        kw["masks"] = {k: np.kron(m > m.mean(), np.ones((4, 4), bool)) for k, m in maps.items()}
    if "probs" in needs or "labels" in needs:
        ids = sorted(boxes["image_id"].unique())
        rng = np.random.default_rng(0)
        index = pd.Index(ids, name="image_id")
        kw["probs"] = pd.DataFrame(rng.random((len(ids), len(FINDINGS))), index=index, columns=FINDINGS)
        labels = pd.DataFrame((rng.random((len(ids), len(FINDINGS))) < 0.5).astype(int), index=index, columns=FINDINGS)
        labels["patient_id"] = [patients[i] for i in ids]
        kw["labels"] = labels
    return kw


def test_builtins_are_registered_in_order_and_built_in():
    metrics = available_metrics()
    assert tuple(metrics)[: len(BUILTIN)] == BUILTIN
    assert all(metrics[n].builtin for n in BUILTIN)
    with pytest.raises(ValueError, match="unknown metric 'nope'; registered: iou_acc, iobb_acc"):
        get_metric("nope")


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("policy", ["wang2017", "maxboxacc"])
def test_declared_columns_and_keys_appear_in_a_tiny_score(tmp_path, name, policy):
    m = get_metric(name)
    boxes, maps, patients = tiny_case(8)
    r = score(maps, boxes, SIZE, policy=policy, patients=patients, n_boot=5, out_dir=tmp_path,
              **inputs(m.needs, boxes, maps, patients), **OPTIONS)
    header = (tmp_path / "per_box.csv").read_text().splitlines()[0].split(",")
    opts = {**DEFAULT_OPTIONS, **OPTIONS}
    assert set(m.columns(opts)) <= set(header)
    written = json.loads((tmp_path / "summary.json").read_text())
    for key in m.summary_keys:
        assert key in written
        if key == "afp" and policy == "maxboxacc":
            assert written[key] is None  # no candidate set, no false positives to count
            continue
        assert written[key] is not None
        if m.kind == "thresholds":
            assert set(written[key]["macro"]) == {tkey(t) for t in opts[m.threshold_option]}
        if m.kind == "per_class":
            assert "macro" in written[key]
    assert set(r.per_box.columns) == set(header)


def test_columns_follow_the_options():
    m = get_metric("iou_acc")
    assert m.columns({**DEFAULT_OPTIONS, **OPTIONS}) == ("best_iou", "iou_hit_0.2", "iou_hit_0.5")
    assert get_metric("afp").columns({**DEFAULT_OPTIONS, **OPTIONS}) == ("n_candidates", "n_fp_iobb_0.3")


def test_the_report_reads_its_lists_from_the_declarations():
    assert sa.IOU_THRESHOLDS == ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7") == get_metric("iou_acc").threshold_keys()
    assert sa.IOBB_THRESHOLDS == ("0.1", "0.25", "0.5", "0.75", "0.9") == get_metric("iobb_acc").threshold_keys()
    assert other_metrics() == [("pointing", "Pointing game"), ("miou", "mIoU"), ("cnr", "CNR"),
                               ("mean_best_iou", "Mean best IoU"), ("pxap", "PxAP")]


class PeakValue(Metric):
    """The raw map's maximum, per box (a test metric)."""

    name = "peak-value"
    title = "Peak value"
    kind = "other"
    summary_keys = ("peak_value",)

    def columns(self, opts):
        return ("peak_value",)

    def accumulate(self, view):
        return {"peak_value": float(view.heatmap.max())}

    def compute(self, per_box, opts):
        return {"peak_value": float(per_box["peak_value"].max())}


def test_registration_refuses_clashes_and_bad_declarations():
    with pytest.raises(TypeError, match="Metric subclass with a name"):
        register_metric(dict)

    class Overwrites(PeakValue):
        name = "overwrites"

        def columns(self, opts):
            return ("best_iou",)

    with pytest.raises(ValueError, match="would overwrite best_iou"):
        register_metric(Overwrites)

    class SameKey(PeakValue):
        name = "same-key"
        summary_keys = ("iou_acc",)

        def columns(self, opts):
            return ("other_column",)

    with pytest.raises(ValueError, match="would overwrite iou_acc"):
        register_metric(SameKey)

    class BadKind(PeakValue):
        name = "bad-kind"
        kind = "table"

    with pytest.raises(ValueError, match="kind must be one of"):
        register_metric(BadKind)

    class NoKeys(PeakValue):
        name = "no-keys"
        summary_keys = ()

    with pytest.raises(ValueError, match="declares no summary_keys"):
        register_metric(NoKeys)
    assert set(available_metrics()) == set(BUILTIN)


@pytest.mark.parametrize("returned, needle", [
    ({"undeclared": 1.0}, "does not declare"),
    ({"peak_value": np.ones(7)}, "expected one value or one per box"),
])
def test_a_plugged_metric_that_breaks_its_declaration_is_an_error(returned, needle):
    class Broken(PeakValue):
        name = "broken"

        def accumulate(self, view):
            return returned

    register_metric(Broken)
    try:
        boxes, maps, _ = tiny_case(4)
        with pytest.raises(ValueError, match=needle):
            score(maps, boxes, SIZE, n_boot=0)
    finally:
        unregister_metric("broken")


def test_a_plugged_metric_adds_its_column_and_key_and_nothing_else_changes(tmp_path):
    boxes, maps, _ = tiny_case(6)
    maps.pop(next(iter(maps)))  # a missing map: its boxes get the metric's missing value
    before = score(maps, boxes, SIZE, n_boot=5, allow_missing=True, out_dir=tmp_path / "before")
    register_metric(PeakValue)
    try:
        after = score(maps, boxes, SIZE, n_boot=5, allow_missing=True, out_dir=tmp_path / "after")
    finally:
        unregister_metric("peak-value")
    assert list(after.per_box.columns) == [*before.per_box.columns, "peak_value"]
    pd.testing.assert_frame_equal(after.per_box.drop(columns="peak_value"), before.per_box)
    assert {k: v for k, v in after.summary.items() if k != "peak_value"} == before.summary
    got = after.per_box.set_index(["image_id", "label"])["peak_value"]
    for key, m in maps.items():
        image_id, label = key.split("::")
        assert (got.loc[(image_id, label)] == float(m.max())).all()
    assert after.per_box.loc[after.per_box["missing"], "peak_value"].isna().all()
    assert after.summary["peak_value"] == float(np.nanmax(got))
    assert json.loads((tmp_path / "after" / "summary.json").read_text())["peak_value"] == after.summary["peak_value"]
