"""The harness commands as a user types them: help with examples, methods, dry-run, clear errors."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.run import run_lock

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["explain"], ["methods"]])
def test_every_help_has_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example: wsl-bench" in result.output


def test_methods_lists_name_description_and_paper(demo_method):
    result = runner.invoke(app, ["methods"], terminal_width=250)
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if "prior-center" in l)
    assert "Centred Gaussian" in line and "Sanity reference" in line
    assert demo_method in result.output


def test_dry_run_prints_the_plan(demo_method, tmp_path):
    result = runner.invoke(app, ["run", "--methods", demo_method, "--preset", "tiny", "--out", str(tmp_path / "r"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "fit/tiny-cam" in result.output and "report" in result.output and "to do" in result.output
    assert not (tmp_path / "r").exists()


def test_user_mistakes_are_one_line_errors(demo_method, tmp_path):
    result = runner.invoke(app, ["run", "--methods", "no-such-method", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown method 'no-such-method'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["run", "--methods", demo_method, "--set", "bogus=1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "SECTION.KEY=VALUE" in result.output
    result = runner.invoke(app, ["explain", "--run", str(tmp_path / "none"), "--method", demo_method, str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "config.yaml is missing" in result.output


def test_a_busy_folder_is_a_clear_lock_error(demo_method, tmp_path):
    with run_lock(tmp_path / "busy"):
        result = runner.invoke(app, ["run", "--methods", demo_method, "--preset", "tiny", "--out", str(tmp_path / "busy")])
    assert result.exit_code == 2 and "in use by another wsl-bench run" in result.output



def test_no_flags_means_clarity_and_gradcam_on_quick_synth(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--dry-run"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "run folder: runs/quick" in result.output and "synth at 128 px, 2400/400/600" in result.output
    fits = [l.split()[0] for l in result.output.splitlines() if l.strip().startswith("fit/")]
    assert fits == ["fit/clarity", "fit/gradcam", "fit/prior-center", "fit/prior-lung", "fit/random", "fit/oracle-seg"]


def test_preset_help_lists_every_run_preset():
    from wsl_bench.run import PRESETS

    result = runner.invoke(app, ["run", "--help"], terminal_width=250)
    assert result.exit_code == 0 and all(p in result.output for p in PRESETS)


def test_standard_preset_resolves_to_224_px_synth_and_the_methods_standard_presets():
    from wsl_bench.run import build_config, parse_overrides

    cfg = build_config(["clarity", "gradcam"], preset="standard",
                       overrides=parse_overrides(["data.n_train=32", "data.n_val=16", "data.n_test=16"]))
    d = cfg["data"]
    assert (d["name"], d["image_size"], d["generate_size"], d["n_train"]) == ("synth", 224, 256, 32)
    assert cfg["preset"] == "standard" and cfg["fit"]["max_epochs"] is None  # each method's own cap
    assert {spec["method_preset"] for spec in cfg["methods"].values()} == {"standard"}
    assert cfg["methods_order"] == ["clarity", "gradcam", "prior-center", "prior-lung", "random", "oracle-seg"]
    gradcam, clarity = cfg["methods"]["gradcam"]["config"], cfg["methods"]["clarity"]["config"]
    assert (gradcam["explain_output_stride"], gradcam["max_epochs"], gradcam["patience"]) == (16, 20, 3)
    assert (clarity["input_size"], clarity["epochs"], clarity["patience"]) == (224, 20, 3)
    # the full default split sizes, as in quick
    full = build_config(["gradcam"], preset="standard")["data"]
    assert (full["n_train"], full["n_val"], full["n_test"]) == (2400, 400, 600)


def test_standard_dry_run_prints_cpu_and_gpu_estimates_without_training(tmp_path, monkeypatch):
    import functools

    from wsl_bench.stages import estimates as E

    monkeypatch.setattr(E, "time_estimate", functools.partial(E.time_estimate, n_probe=2))  # a fast probe
    out = tmp_path / "std"
    result = runner.invoke(app, ["run", "--preset", "standard", "--methods", "gradcam", "--out", str(out), "--dry-run",
                                 "--set", "data.n_train=32", "--set", "data.n_val=16", "--set", "data.n_test=16"],
                           terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "data: synth at 224 px, 32/16/16 train/val/test images" in result.output
    lines = result.output.splitlines()
    at = lines.index(next(l for l in lines if l.startswith("method gradcam: trainable")))
    assert lines[at + 1].startswith("  estimate: fit ≈ ") and "4–20 epochs: early stopping with patience 3" in lines[at + 1]
    assert lines[at + 2].startswith("  GPU estimate: fit ≈ ") and "TFLOP/s" in lines[at + 2]
    gflop = float(re.search(r"([0-9.]+) GFLOP a forward pass", lines[at + 2]).group(1))
    assert 3.0 < gflop < 4.0  # a grey-scale ResNet-18 at 224 px: 3.47 GFLOP
    assert not out.exists()


@pytest.mark.parametrize("name", ["afloc", "can"])
def test_dry_run_times_methods_that_build_their_network_in_fit(tmp_path, monkeypatch, name):
    """AFLoc and CAN build their networks in fit(); the dry run builds an untrained one to time it."""
    import functools

    from wsl_bench.stages import estimates as E

    monkeypatch.setattr(E, "time_estimate", functools.partial(E.time_estimate, n_probe=2))
    result = runner.invoke(app, ["run", "--preset", "standard", "--methods", name, "--out", str(tmp_path / "r"),
                                 "--dry-run", "--set", "data.n_train=32", "--set", "data.n_val=16",
                                 "--set", "data.n_test=16"], terminal_width=250)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index(next(l for l in lines if l.startswith(f"method {name}: trainable")))
    assert lines[at + 1].startswith("  estimate: fit ≈ ") and "4–20 epochs" in lines[at + 1], lines[at + 1]
    assert lines[at + 2].startswith("  GPU estimate: fit ≈ ")
    assert float(re.search(r"([0-9.]+) GFLOP a forward pass", lines[at + 2]).group(1)) > 0.01
