"""The contributor guide's "Adding a box policy" example, executed: register zhou2016, score with it, read
it back through the report, unregister."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

import wsl_bench
from wsl_bench.localize import BoxPolicy, Policy, get_policy, policy_names, prepare, register_policy
from wsl_bench.localize import unregister_policy
from wsl_bench.report.scoring_api import predicted_boxes

SIZE = 128


@pytest.fixture
def zhou2016():
    """The guide's example, registered for one test and removed afterwards."""

    @register_policy
    class Zhou2016(Policy):
        """The largest component above `zhou_fraction` of the [0,1]-normalised map."""

        name = "zhou2016"
        description = "largest component above zhou_fraction (default 0.2) of the [0,1]-normalised map"
        options = {"zhou_fraction": 0.2}  # score(..., zhou_fraction=0.3) sets it
        recorded_options = ("zhou_fraction",)  # written to summary["policy_options"]

        def check(self, given):
            super().check(given)
            f = given.get("zhou_fraction")
            if f is not None and not 0.0 <= float(f) < 1.0:
                raise ValueError(f"zhou_fraction must be in [0, 1), got {f}")

        def single_map(self, opts) -> BoxPolicy:
            return BoxPolicy(self.name, (float(opts["zhou_fraction"]),), "largest")

        def from_summary(self, summary, label) -> BoxPolicy:
            return BoxPolicy(self.name, (float(summary["policy_options"]["zhou_fraction"]),), "largest")

    yield Zhou2016
    unregister_policy("zhou2016")


def two_blob_case():
    """Each map: a bright blob exactly on the box and a fainter, smaller blob elsewhere."""
    boxes = pd.DataFrame([dict(image_id=f"i{i}", label="Mass", x=10 + 5 * i, y=20, w=40, h=30) for i in range(4)])
    maps = {}
    for r in boxes.itertuples():
        m = np.zeros((SIZE, SIZE), np.float32)
        m[r.y : r.y + r.h, r.x : r.x + r.w] = 1.0
        m[100:110, 100:110] = 0.5
        maps[f"{r.image_id}::Mass"] = m
    return boxes, maps


def test_zhou2016_keeps_the_largest_component_only(zhou2016):
    boxes, maps = two_blob_case()
    r = wsl_bench.score(maps, boxes, SIZE, policy="zhou2016", n_boot=0)
    assert (r.per_box["best_iou"] == 1.0).all()
    assert (r.per_box["n_candidates"] == 1).all()  # the distractor is a smaller component: dropped
    assert r.summary["policy"] == "zhou2016"
    assert r.summary["policy_options"]["zhou_fraction"] == 0.2
    assert r.summary["policy_detail"] == {"name": "zhou2016", "thresholds": [0.2], "components": "largest"}
    wang = wsl_bench.score(maps, boxes, SIZE, policy="wang2017", n_boot=0)
    assert (wang.per_box["n_candidates"] == 3).all()  # wang2017: both blobs above 60/255, the box above 180/255


def test_zhou2016_option_is_recorded_and_the_report_rebuilds_its_boxes(zhou2016):
    boxes, maps = two_blob_case()
    for key, m in maps.items():
        maps[key] = ndi.gaussian_filter(m, 3.0)  # soft edges: the box depends on the fraction
    r3 = wsl_bench.score(maps, boxes, SIZE, policy="zhou2016", zhou_fraction=0.3, n_boot=0)
    r6 = wsl_bench.score(maps, boxes, SIZE, policy="zhou2016", zhou_fraction=0.6, n_boot=0)
    assert r3.summary["policy_options"]["zhou_fraction"] == 0.3
    assert (r3.per_box["best_iou"] != r6.per_box["best_iou"]).any()
    for row in r3.per_box.itertuples():
        heatmap = maps[f"{row.image_id}::Mass"]
        applied = get_policy("zhou2016").from_summary(r3.summary, "Mass")
        assert applied == BoxPolicy("zhou2016", (0.3,), "largest")
        cand = applied.candidates(*prepare(heatmap, (SIZE, SIZE)))
        drawn = predicted_boxes(r3.summary, heatmap, (SIZE, SIZE), "Mass")
        assert drawn == [(float(a), float(b), float(c - a), float(d - b)) for a, b, c, d in cand.boxes]
        assert len(drawn) == row.n_candidates == 1


def test_zhou2016_options_are_checked(zhou2016):
    boxes, maps = two_blob_case()
    with pytest.raises(ValueError, match=r"zhou_fraction must be in \[0, 1\), got 1.5"):
        wsl_bench.score(maps, boxes, SIZE, policy="zhou2016", zhou_fraction=1.5)
    with pytest.raises(ValueError, match=r"unknown scoring option\(s\) \['zhou_fraction'\]"):
        wsl_bench.score(maps, boxes, SIZE, policy="wang2017", zhou_fraction=0.3)


def test_the_example_is_unregistered_after_use(zhou2016):
    assert "zhou2016" in policy_names()
    unregister_policy("zhou2016")
    assert "zhou2016" not in policy_names()
    boxes, maps = two_blob_case()
    with pytest.raises(ValueError, match="unknown policy 'zhou2016'"):
        wsl_bench.score(maps, boxes, SIZE, policy="zhou2016")
