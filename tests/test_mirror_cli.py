"""`wsl-bench synth export --mirror NAME --images all|boxed|N`: the choice reaches the dataset's mirror,
bad values and mirrors that take no choice are one-line errors, and the help's disk estimates hold."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.data import registry
from wsl_bench.data.commands import mirror_images
from wsl_bench.data.mirror import dicom_uid, write_dicom
from wsl_bench.data.rsna import IMAGE_DIRS, LABELS_CSV, RSNAPneumonia, read_labels

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch):
    """Replace the RSNA mirror by a recorder with the same signature."""
    seen = []

    def export_mirror(self, out, *, size=256, seed=0, progress=False, images="boxed"):
        seen.append({"size": size, "seed": seed, "images": images})
        return {"out": str(out), "dataset": self.name, "size": size, "listed_images": 10, "images": 4,
                "rows": 12, "boxes": 3, "box_images": 2}

    monkeypatch.setattr(RSNAPneumonia, "export_mirror", export_mirror)
    return seen


@pytest.mark.parametrize("value, passed", [("all", "all"), ("boxed", "boxed"), (" Boxed ", "boxed"), ("0", 0), ("250", 250)])
def test_images_reaches_the_mirror(calls, tmp_path, value, passed):
    res = runner.invoke(app, ["synth", "export", "--mirror", "rsna-pneumonia", "--images", value, "--size", "64",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls == [{"size": 64, "seed": 0, "images": passed}]
    assert f"wrote 4 of 10 films to {tmp_path}; the annotation file holds every film (2 with 3 boxes)" in res.output


def test_without_images_the_mirror_keeps_its_default(calls, tmp_path):
    res = runner.invoke(app, ["synth", "export", "--mirror", "rsna-pneumonia", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls == [{"size": 1024, "seed": 0, "images": "boxed"}]


@pytest.mark.parametrize("value", ["some", "-3", "1.5", "", "boxed,all"])
def test_bad_images_values_are_one_line_errors(calls, tmp_path, value):
    res = runner.invoke(app, ["synth", "export", "--mirror", "rsna-pneumonia", "--images", value, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "give all, boxed or a whole number of films" in res.output
    assert "Traceback" not in res.output and calls == []
    with pytest.raises(ValueError, match=re.escape(f"--images {value!r}")):
        mirror_images(value)


def test_images_needs_a_mirror_that_takes_it(tmp_path, monkeypatch):
    from wsl_bench.data import export

    monkeypatch.setattr(export, "export_nih_layout", lambda out, **kw: pytest.fail("nothing may be written"))
    res = runner.invoke(app, ["synth", "export", "--mirror", "nih", "--images", "boxed", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--mirror nih writes a fixed set of images and takes no --images; drop --images" in res.output
    res = runner.invoke(app, ["synth", "export", "--images", "10", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "give --mirror NAME too, or drop --images" in res.output
    res = runner.invoke(app, ["synth", "export", "--mirror", "synth", "--images", "10", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "has no mirror export" in res.output


def test_film_mirrors_take_images():
    import inspect

    for name in ("rsna-pneumonia", "siim-pneumothorax", "vindr-cxr"):
        params = inspect.signature(registry.get_dataset(name).export_mirror).parameters
        assert params["images"].default == "boxed", name


def test_a_real_mirror_writes_the_first_n_films(tmp_path):
    out = tmp_path / "rsna"
    res = runner.invoke(app, ["synth", "export", "--mirror", "rsna-pneumonia", "--images", "3", "--size", "32",
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["images"], summary["listed_images"], summary["boxes"]) == (3, 26684, 9555)
    first = list(dict.fromkeys(read_labels(out / LABELS_CSV)["image_id"]))[:3]
    assert sorted(p.stem for p in (out / IMAGE_DIRS[0]).glob("*.dcm")) == sorted(first)
    cohort = RSNAPneumonia().load({"root": str(out), "image_size": 16}, seed=0)
    assert sorted(i for s in (cohort.train, cohort.val, cohort.test) for i in s.image_ids) == sorted(first)
    assert cohort.info["missing_images"] == 26684 - 3


def _help_text() -> str:
    res = runner.invoke(app, ["synth", "export", "--help"], terminal_width=200)
    assert res.exit_code == 0
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())


def test_help_warns_about_disk_at_the_default_size(tmp_path):
    text = _help_text()
    assert "--images" in text and "default --size 1024 about 1 MB each" in text
    # the estimates are the size of one written 1024 px film times the films of each choice
    write_dicom(tmp_path / "f.dcm", np.zeros((1024, 1024), np.uint8), dicom_uid("x"), PatientID="x",
                PatientSex="M", PatientAge="045Y", ViewPosition="PA")
    film = (tmp_path / "f.dcm").stat().st_size
    assert abs(film / 1e6 - 1) < 0.1
    for films, said in ((6012, "6.3 GB for RSNA (6,012 films)"), (2669, "2.8 GB for SIIM (2,669)"),
                        (4394, "4.6 GB for VinDr (4,394)")):
        assert said in text and f"{films * film / 1e9:.1f} GB" in said
    assert "all about 28, 13 and 16 GB" in text
    assert [round(n * film / 1e9) for n in (26684, 12047, 15000)] == [28, 13, 16]
