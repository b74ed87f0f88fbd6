"""The contributor guide's "Adding a metric" example, executed: register energy-pointing, score with it,
read its column, summary key and report row, unregister."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import wsl_bench
from wsl_bench.localize.geometry import pixel_span
from wsl_bench.metrics import Metric, available_metrics, class_means, register_metric, unregister_metric
from wsl_bench.report.tables import other_metrics

SIZE = 64


@pytest.fixture
def energy_pointing():
    """The guide's example, registered for one test and removed afterwards."""

    @register_metric
    class EnergyPointing(Metric):
        """Sum of the [0,1]-normalised map inside the box over its sum over the image."""

        name = "energy-pointing"
        title = "Energy pointing game"
        kind = "per_class"  # summary["energy_pointing"] = {LABEL: mean, "macro": ..., "micro": ...}
        summary_keys = ("energy_pointing",)
        missing_value = 0.0  # a box without a map scores 0

        def columns(self, opts):
            return ("energy_in_box",)

        def accumulate(self, view):
            norm = view.norm
            total = float(norm.sum(dtype=np.float64))
            shares = []
            for x0, y0, x1, y1 in view.gt:  # a pixel is in the box when its centre is
                r0, r1 = pixel_span(y0, y1, norm.shape[0])
                c0, c1 = pixel_span(x0, x1, norm.shape[1])
                inside = float(norm[r0:r1, c0:c1].sum(dtype=np.float64))
                shares.append(inside / total if total > 0 else 0.0)
            return {"energy_in_box": np.array(shares)}

        def compute(self, per_box, opts):
            return {"energy_pointing": class_means(per_box, "energy_in_box")}

    yield EnergyPointing
    unregister_metric("energy-pointing")


BOXES = pd.DataFrame([
    dict(image_id="a", label="Mass", x=8, y=8, w=16, h=16),
    dict(image_id="b", label="Mass", x=30, y=30, w=20, h=10),
    dict(image_id="c", label="Nodule", x=0, y=0, w=32, h=64),
    dict(image_id="d", label="Nodule", x=10, y=10, w=8, h=8),
])


def maps_of_known_energy():
    """a: exactly its box (share 1); b: half of the mass in the box (share 0.5); c: a left-right ramp over a
    left-half box; d: constant (no location: share 0)."""
    a = np.zeros((SIZE, SIZE), np.float32)
    a[8:24, 8:24] = 1.0
    b = np.zeros((SIZE, SIZE), np.float32)
    b[30:40, 30:50] = 1.0
    b[0:10, 0:20] = 1.0  # as much mass outside the box
    c = np.tile(np.arange(SIZE, dtype=np.float32), (SIZE, 1))
    return {"a::Mass": a, "b::Mass": b, "c::Nodule": c, "d::Nodule": np.full((SIZE, SIZE), 3.0, np.float32)}


def test_energy_pointing_has_the_known_shares(energy_pointing, tmp_path):
    r = wsl_bench.score(maps_of_known_energy(), BOXES, SIZE, n_boot=0, out_dir=tmp_path)
    share = r.per_box.set_index("image_id")["energy_in_box"]
    ramp = np.arange(SIZE) / (SIZE - 1)
    assert share["a"] == 1.0 and share["b"] == 0.5 and share["d"] == 0.0
    assert share["c"] == pytest.approx(ramp[:32].sum() / ramp.sum())
    s = r.summary["energy_pointing"]
    assert s["Mass"] == 0.75 and s["Nodule"] == pytest.approx(share["c"] / 2)
    assert s["macro"] == pytest.approx((0.75 + share["c"] / 2) / 2) and s["micro"] == pytest.approx(share.mean())
    # the files carry the new column (last) and key
    header = (tmp_path / "per_box.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "energy_in_box"
    assert json.loads((tmp_path / "summary.json").read_text())["energy_pointing"]["Mass"] == 0.75
    # the report's other-metrics table lists it while it is registered
    assert other_metrics()[-1] == ("energy_pointing", "Energy pointing game")


def test_energy_pointing_missing_maps_and_every_policy(energy_pointing):
    maps = maps_of_known_energy()
    maps.pop("a::Mass")
    patients = {"a": "p1", "b": "p2", "c": "p3", "d": "p4"}
    for policy in ("wang2017", "threshold", "calibrated", "maxboxacc"):
        r = wsl_bench.score(maps, BOXES, SIZE, policy=policy, patients=patients, n_boot=0, allow_missing=True)
        share = r.per_box.set_index("image_id")["energy_in_box"]
        if "a" in share.index:  # calibrated scores the evaluation half only
            assert share["a"] == 0.0  # missing map: the declared missing value
        if "b" in share.index:
            assert share["b"] == 0.5
        assert "energy_pointing" in r.summary


def test_unregistered_it_is_gone_and_the_scores_are_as_before(energy_pointing):
    with_it = wsl_bench.score(maps_of_known_energy(), BOXES, SIZE, n_boot=10)
    unregister_metric("energy-pointing")
    assert "energy-pointing" not in available_metrics()
    without = wsl_bench.score(maps_of_known_energy(), BOXES, SIZE, n_boot=10)
    assert "energy_in_box" not in without.per_box.columns and "energy_pointing" not in without.summary
    pd.testing.assert_frame_equal(with_it.per_box.drop(columns="energy_in_box"), without.per_box)
    assert {k: v for k, v in with_it.summary.items() if k != "energy_pointing"} == without.summary
