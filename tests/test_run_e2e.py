"""End to end through the installed CLI: an outside plug-in found by entry point, SIGKILL and resume."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = ["--preset", "tiny", "--methods", "tiny-cam", "--set", "data.n_train=96", "--set", "data.n_val=32",
        "--set", "data.n_test=48", "--set", "score.n_boot=20", "--set", "fit.max_epochs=3", "--set", "explain.batch_size=8"]


def wsl_bench(args, env, **kw):
    cmd = [sys.executable, "-c", "from wsl_bench.cli import main; main()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


def summaries(run: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((run / "scores").glob("*/summary.json"))}


@pytest.fixture(scope="module")
def reference_run(plugin_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "straight"
    proc = wsl_bench(["run", *TINY, "--out", str(out)], plugin_site)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


def test_plugin_method_runs_through_the_cli(reference_run):
    # tiny-cam is visible to the subprocess only through the installed dist-info's entry point
    out, proc = reference_run
    assert set(summaries(out)) == {"tiny-cam", "prior-center", "prior-lung", "random", "oracle-seg"}
    assert (out / "report" / "report.md").is_file()
    assert "macro IoU accuracy" in proc.stderr  # the closing summary table


def test_sigkill_during_fit_and_explain_then_resume_gives_identical_scores(plugin_site, reference_run, tmp_path):
    out = tmp_path / "killed"
    # 96 images / batch 32 = 3 steps per epoch; step 4 is in the middle of the second epoch
    killed_fit = wsl_bench(["run", *TINY, "--out", str(out)], {**plugin_site, "WSL_DEMO_KILL_AT_STEP": "4"})
    assert killed_fit.returncode == -signal.SIGKILL, killed_fit.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "fit/tiny-cam" not in manifest.get("stages", {}) and (out / "checkpoints/tiny-cam/last.ckpt").exists()

    killed_explain = wsl_bench(["run", *TINY, "--out", str(out)], {**plugin_site, "WSL_DEMO_KILL_AT_EXPLAIN": "2"})
    assert killed_explain.returncode == -signal.SIGKILL, killed_explain.stderr[-3000:]
    shards = list((out / "heatmaps" / "tiny-cam.parts").glob("*/batch_*.npz"))
    assert shards, "the first explain batch should have been kept"
    assert not (out / "heatmaps" / "tiny-cam.npz").exists()

    finished = wsl_bench(["run", *TINY, "--out", str(out)], plugin_site)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "fit: tiny-cam" not in finished.stderr  # fit was completed by the second attempt
    assert summaries(out) == summaries(reference_run[0])


KILLER = '''
import os, signal
target, at = os.environ["WSL_TEST_KILL_IN"], int(os.environ["WSL_TEST_KILL_AT_CALL"])
calls = [0]


def killing(real):
    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)  # the stage's files are written (scores into their temporary folder) ...
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the stage is recorded
        return out
    return wrapped


if target == "score":
    import wsl_bench.metrics as mod
    mod.score = killing(mod.score)
else:
    import wsl_bench.report as mod
    mod.write_report = killing(mod.write_report)
from wsl_bench.cli import main
main()
'''


def test_sigkill_during_score_and_report_then_resume_gives_identical_results(plugin_site, reference_run, tmp_path):
    import shutil

    out = tmp_path / "killed"
    shutil.copytree(reference_run[0], out)
    shutil.rmtree(out / "scores")  # fit and explain stay done; every score (and the report) is redone
    (out / "report" / "report.md").unlink()
    script = tmp_path / "killer.py"
    script.write_text(KILLER)

    def run(env):
        cmd = [sys.executable, str(script), "run", *TINY, "--out", str(out)]
        return subprocess.run(cmd, env={**plugin_site, **env}, capture_output=True, text=True, timeout=600)

    # killed while scoring the second method: its scores sit in the temporary folder, unrecorded
    killed = run({"WSL_TEST_KILL_IN": "score", "WSL_TEST_KILL_AT_CALL": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "score: tiny-cam" in killed.stderr and "score: prior-center" in killed.stderr
    assert (out / "scores" / "tiny-cam" / "summary.json").exists()
    assert (out / "scores" / ".prior-center.tmp" / "summary.json").exists() and not (out / "scores" / "prior-center").exists()

    # killed once the report is written but before the stage is recorded
    killed = run({"WSL_TEST_KILL_IN": "report", "WSL_TEST_KILL_AT_CALL": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "score: tiny-cam" not in killed.stderr and "score: prior-center" in killed.stderr
    assert (out / "report" / "report.md").exists()  # written, but the stage was not recorded as done

    finished = wsl_bench(["run", *TINY, "--out", str(out)], plugin_site)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "score:" not in finished.stderr and "wsl-bench report" in finished.stderr.replace("\n", " ")
    assert summaries(out) == summaries(reference_run[0])
    assert not list((out / "scores").glob(".*.tmp"))
    def normalized(run_dir):  # the folder's path and the code's git revision may differ; nothing else may
        return re.sub(r"git `[0-9a-f]+`", "git `REV`", (run_dir / "report" / "report.md").read_text().replace(str(run_dir), "RUN"))

    assert normalized(out) == normalized(reference_run[0])  # complete, same content
