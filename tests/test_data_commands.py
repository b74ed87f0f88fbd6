"""`wsl-bench synth preview|export` and `datasets info --data synth` from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from wsl_bench.cli import app


def test_synth_preview_writes_png(tmp_path):
    out = tmp_path / "p.png"
    res = CliRunner().invoke(app, ["synth", "preview", "--out", str(out), "--n", "4", "--size", "64"])
    assert res.exit_code == 0, res.output
    from PIL import Image

    im = Image.open(out)
    assert im.size[0] > 200 and im.size[1] > 100


def test_synth_preview_rejects_unknown_confounder(tmp_path):
    res = CliRunner().invoke(app, ["synth", "preview", "--out", str(tmp_path / "p.png"), "--confounders", "ruler"])
    assert res.exit_code == 2 and "unknown confounder" in res.output


def test_synth_export_then_nih_loader_roundtrip(tmp_path):
    out = tmp_path / "nih"
    res = CliRunner().invoke(app, ["synth", "export", "--n", "30", "--out", str(out), "--size", "48", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["images"] == 30 and summary["test"] == 6 and summary["train_val"] == 24
    for name in ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"):
        assert (out / name).is_file()
    assert len(list((out / "images_001" / "images").glob("*.png"))) == 30
    from wsl_bench.data.nih import load_nih

    c = load_nih(out, image_size=48, val_fraction=0.0)
    assert len(c.train) == 24 and len(c.test) == 6
    assert len(c.test.boxes) == summary["boxes"]
    # boxes are the exact lesion extents: the exported pixels differ inside a nodule/mass box
    from wsl_bench.labels import FINDINGS

    assert c.test.labels.shape == (6, len(FINDINGS))


def test_datasets_info_synth_json():
    res = CliRunner().invoke(app, ["datasets", "info", "--data", "synth", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["split"] == {"train": 2400, "val": 400, "test": 600}
    assert all(v >= 0.09 for k, v in d["prevalence"].items() if k in ("Nodule", "Pneumonia", "Cardiomegaly"))


def test_commands_have_examples():
    for args in (["synth", "preview", "--help"], ["synth", "export", "--help"], ["datasets", "info", "--help"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0 and "Example: wsl-bench" in res.output
