"""`wsl-bench score` end to end on files, and its one-line errors (exit code 2)."""

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.heatmaps import write_bundle

HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


def _files(tmp_path):
    (tmp_path / "boxes.csv").write_text(HEADER + "a.png,Mass,64,64,128,64\nb.png,Infiltrate,10,10,50,50\n")
    m = np.zeros((32, 32), np.float32)
    m[4:8, 4:12] = 1  # cells of 16 px at 512: exactly the Mass box (64, 64, 128, 64)
    write_bundle(tmp_path / "maps.npz", {"a.png::Mass": m, "b.png::Infiltrate": np.eye(8), "c.png::Mass": m})
    (tmp_path / "de.csv").write_text(
        "Image Index,Finding Labels,Patient ID\na.png,Mass,1\nb.png,Infiltration,2\nc.png,No Finding,2\n"
    )
    pd.DataFrame({"image_id": ["a.png", "b.png", "c.png"], "Mass": [0.9, 0.2, 0.1],
                  "Infiltration": [0.1, 0.8, 0.3]}).to_csv(tmp_path / "probs.csv", index=False)


def test_score_command_writes_tables(tmp_path):
    _files(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["score", "--heatmaps", str(tmp_path / "maps.npz"), "--boxes", str(tmp_path / "boxes.csv"),
                                   "--labels", str(tmp_path / "de.csv"), "--probs", str(tmp_path / "probs.csv"),
                                   "--image-size", "512", "--n-boot", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["n_boxes"] == 2 and s["policy"] == "wang2017"
    assert s["iou_acc"]["Mass"]["0.7"] == 1.0 and s["n_maps_without_boxes"] == 1
    assert s["bootstrap"]["unit"] == "patient" and s["auroc"]["per_class"]["Mass"] == 1.0
    assert len(pd.read_csv(out / "per_box.csv")) == 2
    assert "1 map(s) have no ground-truth box" in res.output


def test_score_command_user_errors_are_one_line_exit_2(tmp_path):
    _files(tmp_path)
    base = ["score", "--heatmaps", str(tmp_path / "maps.npz"), "--out", str(tmp_path / "o")]
    (tmp_path / "bad.csv").write_text(HEADER + "a.png,Mass,64,64,128,64\nb.png,Fracture,1,1,2,2\n")
    cases = {
        "unknown finding label 'Fracture'": base + ["--boxes", str(tmp_path / "bad.csv")],
        "outside the 100x100": base + ["--boxes", str(tmp_path / "boxes.csv"), "--image-size", "100"],
        "unknown policy": base + ["--boxes", str(tmp_path / "boxes.csv"), "--policy", "best", "--image-size", "512"],
        "does not exist": ["score", "--heatmaps", str(tmp_path / "nope.npz"), "--boxes", str(tmp_path / "boxes.csv"), "--out", "x"],
    }
    (tmp_path / "more.csv").write_text(HEADER + "a.png,Mass,64,64,128,64\nz.png,Mass,1,1,2,2\n")
    cases["--allow-missing"] = base + ["--boxes", str(tmp_path / "more.csv"), "--image-size", "512"]
    for needle, args in cases.items():
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, (needle, res.output)
        assert needle in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, base + ["--boxes", str(tmp_path / "more.csv"), "--image-size", "512", "--allow-missing",
                                          "--n-boot", "0"])
    assert res.exit_code == 0 and "1 map(s) missing" in res.output


def test_score_help_has_an_example():
    res = CliRunner().invoke(app, ["score", "--help"])
    assert res.exit_code == 0 and "Example: wsl-bench score" in res.output
