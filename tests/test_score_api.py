"""`wsl_bench.score` from Python: the example of docs/scoring.md, the accepted map forms, known answers,
and errors that say what to change."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import wsl_bench
from wsl_bench.metrics import IOU_THRESHOLDS

SIZE = 64
BOXES = pd.DataFrame([
    dict(image_id="img0", label="Mass", x=10, y=12, w=20, h=16),
    dict(image_id="img1", label="Nodule", x=30, y=5, w=8, h=8),
    dict(image_id="img2", label="Mass", x=0, y=40, w=40, h=20),
])


def box_map(x, y, w, h, size=SIZE):
    m = np.zeros((size, size), np.float32)
    m[y : y + h, x : x + w] = 1.0
    return m


def test_docs_example_a_map_that_is_its_box_scores_iou_one_everywhere():
    # docs/scoring.md, "Scoring from Python"
    import numpy as np
    import pandas as pd

    import wsl_bench

    boxes = pd.DataFrame({"image_id": ["img0"], "label": ["Mass"], "x": [10], "y": [12], "w": [20], "h": [16]})
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[12:28, 10:30] = 1.0  # exactly the box
    result = wsl_bench.score({"img0::Mass": heatmap}, boxes, image_sizes=64, n_boot=0)

    assert result.per_box.loc[0, "best_iou"] == 1.0
    assert result.summary["iou_acc"]["macro"] == {"0.1": 1.0, "0.2": 1.0, "0.3": 1.0, "0.4": 1.0, "0.5": 1.0,
                                                  "0.6": 1.0, "0.7": 1.0}


def test_dict_of_exact_box_maps_hits_at_every_threshold():
    maps = {f"{r.image_id}::{r.label}": box_map(r.x, r.y, r.w, r.h) for r in BOXES.itertuples()}
    r = wsl_bench.score(maps, BOXES, SIZE, n_boot=0)
    assert isinstance(r, wsl_bench.ScoreResult)
    assert (r.per_box["best_iou"] == 1.0).all() and r.per_box["pointing_hit"].all()
    for t in IOU_THRESHOLDS:
        assert r.summary["iou_acc"]["micro"][f"{t:g}"] == 1.0
    assert r.summary["policy"] == "wang2017" and r.summary["n_boxes"] == 3


def test_constant_and_empty_maps_are_misses():
    maps = {"img0::Mass": np.full((SIZE, SIZE), 0.7, np.float32), "img1::Nodule": np.zeros((8, 8), np.float32),
            "img2::Mass": box_map(0, 40, 40, 20)}
    r = wsl_bench.score(maps, BOXES, SIZE, n_boot=0)
    pb = r.per_box.set_index("image_id")
    for image_id in ("img0", "img1"):
        assert pb.loc[image_id, "best_iou"] == 0.0 and not pb.loc[image_id, "pointing_hit"]
        assert pb.loc[image_id, "n_candidates"] == 0 and not pb.loc[image_id, "iou_hit_0.1"]
    assert pb.loc["img2", "best_iou"] == 1.0
    assert r.summary["iou_acc"]["micro"]["0.5"] == pytest.approx(1 / 3)


def test_triple_forms_equal_the_dict_form():
    maps = {f"{r.image_id}::{r.label}": box_map(r.x, r.y, r.w, r.h) for r in BOXES.itertuples()}
    maps["img1::Nodule"] = np.roll(maps["img1::Nodule"], 3, axis=1)  # a partial hit, so rows differ
    want = wsl_bench.score(maps, BOXES, SIZE, n_boot=0).per_box
    ids, labels = list(BOXES["image_id"]), list(BOXES["label"])
    stack = np.stack([maps[f"{i}::{l}"] for i, l in zip(ids, labels)])
    got = wsl_bench.score((ids, labels, stack), BOXES, SIZE, n_boot=0).per_box
    pd.testing.assert_frame_equal(got, want)
    # [N, L, h, w] with the class of each channel, as a method's explain returns (a torch tensor here)
    classes = ["Mass", "Nodule"]
    per_class = np.zeros((3, 2, SIZE, SIZE), np.float32)
    for n, (i, l) in enumerate(zip(ids, labels)):
        per_class[n, classes.index(l)] = maps[f"{i}::{l}"]
    got4 = wsl_bench.score((ids, classes, torch.from_numpy(per_class)), BOXES, SIZE, n_boot=0)
    pd.testing.assert_frame_equal(got4.per_box, want)
    assert got4.summary["n_maps_without_boxes"] == 3  # the other class's channel of each image


def test_label_spelling_and_box_csv_path(tmp_path):
    boxes = pd.DataFrame([dict(image_id="a", label="Infiltrate", x=4, y=4, w=10, h=12)])
    path = tmp_path / "boxes.csv"
    boxes.to_csv(path, index=False)
    r = wsl_bench.score({"a::Infiltration": box_map(4, 4, 10, 12, 32)}, path, 32, n_boot=0)  # label-file spelling
    assert r.per_box.loc[0, "best_iou"] == 1.0 and r.per_box.loc[0, "label"] == "Infiltrate"


@pytest.mark.parametrize("maps, needle", [
    ({"img0-Mass": np.ones((4, 4))}, "is not of the form '<image id>::<finding label>'"),
    ({"::Mass": np.ones((4, 4))}, "is not of the form"),
    ({"a::Infiltration": np.ones((4, 4)), "a::Infiltrate": np.ones((4, 4))}, "name the same map"),
    ((["a", "b"], ["Mass"] * 3, np.ones((2, 4, 4))), "3 labels for 2 maps"),
    ((["a", "b"], ["Mass", "Nodule"], np.ones((2, 3, 4, 4))), "needs L = 3 labels"),
    ((["a"], "Mass", np.ones((2, 4, 4))), "expected [N, h, w] or [N, L, h, w] with N = 1"),
    ((["a", "a"], "Mass", np.ones((2, 4, 4))), "appears twice"),
    (np.ones((4, 4)), "maps must be a dict keyed"),
])
def test_bad_maps_say_what_to_change(maps, needle):
    with pytest.raises(ValueError) as err:
        wsl_bench.score(maps, BOXES, SIZE, n_boot=0)
    assert needle in str(err.value)


def test_bad_boxes_and_unknown_options_are_clear_errors():
    maps = {"img0::Mass": box_map(10, 12, 20, 16)}
    with pytest.raises(ValueError, match="boxes must be a DataFrame"):
        wsl_bench.score(maps, [1, 2, 3], SIZE)
    with pytest.raises(ValueError, match="unknown scoring option"):
        wsl_bench.score(maps, BOXES.iloc[:1], SIZE, bogus=1)
    with pytest.raises(ValueError, match="unknown policy 'best'; choose one of wang2017, threshold"):
        wsl_bench.score(maps, BOXES.iloc[:1], SIZE, policy="best")


def test_policy_options_and_out_dir_pass_through(tmp_path):
    maps = {f"{r.image_id}::{r.label}": box_map(r.x, r.y, r.w, r.h) for r in BOXES.itertuples()}
    r = wsl_bench.score(maps, BOXES, SIZE, policy="threshold", tau=0.3, components="largest", n_boot=0,
                        out_dir=tmp_path / "s")
    assert r.summary["policy_options"]["tau"] == 0.3 and r.summary["policy_options"]["components"] == "largest"
    assert (tmp_path / "s" / "per_box.csv").is_file() and (tmp_path / "s" / "summary.json").is_file()


def test_importing_wsl_bench_stays_light():
    code = "import sys, wsl_bench; print(sorted(m for m in ('numpy', 'pandas', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert callable(wsl_bench.score) and "score" in dir(wsl_bench)
    with pytest.raises(AttributeError):
        wsl_bench.no_such_name  # noqa: B018
