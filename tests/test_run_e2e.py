"""End to end through the installed CLI: an outside plug-in found by entry point, SIGKILL and resume."""

from __future__ import annotations

import json
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
    assert set(summaries(out)) == {"tiny-cam", "prior-center", "prior-lung", "random"}
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
