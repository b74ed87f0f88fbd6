"""External validation (train on one dataset, score on another's test split) and the command a run records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from wsl_bench import run as R
from wsl_bench.cli import app
from wsl_bench.data.registry import get_dataset, mapping_rows

runner = CliRunner()


# ---------------------------------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------------------------------


def test_test_data_joins_the_config_and_its_hash():
    plain = R.build_config(["random"], preset="tiny")
    ext = R.build_config(["random"], preset="tiny", test_data="nih", test_root="/data/nih")
    assert "test_data" not in plain  # an ordinary run's config.yaml and hash are unchanged
    assert ext["test_data"] == {"name": "nih", "image_size": 32, "root": "/data/nih", "val_fraction": 0.1,
                                "skip_bad": False}
    assert ext["data"] == plain["data"]  # trained on the same SynthCXR splits
    assert R.run_config_hash(ext) != R.run_config_hash(plain)
    other_root = R.build_config(["random"], preset="tiny", test_data="nih", test_root="/data/nih2")
    assert R.run_config_hash(other_root) != R.run_config_hash(ext)
    # the supervised ceiling needs exact lesion masks on both sides: SynthCXR has them, NIH has not
    assert "oracle-seg" in plain["methods_order"] and "oracle-seg" not in ext["methods_order"]
    assert ext["methods_order"] == ["random", "prior-center", "prior-lung"]


def test_test_data_mistakes_are_clear_errors():
    with pytest.raises(R.RunError, match="--test-root needs --test-data NAME"):
        R.build_config(["random"], preset="tiny", test_root="/data/nih")
    with pytest.raises(R.RunError, match=r"--test-data nih needs --test-root DIR"):
        R.build_config(["random"], preset="tiny", test_data="nih")
    with pytest.raises(R.RunError, match="unknown dataset 'nope'; registered: .*nih.*synth"):
        R.build_config(["random"], preset="tiny", test_data="nope", test_root="/x")
    result = runner.invoke(app, ["run", "--methods", "random", "--preset", "tiny", "--test-data", "nope",
                                 "--test-root", "/x", "--dry-run"])
    assert result.exit_code == 2 and "unknown dataset 'nope'" in result.output and "Traceback" not in result.output


def test_external_cohort_takes_train_val_of_one_and_test_of_the_other():
    from wsl_bench.stages.data import data_key, external_cohort

    a = SimpleNamespace(name="synth", train="A-train", val="A-val", test="A-test", fingerprint="synth-1", info={"n": 1})
    b = SimpleNamespace(name="nih", train="B-train", val="B-val", test="B-test", fingerprint="nih-2", info={"n": 2})
    c = external_cohort(a, b)
    assert (c.train, c.val, c.test) == ("A-train", "A-val", "B-test")
    assert c.fingerprint == "synth-1+nih-2" and c.name == "synth+nih"
    assert c.info == {"train_val": {"n": 1}, "test": {"n": 2}}
    plain = R.build_config(["random"], preset="tiny")
    ext = R.build_config(["random"], preset="tiny", test_data="nih", test_root="/data/nih")
    assert data_key(plain) != data_key(ext)  # the data stage (and every fit) follows the test dataset too


def test_dry_run_names_the_test_data(tmp_path):
    result = runner.invoke(app, ["run", "--methods", "random", "--preset", "tiny", "--test-data", "nih", "--test-root",
                                 str(tmp_path / "nih"), "--out", str(tmp_path / "r"), "--dry-run"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "data: synth at 32 px, 160/48/64 train/val/test images" in result.output
    assert f"test data (external validation: its test split is scored): nih at 32 px from {tmp_path / 'nih'}" in result.output
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------
# the recorded command
# ---------------------------------------------------------------------------------------------------


def test_the_cli_hands_the_run_its_command_line(monkeypatch, tmp_path):
    seen = {}

    def fake_execute(config, out, *, log, command):
        seen.update(command=command, out=out)
        return None

    monkeypatch.setattr(R, "execute", fake_execute)
    result = runner.invoke(app, ["run", "-m", "random", "--preset", "tiny", "--out", str(tmp_path / "r"), "--set",
                                 "score.n_boot=5", "--set", "data.n_test=16", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert seen["command"] == ["wsl-bench", "run", "--methods", "random", "--preset", "tiny", "--out",
                               str(tmp_path / "r"), "--set", "score.n_boot=5", "--set", "data.n_test=16", "--no-progress"]


def test_the_report_quotes_the_recorded_command_only_under_the_folders_hash(tmp_path):
    from wsl_bench.report.markdown import run_command

    cfg = {"preset": "tiny", "seed": 0, "methods_order": ["gradcam", "random"]}
    argv = ["wsl-bench", "run", "--methods", "gradcam", "--set", "fit.max_epochs=2", "--out", "runs/my run"]
    rs = SimpleNamespace(configs={tmp_path: cfg},
                         manifests={tmp_path: {"config_hash": "abc", "command": {"argv": argv, "config_hash": "abc"}}})
    assert run_command(rs, tmp_path) == f"wsl-bench run --methods gradcam --set fit.max_epochs=2 --out {tmp_path}"
    # the folder as the report names it, wherever the run wrote it (moved, or reached through a link)
    assert run_command(rs.__class__(configs={Path("runs/my run"): cfg}, manifests={Path("runs/my run"): rs.manifests[tmp_path]}),
                       Path("runs/my run")) == "wsl-bench run --methods gradcam --set fit.max_epochs=2 --out 'runs/my run'"
    # made by another config than the one recorded with the command: no command (the rebuild finds none either)
    rs.manifests[tmp_path]["command"]["config_hash"] = "older"
    assert run_command(rs, tmp_path) is None


# ---------------------------------------------------------------------------------------------------
# the report section
# ---------------------------------------------------------------------------------------------------


def test_label_mapping_section_and_table(tmp_path):
    from wsl_bench.report.label_mapping import write_mapping

    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    rows = mapping_rows(get_dataset("rsna-pneumonia")) + [
        {"dataset": "toy", "finding": "Shadow", "suite": "", "localized": "False"}]
    pd.DataFrame(rows).to_csv(run_dir / "data" / "label_mapping.csv", index=False)
    rs = SimpleNamespace(run_dirs=[run_dir], configs={run_dir: {"data": {"name": "synth"},
                                                                "test_data": {"name": "rsna-pneumonia"}}})
    lines = write_mapping(rs, tmp_path / "tables")
    text = "\n".join(lines)
    assert lines[0] == "## Label mapping (external validation)"
    assert "trained on `synth`, scored on the test split of `rsna-pneumonia`" in text
    assert "| rsna-pneumonia | Lung Opacity | Pneumonia | yes |" in text
    assert "| toy | Shadow | (not used) | no |" in text and "Not used (no suite finding): toy: Shadow." in text
    table = pd.read_csv(tmp_path / "tables" / "label_mapping.csv", dtype=str, keep_default_na=False)
    assert table.to_dict("records") == rows
    # an ordinary run: no section, no table
    plain = SimpleNamespace(run_dirs=[tmp_path / "plain"], configs={})
    assert write_mapping(plain, tmp_path / "t2") == [] and not (tmp_path / "t2").exists()


# ---------------------------------------------------------------------------------------------------
# end to end on mirrors (real annotation geometry, synthetic pixels)
# ---------------------------------------------------------------------------------------------------


def external_run(out: Path, test_data: str, mirror: Path, methods: str = "gradcam"):
    return runner.invoke(app, ["run", "--methods", methods, "--preset", "tiny", "--test-data", test_data, "--test-root",
                               str(mirror), "--out", str(out), "--set", "score.n_boot=10", "--no-progress"],
                         terminal_width=250)


def check_external_folder(out: Path, test_data: str, mirror: Path, n_test: int) -> None:
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert cfg["data"]["name"] == "synth" and cfg["test_data"]["name"] == test_data
    assert cfg["test_data"]["root"] == str(mirror) and cfg["test_data"]["image_size"] == cfg["data"]["image_size"]
    train_fp, test_fp = manifest["data_fingerprint"].split("+")  # both cohorts' fingerprints
    assert train_fp.startswith("synth-") and test_fp.startswith(f"{test_data}-")
    assert manifest["command"]["argv"][:4] == ["wsl-bench", "run", "--methods", "gradcam"]
    assert manifest["command"]["config_hash"] == manifest["config_hash"] == R.run_config_hash(cfg)
    images = pd.read_csv(out / "data" / "images.csv", dtype={"image_id": str})
    assert len(images) == n_test  # the test split of the test dataset, not SynthCXR's
    mapping = pd.read_csv(out / "data" / "label_mapping.csv", dtype=str, keep_default_na=False).to_dict("records")
    assert mapping == mapping_rows(get_dataset(test_data))
    assert "oracle-seg" not in cfg["methods_order"]
    for m in cfg["methods_order"]:
        assert (out / "scores" / m / "summary.json").is_file(), m
    report = (out / "report" / "report.md").read_text()
    assert "## Label mapping (external validation)" in report
    assert f"scored on the test split of `{test_data}`" in report
    assert (out / "report" / "tables" / "label_mapping.csv").is_file()
    assert f"The run: `wsl-bench run --methods gradcam --test-data {test_data}" in report


@pytest.fixture(scope="module")
def rsna_mirror(tmp_path_factory):
    out = tmp_path_factory.mktemp("rsna")
    get_dataset("rsna-pneumonia").export_mirror(out, size=64, images=120)
    return out


def test_external_validation_on_an_rsna_mirror(rsna_mirror, tmp_path):
    out = tmp_path / "run"
    result = external_run(out, "rsna-pneumonia", rsna_mirror)
    assert result.exit_code == 0, result.output
    test = get_dataset("rsna-pneumonia").load(yaml.safe_load((out / "config.yaml").read_text())["test_data"], 0).test
    check_external_folder(out, "rsna-pneumonia", rsna_mirror, len(test))
    boxes = pd.read_csv(out / "data" / "boxes.csv")
    assert set(boxes["label"]) == {"Pneumonia"}  # RSNA's Lung Opacity, under its suite name
    again = external_run(out, "rsna-pneumonia", rsna_mirror)  # the same command: every stage is skipped
    assert again.exit_code == 0, again.output
    assert not any(w in again.output for w in ("fit:", "explain:", "score:"))


@pytest.mark.slow
def test_external_validation_synth_to_an_nih_mirror(tmp_path_factory):
    from wsl_bench.data.export import export_nih_layout

    mirror = tmp_path_factory.mktemp("nih")
    export_nih_layout(mirror, n=40, size=64, mirror_nih=True)
    out = tmp_path_factory.mktemp("runs") / "synth-to-nih"
    result = external_run(out, "nih", mirror)
    assert result.exit_code == 0, result.output
    n_test = len((mirror / "test_list.txt").read_text().split())
    check_external_folder(out, "nih", mirror, n_test)
