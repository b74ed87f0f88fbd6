"""Floors: the image-independent references scored on box geometry alone (wsl_bench.metrics.floors)."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.localize.maps import prepare
from wsl_bench.localize.policies import wang2017
from wsl_bench.metrics import SIZE_BINS
from wsl_bench.metrics.floors import (
    FloorCohort,
    collect,
    composition,
    markdown_report,
    nih_cohort,
    reference_config,
    reference_maps,
    score_cohort,
    synth_cohort,
)
from wsl_bench.methods import create_method

# prior-lung, wang2017 boxes, on the 984 real NIH boxes (1024-px frame): the geometry is fixed, so exact.
NIH_PRIOR_LUNG_MACRO_01 = 0.647


def _xywh(xyxy):
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return x0, y0, x1 - x0, y1 - y0


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """prior-center's map on 1000x1000 images; boxes placed at its own wang2017 candidates."""
    side = 1000
    pmap = reference_maps(create_method("prior-center"))["Mass"]
    cand = wang2017().candidates(*prepare(pmap, (side, side)))
    assert len(cand) == 2  # one connected region at each of the two thresholds
    areas = (cand.boxes[:, 2] - cand.boxes[:, 0]) * (cand.boxes[:, 3] - cand.boxes[:, 1])
    outer, inner = cand.boxes[np.argmax(areas)], cand.boxes[np.argmin(areas)]
    ix, iy, iw, ih = _xywh(inner)
    rows = [
        ("a.png", "Mass", *_xywh(inner)),  # equal to a candidate: IoU 1
        ("b.png", "Nodule", 2.0, 2.0, 10.0, 10.0),  # in a corner, outside both candidates: IoU 0
        ("c.png", "Effusion", *_xywh(outer)),  # equal to the other candidate: IoU 1
        ("d.png", "Effusion", ix + iw / 2, iy, iw, ih),  # the inner box shifted by half its width: IoU 1/3
    ]
    boxes = pd.DataFrame(rows, columns=["image_id", "label", "x", "y", "w", "h"])
    maps = reference_maps(create_method("prior-center"))
    cohort = FloorCohort("toy", boxes, side, {"a.png": "1", "b.png": "2", "c.png": "3", "d.png": "3"},
                         {"prior-center": maps})
    out = tmp_path_factory.mktemp("toy")
    folders = score_cohort(cohort, out, ["prior-center"], ["wang2017", "threshold", "calibrated", "maxboxacc"], n_boot=20,
                           sweep_size=250)
    return boxes, folders, collect(out, folders, "toy")


def _v(rows, **eq):
    sel = np.ones(len(rows), dtype=bool)
    for k, v in eq.items():
        sel &= (rows[k] == v).to_numpy()
    assert sel.sum() == 1, eq
    return float(rows.loc[sel, "value"].iloc[0])


def test_boxes_at_the_priors_own_candidates_get_known_answers(hand_made):
    boxes, folders, rows = hand_made
    pb = pd.read_csv(folders["prior-center"]["wang2017"] / "per_box.csv").set_index("image_id")
    assert pb.loc["a.png", "best_iou"] == pytest.approx(1.0)
    assert pb.loc["b.png", "best_iou"] == 0.0
    assert pb.loc["c.png", "best_iou"] == pytest.approx(1.0)
    assert pb.loc["d.png", "best_iou"] == pytest.approx(1 / 3)
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        kw = dict(method="prior-center", policy="wang2017", metric="iou_acc", size_bin="all", threshold=t)
        assert _v(rows, label="Mass", **kw) == 1.0
        assert _v(rows, label="Nodule", **kw) == 0.0
        effusion = 1.0 if t < 1 / 3 else 0.5  # c.png always, d.png only while 1/3 > T
        assert _v(rows, label="Effusion", **kw) == effusion
        assert _v(rows, label="macro", **kw) == pytest.approx((1 + 0 + effusion) / 3)
        assert _v(rows, label="micro", **kw) == pytest.approx((2 + (t < 1 / 3)) / 4)
    for t in (0.1, 0.25, 0.5, 0.75, 0.9):  # IoBB of a candidate equal to the box is 1, of none 0
        kw = dict(method="prior-center", policy="wang2017", metric="iobb_acc", size_bin="all", threshold=t)
        assert _v(rows, label="Mass", **kw) == 1.0 and _v(rows, label="Nodule", **kw) == 0.0


