"""One failing method does not cost the others their scores: the run goes on, records it, and fails at the end."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from wsl_bench import methods as M
from wsl_bench import run as R
from wsl_bench.cli import app

SMALL = {"data": {"n_train": 96, "n_val": 32, "n_test": 48}, "score": {"n_boot": 20}, "report": {"full": False}}
FAIL: dict[str, str] = {}  # method name -> the stage at which it raises


class Flaky(M.Method):
    """A test method that raises in the stage FAIL names for it; otherwise a constant prediction and noise maps."""

    config_keys = ("variant",)  # the one setting the tests pass it (unknown settings are refused before a run)

    def fit(self, train, val, ctx) -> None:
        if FAIL.get(self.name) == "fit":
            raise ValueError("weights file /no/such/w.pt is truncated\nsecond line of detail")

    def predict(self, images):
        return torch.full((images.shape[0], 14), 0.5)

    def explain(self, images, classes):
        if FAIL.get(self.name) == "explain":
            raise RuntimeError("explainer ran out of memory")
        g = torch.Generator().manual_seed(0)
        return torch.rand(images.shape[0], len(classes), 8, 8, generator=g)


@pytest.fixture
def flaky(monkeypatch):
    M.get_method_info("prior-center")  # load the entry points (the references) before copying the registry
    monkeypatch.setattr(M, "_REGISTRY", dict(M._REGISTRY))
    for name in ("flaky-fit", "flaky-explain"):
        M.register_method(name, paper="test only")(Flaky)
    FAIL.clear()
    yield FAIL
    FAIL.clear()


def config(**over):
    o = json.loads(json.dumps(SMALL))
    o.update(over)
    return R.build_config(["flaky-fit", "flaky-explain"], preset="tiny", seed=0, overrides=o)


def test_a_failing_method_is_recorded_and_the_others_finish(flaky, tmp_path):
    out = tmp_path / "run"
    flaky.update({"flaky-fit": "fit", "flaky-explain": "explain"})
    log = []
    with pytest.raises(R.MethodsFailed) as info:
        R.execute(config(), out, log=log.append)
    expected = {
        "flaky-fit": {"stage": "fit", "error": "ValueError: weights file /no/such/w.pt is truncated"},
        "flaky-explain": {"stage": "explain", "error": "RuntimeError: explainer ran out of memory"},
    }
    assert info.value.failures == expected
    assert "2 method(s) failed: flaky-fit (fit: ValueError" in str(info.value) and "re-run the same command" in str(info.value)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"] == expected
    for ref in R.REFERENCE_METHODS:  # the references after the failures were still explained and scored
        assert (out / "scores" / ref / "summary.json").is_file()
    assert not (out / "scores" / "flaky-fit").exists() and not (out / "scores" / "flaky-explain").exists()
    report = (out / "report" / "report.md").read_text()
    assert info.value.report == out / "report" / "report.md"
    assert "## Failed methods" in report and "| flaky-explain | explain | RuntimeError: explainer ran out of memory |" in report
    assert "| prior-lung |" in report
    assert any(l.startswith("error: flaky-fit failed in fit") for l in log)

    flaky.clear()  # the cause is fixed: the same command finishes only what failed
    log.clear()
    assert R.execute(config(), out, log=log.append) == out / "report" / "report.md"
    assert "fit: flaky-fit" in log and "explain: flaky-explain" in log and "fit: flaky-explain" not in log
    assert not any(ref in l for l in log if l.startswith(("fit:", "explain:", "score:")) for ref in R.REFERENCE_METHODS)
    assert json.loads((out / "manifest.json").read_text())["failures"] == {}
    assert "Failed methods" not in (out / "report" / "report.md").read_text()

    # a new config makes flaky-fit refit, and that fails: its scores from the older fit must not be reported
    flaky["flaky-fit"] = "fit"
    with pytest.raises(R.MethodsFailed):
        R.execute(config(methods={"flaky-fit": {"variant": 2}}), out, log=log.append)
    assert not (out / "scores" / "flaky-fit").exists() and (out / "scores" / "flaky-explain" / "summary.json").is_file()
    report = (out / "report" / "report.md").read_text()
    assert "| flaky-fit | fit |" in report and "| flaky-explain |" in report


def test_cli_shows_the_scored_methods_then_fails_with_the_list(flaky, tmp_path, monkeypatch):
    import wsl_bench.report

    def full_report(run_dirs, out_dir):  # stands in for the reports stage (tested in tests/test_report*.py)
        path = out_dir / "report.md"
        R.write_text(path, "# the full report\n")
        return path

    monkeypatch.setattr(wsl_bench.report, "write_report", full_report)
    flaky["flaky-explain"] = "explain"
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["run", "--methods", "flaky-explain", "--preset", "tiny", "--out", str(out), "--no-progress",
              "--set", "data.n_train=96", "--set", "data.n_val=32", "--set", "data.n_test=48", "--set", "score.n_boot=20"],
        terminal_width=250,
    )
    assert result.exit_code == 1, result.output
    assert "error: 1 method(s) failed: flaky-explain (explain: RuntimeError: explainer ran out of memory)" in result.output
    assert "prior-center" in result.output.split("macro IoU accuracy")[1]  # the summary table of the others
    assert "Traceback" not in result.output
    assert (out / "report" / "report.md").read_text() == "# the full report\n"  # its notes list failures
    assert json.loads((out / "manifest.json").read_text())["failures"]["flaky-explain"]["stage"] == "explain"


def test_the_failure_message_never_claims_scores_that_do_not_exist():
    from wsl_bench.run import MethodsFailed

    one = {"gradcam": {"stage": "fit", "error": "ValueError: x"}}
    assert "No method was scored" in str(MethodsFailed(one, None, n_methods=1))
    assert "other methods were scored" in str(MethodsFailed(one, None, n_methods=4))
