"""The harness commands as a user types them: help with examples, methods, dry-run, clear errors."""

from __future__ import annotations

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