def test_rows_carry_box_counts_and_size_bins(hand_made):
    boxes, folders, rows = hand_made
    area = (boxes["w"] * boxes["h"] / 1e6).to_numpy()
    expected = {name: int(((area >= lo) & (area < hi)).sum()) for name, lo, hi in SIZE_BINS}
    assert expected["small"] == 1  # the 10x10 corner box
    wang = rows[(rows["policy"] == "wang2017") & (rows["metric"] == "iou_acc") & (rows["threshold"] == 0.1)]
    for name, n in expected.items():
        got = wang[(wang["size_bin"] == name) & (wang["label"] == "macro")]
        assert (int(got["n_boxes"].iloc[0]) if len(got) else 0) == n
    assert int(wang[(wang["size_bin"] == "all") & (wang["label"] == "Effusion")]["n_boxes"].iloc[0]) == 2
    pb = pd.read_csv(folders["prior-center"]["wang2017"] / "per_box.csv")
    comp = composition({"toy": pb})
    cal = pd.read_csv(folders["prior-center"]["calibrated"] / "per_box.csv")  # evaluation half only
    assert len(cal) < len(boxes)
    alls = comp[comp["label"] == "all"].set_index("size_bin")
    assert alls["n_boxes"].to_dict() == expected
    assert alls["share"].sum() == pytest.approx(1.0)


def test_every_policy_scores_with_bootstrap_cis(hand_made):
    _, folders, rows = hand_made
    assert set(rows["policy"]) == {"wang2017", "threshold", "calibrated", "maxboxacc"}
    s = json.loads((folders["prior-center"]["maxboxacc"] / "summary.json").read_text())
    assert "maxboxacc" in s and s["bootstrap"]["n_boot"] == 20
    assert s["policy_options"]["sweep_size"] == 250  # passed to the sweeping policies
    ci = rows[(rows["policy"] == "wang2017") & (rows["label"] == "macro") & (rows["size_bin"] == "all")]
    assert set(ci["metric"]) == {"iou_acc", "iobb_acc"} and ci["ci_low"].notna().all()
    assert (ci["ci_low"] <= ci["value"] + 1e-12).all() and (ci["value"] <= ci["ci_high"] + 1e-12).all()


@pytest.fixture(scope="module")
def nih_cli(tmp_path_factory):
    """`wsl-bench floors` on NIH only, prior-lung, wang2017 boxes, no bootstrap: one scoring pass."""
    out = tmp_path_factory.mktemp("floors") / "nih"
    res = CliRunner().invoke(app, ["floors", "--no-synth", "--policies", "wang2017", "--methods", "prior-lung",
                                   "--n-boot", "0", "--out", str(out)])
    return out, res


def test_floors_cli_writes_its_files_and_the_nih_figures(nih_cli):
    out, res = nih_cli
    assert res.exit_code == 0, res.output
    for name in ("floors.csv", "floors.json", "floors.md", "composition.csv"):
        assert (out / name).is_file(), name
    assert (out / "scores" / "nih" / "prior-lung" / "wang2017" / "summary.json").is_file()
    assert "| prior-lung | wang2017 | 0.65" in res.output
    rows = pd.read_csv(out / "floors.csv")
    macro = rows[(rows["cohort"] == "nih") & (rows["metric"] == "iou_acc") & (rows["size_bin"] == "all")
                 & (rows["label"] == "macro")]
    lung = macro[(macro["method"] == "prior-lung") & (macro["threshold"] == 0.1)]
    assert float(lung["value"].iloc[0]) == pytest.approx(NIH_PRIOR_LUNG_MACRO_01, abs=0.01)
    assert set(rows["method"]) == {"prior-lung"} and set(rows["policy"]) == {"wang2017"}
    assert int(lung["n_boxes"].iloc[0]) == 984
    # the summary.json the scorer wrote is the source of every number
    s = json.loads((out / "scores" / "nih" / "prior-lung" / "wang2017" / "summary.json").read_text())
    assert float(lung["value"].iloc[0]) == s["iou_acc"]["macro"]["0.1"]
    assert s["bootstrap"]["unit"] == "patient" and s["n_images"] == 880
    meta = json.loads((out / "floors.json").read_text())["meta"]
    assert meta["command"] == ("wsl-bench floors --out " + str(out) +
                               " --no-synth --policies wang2017 --methods prior-lung --n-boot 0")


def test_nih_size_bins_are_the_box_tertiles(nih_cli):
    out, _ = nih_cli
    comp = pd.read_csv(out / "composition.csv")
    alls = comp[(comp["cohort"] == "nih") & (comp["label"] == "all")]
    assert alls["n_boxes"].sum() == 984
    assert (alls["share"] - 1 / 3).abs().max() < 0.03  # SIZE_BINS are the tertiles of these boxes
    per_class = comp[(comp["cohort"] == "nih") & (comp["label"] != "all")]
    assert per_class.groupby("label")["n_boxes"].sum().to_dict()["Atelectasis"] == 180


def test_synth_cohort_beside_nih(nih_cli):
    """The SynthCXR side (tiny preset here): fitted prior-lung, its test boxes, the realism table."""
    out, _ = nih_cli
    sc = synth_cohort(seed=0, preset="tiny", methods=["prior-lung"])
    assert sc.name == "synth" and len(sc.boxes) > 0
    atlas = reference_maps(create_method("prior-lung"))["Mass"]
    fitted = sc.maps["prior-lung"]["Mass"]
    assert fitted.shape == atlas.shape and not np.allclose(fitted, atlas)  # fitted on the split's lung masks
    assert all(np.array_equal(m, fitted) for m in sc.maps["prior-lung"].values())  # one map for every class
    folders = score_cohort(sc, out / "synth-scores", ["prior-lung"], ["wang2017"], n_boot=0)
    rows = pd.concat([pd.read_csv(out / "floors.csv"), collect(out, folders, "synth")], ignore_index=True)
    pbs = {"nih": pd.read_csv(out / "scores" / "nih" / "prior-lung" / "wang2017" / "per_box.csv"),
           "synth": pd.read_csv(folders["prior-lung"]["wang2017"] / "per_box.csv")}
    md = markdown_report(rows, composition(pbs), {"command": "x", "n_boot": 0, "synth_seed": 0, "synth_preset": "tiny"})
    assert "## SynthCXR beside NIH (wang2017 boxes)" in md
    line = next(l for l in md.splitlines() if l.startswith("| macro | 984 | "))
    assert line.count("|") == 10  # group, n NIH, n Synth, and NIH/Synth at T 0.1, 0.2, 0.3


@pytest.mark.parametrize("preset", ["tiny", "quick", "standard"])
def test_the_synth_cohort_is_loaded_and_fitted_as_a_run_does(preset):
    """synth_cohort's config parts are exactly those `wsl-bench run --preset P --seed S` resolves."""
    from wsl_bench.config import build_config

    for seed, methods in ((0, ["prior-center", "prior-lung"]), (7, ["prior-lung"])):
        run = build_config(methods, preset=preset, seed=seed)
        parts = reference_config(preset, seed, methods)
        assert parts == {"seed": run["seed"], "data": run["data"], "methods": {m: run["methods"][m] for m in methods}}
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        reference_config("huge", 0)
    with pytest.raises(ValueError, match=r"seed=-1 is out of range"):
        reference_config("tiny", -1)


def test_floors_cli_bad_input_is_one_line_exit_2(tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    cases = {
        "is a file, not a folder": ["--out", str(tmp_path / "file.txt" / "floors")],
        "unknown policy 'best'": ["--policies", "wang2017,best", "--out", str(tmp_path / "o")],
        "not an image-independent reference": ["--methods", "gradcam", "--out", str(tmp_path / "o")],
        "--n-boot -1": ["--n-boot", "-1", "--out", str(tmp_path / "o")],
        "--sweep-size -5": ["--sweep-size", "-5", "--out", str(tmp_path / "o")],
    }
    for needle, args in cases.items():
        res = CliRunner().invoke(app, ["floors", "--no-synth", *args])
        assert res.exit_code == 2, (needle, res.output)
        assert needle in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "o").exists()


def test_nih_cohort_uses_the_wheel_geometry(nih_cli):
    c = nih_cohort(["prior-lung"])
    assert len(c.boxes) == 984 and c.boxes["image_id"].nunique() == 880
    assert c.sizes == 1024 and len(c.patients) == 880
    assert set(c.maps["prior-lung"]) == set(c.boxes["label"])
    # the composition is binned exactly as the scorer bins the same boxes
    out, _ = nih_cli
    pb = pd.read_csv(out / "scores" / "nih" / "prior-lung" / "wang2017" / "per_box.csv")
    pd.testing.assert_frame_equal(composition({"nih": c.binned_boxes()}), composition({"nih": pb}))


def test_realism_gaps_name_the_cells_out_of_tolerance():
    """Known answers: one class 0.15 off at T 0.3, one bin 0.1 off (not more: inside), one share 6 points off."""
    from wsl_bench.metrics.floors import realism_gaps

    def row(cohort, size_bin, label, t, v):
        return dict(cohort=cohort, method="prior-lung", policy="wang2017", metric="iou_acc", size_bin=size_bin,
                    label=label, threshold=t, value=v, ci_low=None, ci_high=None, n_boxes=10)

    rows = []
    for t in (0.1, 0.2, 0.3):
        rows += [row("nih", "all", "Mass", t, 0.40), row("synth", "all", "Mass", t, 0.55 if t == 0.3 else 0.45),
                 row("nih", "large", "macro", t, 0.60), row("synth", "large", "macro", t, 0.70),
                 row("nih", "all", "Nodule", t, 0.0)]  # no SynthCXR Nodule row: skipped
    comp = pd.DataFrame([dict(cohort=c, size_bin=b, label="all", share=s) for c, b, s in
                         [("nih", "small", 1 / 3), ("nih", "medium", 1 / 3), ("nih", "large", 1 / 3),
                          ("synth", "small", 0.40), ("synth", "medium", 0.30), ("synth", "large", 0.30)]])
    gaps = realism_gaps(pd.DataFrame(rows), comp)
    assert [(g["kind"], g["group"], g["threshold"]) for g in gaps] == [("iou_acc", "Mass", 0.3), ("share", "small", None)]
    assert gaps[0]["nih"] == 0.40 and gaps[0]["synth"] == 0.55
