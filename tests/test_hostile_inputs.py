"""A table of hostile inputs and settings through `wsl-bench run`, `score` and `explain`.

Every case must end with exit code 2 (or 0 where the input is odd but valid) and one `error:` line, never
a traceback; run settings are refused before any stage (no folder is made, nothing is trained); nothing
outside `--out` changes. The cases that claim huge sizes run in a subprocess whose peak memory is measured
(ru_maxrss) and must stay under 2 GB, under a CPU-time limit (RLIMIT_CPU) rather than a wall-clock assert.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.heatmaps import write_bundle

runner = CliRunner()
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
RUN = ["run", "--preset", "tiny", "--methods", "gradcam"]
HAS_GPU = torch.cuda.is_available()


def png_claiming(path: Path, w: int, h: int) -> Path:
    """A few dozen bytes of PNG whose header claims w x h pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 32)) + chunk(b"IEND", b""))
    return path


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p == skip or skip in p.parents or not p.is_file():
            continue
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Input files for score and explain, and a finished run folder holding prior-center (no training)."""
    from conftest import TinyLabelled
    from wsl_bench import run as R
    from wsl_bench.methods import FitContext, create_method

    d = tmp_path_factory.mktemp("hostile")
    write_bundle(d / "maps.npz", {"a.png::Mass": np.random.default_rng(0).random((8, 8)).astype(np.float32)}, {"a.png": (512, 512)})
    (d / "boxes.csv").write_text(HEADER + "a.png,Mass,64,64,128,64\n")
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    (d / "garbage.csv").write_bytes(b"\x00\xff,,,\n\n\"")
    (d / "afile").write_text("I am a file")
    # the 475-byte probe: a bundle whose image-size table claims 14000² (and 200000²)
    for side in (14_000, 200_000):
        np.savez_compressed(d / f"sizes{side}.npz", **{"a.png::Mass": np.ones((4, 4), np.float32),
                                                      "__image_sizes__": np.array(json.dumps({"a.png": [side, side]}))})
    # a map at the pixel limit, compressed to ~100 KB (a zip bomb of zeros): accepted, memory bounded
    big = np.zeros((4096, 4096), np.float64)
    big[100:300, 100:300] = 1.0
    np.savez_compressed(d / "bigmap.npz", **{"a.png::Mass": big})
    assert (d / "bigmap.npz").stat().st_size < 1_000_000

    # images
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)).save(d / "x16.png")
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[..., :3] = np.arange(48, dtype=np.uint8)[:, None, None] * 4
    rgba[..., 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(d / "rgba.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(d / "white.png")
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(d / "grey.jpg")
    png_claiming(d / "huge.png", 10_000, 10_000)
    png_claiming(d / "bomb.png", 60_000, 60_000)
    (d / "not.png").write_bytes(b"not an image")
    (d / "scan.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 32)

    # a finished run holding prior-center: config.yaml, its checkpoint and a manifest saying fit is done
    cfg = R.build_config(["prior-center"], preset="tiny", seed=0)
    runs = d / "runs"
    run = runs / "ok"
    (run / "checkpoints" / "prior-center").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    m = create_method("prior-center", cfg["methods"]["prior-center"]["config"])
    m.fit(TinyLabelled(16, 0), TinyLabelled(8, 1), FitContext(checkpoint_dir=run / "checkpoints" / "prior-center"))
    (run / "manifest.json").write_text(json.dumps({"stages": {"fit/prior-center": {"key": "k", "done": True, "files": {}}}}))
    for name, manifest in {"m_list": "[]", "m_null": "null", "m_str": '{"stages": "x"}'}.items():
        bad = runs / name
        bad.mkdir()
        (bad / "config.yaml").write_text((run / "config.yaml").read_text())
        (bad / "manifest.json").write_text(manifest)
    (runs / "cfg_list").mkdir()
    (runs / "cfg_list" / "config.yaml").write_text("- just\n- a list\n")
    broken = runs / "broken_ckpt"
    (broken / "checkpoints").mkdir(parents=True)
    for f in ("config.yaml", "manifest.json"):
        (broken / f).write_text((run / f).read_text())
    (broken / "checkpoints" / "prior-center").mkdir()
    for f in (run / "checkpoints" / "prior-center").iterdir():
        (broken / "checkpoints" / "prior-center" / f.name).write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
    return d


def _run_cases(tmp):
    """(id, args, expected exit code, needle in the output)."""
    gpu_case = [] if HAS_GPU else [("accelerator-gpu-none-here", RUN + ["--accelerator", "gpu"], 2, "no CUDA GPU")]
    return gpu_case + [
        ("fit-max-epochs-0", RUN + ["--set", "fit.max_epochs=0"], 2, "fit.max_epochs=0"),
        ("fit-max-epochs-negative", RUN + ["--set", "fit.max_epochs=-3"], 2, "fit.max_epochs=-3"),
        ("fit-max-epochs-bool", RUN + ["--set", "fit.max_epochs=true"], 2, "fit.max_epochs=True"),
        ("fit-batch-0", RUN + ["--set", "fit.batch_size=0"], 2, "fit.batch_size=0"),
        ("fit-batch-text", RUN + ["--set", "fit.batch_size=abc"], 2, "fit.batch_size='abc'"),
        ("fit-workers-negative", RUN + ["--set", "fit.num_workers=-1"], 2, "fit.num_workers=-1"),
        ("fit-precision", RUN + ["--set", "fit.precision=banana"], 2, "fit.precision='banana'"),
        ("fit-channels-last", RUN + ["--set", "fit.channels_last=maybe"], 2, "fit.channels_last='maybe'"),
        ("fit-compile-number", RUN + ["--set", "fit.compile=3"], 2, "fit.compile must be"),
        ("fit-unknown", RUN + ["--set", "fit.bogus=1"], 2, "unknown fit setting"),
        ("method-unknown-key", RUN + ["--set", "methods.gradcam.bogus=1"], 2, "unknown setting(s) ['bogus'] for method 'gradcam'"),
        ("method-lr-text", RUN + ["--set", "methods.gradcam.lr=abc"], 2, "methods.gradcam.lr='abc'"),
        ("method-lr-negative", RUN + ["--set", "methods.gradcam.lr=-1"], 2, "methods.gradcam.lr=-1"),
        ("method-lr-nan", RUN + ["--set", "methods.gradcam.lr=nan"], 2, "methods.gradcam.lr=nan"),
        ("method-epochs-fraction", RUN + ["--set", "methods.gradcam.max_epochs=2.5"], 2, "methods.gradcam.max_epochs=2.5"),
        ("method-arch-number", RUN + ["--set", "methods.gradcam.arch=5"], 2, "methods.gradcam.arch=5"),
        ("reference-unknown-key", RUN + ["--set", "methods.random.nope=1"], 2, "for method 'random'"),
        ("reference-sigma-text", RUN + ["--set", "methods.prior-center.sigma=wide"], 2, "methods.prior-center.sigma='wide'"),
        ("method-not-in-run", RUN + ["--set", "methods.clarity.lr=0.1"], 2, "that method is not in this run"),
        ("clarity-bad-choice", ["run", "--preset", "tiny", "--methods", "clarity", "--set", "methods.clarity.fusion=best"], 2, "fusion='best'"),
        ("clarity-unknown-key", ["run", "--preset", "tiny", "--methods", "clarity", "--set", "methods.clarity.dino_clips=1"], 2, "dino_clips"),
        ("score-policy", RUN + ["--set", "score.policy=bogus"], 2, "unknown policy 'bogus'"),
        ("score-n-boot-negative", RUN + ["--set", "score.n_boot=-5"], 2, "score.n_boot=-5"),
        ("score-n-boot-huge", RUN + ["--set", "score.n_boot=1000000000"], 2, "score.n_boot=1000000000"),
        ("score-pointing-nan", RUN + ["--set", "score.pointing_tolerance=nan"], 2, "score.pointing_tolerance=nan"),
        ("score-sweep-negative", RUN + ["--set", "score.sweep_size=-3"], 2, "score.sweep_size=-3"),
        ("score-tau-with-wang2017", RUN + ["--set", "score.tau=0.3"], 2, "fixes its own thresholds"),
        ("score-sanity-text", RUN + ["--set", "score.sanity=maybe"], 2, "score.sanity='maybe'"),
        ("score-sanity-images-0", RUN + ["--set", "score.sanity_images=0"], 2, "score.sanity_images=0"),
        ("score-unknown", RUN + ["--set", "score.bogus=1"], 2, "unknown score setting"),
        ("score-thresholds", RUN + ["--set", "score.iou_thresholds=[0.1,7]"], 2, "score.iou_thresholds"),
        ("explain-batch-0", RUN + ["--set", "explain.batch_size=0"], 2, "explain.batch_size=0"),
        ("explain-unknown", RUN + ["--set", "explain.bogus=1"], 2, "unknown explain setting"),
        ("report-full-text", RUN + ["--set", "report.full=sometimes"], 2, "report.full='sometimes'"),
        ("report-unknown", RUN + ["--set", "report.bogus=1"], 2, "unknown report setting"),
        ("data-n-train-0", RUN + ["--set", "data.n_train=0"], 2, "data.n_train=0"),
        ("data-n-test-negative", RUN + ["--set", "data.n_test=-1"], 2, "data.n_test=-1"),
        ("data-image-size-overflow", RUN + ["--set", "data.image_size=99999999999999999999"], 2, "data.image_size=99999999999999999999"),
        ("data-image-size-tiny", RUN + ["--set", "data.image_size=4"], 2, "data.image_size=4"),
        ("data-seed", RUN + ["--set", "data.seed=3"], 2, "data.seed is set by --seed"),
        ("data-unknown", RUN + ["--set", "data.bogus=1"], 2, "bogus"),
        ("data-contrast-nan", RUN + ["--set", "data.lesion_contrast=nan"], 2, "data.lesion_contrast=nan"),
        ("data-confounder", RUN + ["--set", "data.confounders=unicorn"], 2, "unknown confounder"),
        ("seed-negative", RUN + ["--seed", "-1"], 2, "--seed=-1"),
        ("seed-beyond-64-bits", RUN + ["--seed", "99999999999999999999999"], 2, "--seed=99999999999999999999999"),
        ("devices-garbage", RUN + ["--devices", "abc|0"], 2, "--devices 'abc|0'"),
        ("devices-zero", RUN + ["--devices", "0"], 2, "--devices 0"),
        ("devices-too-many", RUN + ["--devices", "99999"], 2, "this machine has"),
        ("devices-ids-on-cpu", RUN + ["--accelerator", "cpu", "--devices", "0,1"], 2, "device ids name GPUs"),
        ("accelerator-unknown", RUN + ["--accelerator", "quantum"], 2, "--accelerator 'quantum'"),
        ("strategy-unknown", RUN + ["--strategy", "bogus"], 2, "--strategy 'bogus'"),
        ("num-nodes-0", RUN + ["--num-nodes", "0"], 2, "--num-nodes=0"),
        ("preset-unknown", ["run", "--preset", "huge", "--methods", "gradcam"], 2, "unknown preset 'huge'"),
        ("method-unknown", ["run", "--preset", "tiny", "--methods", "no-such-method"], 2, "unknown method 'no-such-method'"),
        ("ablate-unknown", RUN + ["--ablate", "nope"], 2, "no component 'nope'"),
        ("data-unknown-name", RUN + ["--data", "imagenet"], 2, "unknown data 'imagenet'"),
        ("data-nih-without-root", RUN + ["--data", "nih"], 2, "--root"),
        ("set-without-section", RUN + ["--set", "bogus=1"], 2, "SECTION.KEY=VALUE"),
        ("set-method-without-key", RUN + ["--set", "methods.gradcam=1"], 2, "methods.<method>.<key>"),
        ("every-problem-at-once", RUN + ["--set", "fit.max_epochs=0", "--set", "score.policy=x", "--set", "methods.gradcam.lr=abc",
                                         "--devices", "abc|0", "--strategy", "bogus", "--num-nodes", "0", "--seed", "-4"],
         2, "7 problems with the run settings"),
    ]


def test_the_table_has_at_least_60_cases(tmp_path, world):
    assert len(_run_cases(tmp_path)) + len(_score_cases(world)) + len(_explain_cases(world)) + len(MEMORY_CASES) >= 60


@pytest.mark.parametrize("case", range(len(_run_cases(Path("/")))))
def test_bad_run_settings_are_refused_before_any_stage(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WSL_BENCH_CACHE", str(tmp_path / "cache"))
    cid, args, code, needle = _run_cases(tmp_path)[case]
    out = tmp_path / "out"
    before = snapshot(tmp_path, out)
    res = runner.invoke(app, [*args, "--out", str(out)], terminal_width=4000)
    assert res.exit_code == code, (cid, res.output)
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (cid, res.output)
    assert needle in lines[0], (cid, lines[0])
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    assert not out.exists(), cid  # refused before the folder was made, let alone a stage
    assert snapshot(tmp_path, out) == before, cid


def test_every_problem_is_listed_in_one_line(tmp_path):
    res = runner.invoke(app, RUN + ["--set", "fit.batch_size=0", "--set", "data.n_train=0", "--set", "score.n_boot=-1",
                                    "--num-nodes", "0", "--out", str(tmp_path / "o")], terminal_width=4000)
    assert res.exit_code == 2
    line = res.output.strip()
    assert "\n" not in line and line.startswith("error: 4 problems with the run settings")
    for needle in ("fit.batch_size=0", "data.n_train=0", "score.n_boot=-1", "--num-nodes=0"):
        assert needle in line


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_run_out_that_cannot_be_a_folder(where, world, tmp_path):
    out = world / "afile" if where == "file" else world / "afile" / "run"
    res = runner.invoke(app, ["run", "--preset", "tiny", "--methods", "prior-center", "--out", str(out)], terminal_width=4000)
    assert res.exit_code == 2 and res.output.startswith("error: --out") and "is a file" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert (world / "afile").read_text() == "I am a file"


@pytest.mark.parametrize("manifest", ["[]", "null", '{"stages": "x"}', '{"stages": {"fit/a": []}}',
                                      '{"stages": {"fit/a": {"files": [1, 2]}}, "timings": 3}'])
def test_manifest_of_the_wrong_shape_is_a_warning_not_a_crash(manifest, tmp_path):
    from wsl_bench import run as R

    out = tmp_path / "r"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    res = runner.invoke(app, ["run", "--preset", "tiny", "--methods", "prior-center", "--out", str(out), "--dry-run"],
                        terminal_width=4000)
    assert res.exit_code == 0, res.output
    assert "to do" in res.output and "Traceback" not in res.output
    logs: list[str] = []
    run = R.Run(out, R.build_config(["prior-center"], preset="tiny"), log=logs.append)
    run.load_manifest()
    assert isinstance(run.manifest, dict) and logs and "warning:" in logs[0]
    assert not run.is_done("fit/a", "k")


def _score_cases(w):
    base = ["score", "--heatmaps", str(w / "maps.npz"), "--boxes", str(w / "boxes.csv")]
    return [
        ("n-boot-negative", base + ["--n-boot", "-5"], "--n-boot=-5"),
        ("n-boot-huge", base + ["--n-boot", "99999999"], "--n-boot=99999999"),
        ("sweep-negative", base + ["--sweep-size", "-3"], "--sweep-size=-3"),
        ("pointing-nan", base + ["--pointing-tolerance", "nan"], "--pointing-tolerance=nan"),
        ("pointing-negative", base + ["--pointing-tolerance", "-1"], "--pointing-tolerance=-1"),
        ("image-size-overflow", base + ["--image-size", "99999999999999999999"], "over the limit"),
        ("image-size-0", base + ["--image-size", "0"], "must be positive"),
        ("image-size-over-limit", base + ["--image-size", "5000"], "5000 x 5000"),
        ("policy", base + ["--policy", "bogus"], "unknown policy 'bogus'"),
        ("seed", base + ["--seed", "-1"], "--seed=-1"),
        ("workers", base + ["--workers", "-1"], "--workers=-1"),
        ("tau", base + ["--policy", "threshold", "--tau", "2"], "--tau=2"),
        ("components", base + ["--policy", "threshold", "--components", "some"], "--components='some'"),
        ("out-is-a-file", base + ["--out-file"], "is a file"),
        ("out-under-a-file", base + ["--out-under-file"], "which is a file"),
        ("bundle-missing", ["score", "--heatmaps", str(w / "nope.npz"), "--boxes", str(w / "boxes.csv")], "does not exist"),
        ("bundle-garbage", ["score", "--heatmaps", str(w / "garbage.npz"), "--boxes", str(w / "boxes.csv")], "garbage.npz"),
        ("boxes-garbage", ["score", "--heatmaps", str(w / "maps.npz"), "--boxes", str(w / "garbage.csv")], "garbage.csv"),
        ("sizes-14000", ["score", "--heatmaps", str(w / "sizes14000.npz"), "--boxes", str(w / "boxes.csv")], "14000 x 14000"),
    ]


@pytest.mark.parametrize("case", range(len(_score_cases(Path("/")))))
def test_bad_score_inputs_are_one_line_errors(case, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cid, args, needle = _score_cases(world)[case]
    out = tmp_path / "out"
    if args[-1] == "--out-file":
        args, out = args[:-1], world / "afile"
    elif args[-1] == "--out-under-file":
        args, out = args[:-1], world / "afile" / "x"
    before = snapshot(world, out) | {"cwd": tuple(sorted(os.listdir(tmp_path)))}
    res = runner.invoke(app, [*args, "--out", str(out), "--no-progress"], terminal_width=4000)
    assert res.exit_code == 2, (cid, res.output)
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (cid, res.output)
    assert (snapshot(world, out) | {"cwd": tuple(sorted(os.listdir(tmp_path)))}) == before, cid
    assert not (tmp_path / "out").exists(), cid  # nothing written for a refused input


def _explain_cases(w):
    ok, runs = w / "runs" / "ok", w / "runs"
    return [
        ("16-bit", ok, "x16.png", [], 0, "wrote"),
        ("rgba", ok, "rgba.png", [], 0, "wrote"),
        ("jpeg", ok, "grey.jpg", [], 0, "wrote"),
        ("saturated", ok, "white.png", [], 2, "saturated"),
        ("not-an-image", ok, "not.png", [], 2, "not a readable image"),
        ("missing-image", ok, "absent.png", [], 2, "does not exist"),
        ("dicom", ok, "scan.dcm", [], 2, "DICOM is not read yet"),
        ("tau-nan", ok, "x16.png", ["--tau", "nan"], 2, "--tau nan"),
        ("tau-big", ok, "x16.png", ["--tau", "1.5"], 2, "--tau 1.5"),
        ("method-not-in-run", ok, "x16.png", ["--method-override", "gradcam"], 2, "is not part of run"),
        ("config-is-a-list", runs / "cfg_list", "x16.png", [], 2, "is not a wsl-bench run config"),
        ("manifest-list", runs / "m_list", "x16.png", [], 2, "has not finished training"),
        ("manifest-null", runs / "m_null", "x16.png", [], 2, "has not finished training"),
        ("manifest-stages-str", runs / "m_str", "x16.png", [], 2, "has not finished training"),
        ("run-missing", runs / "absent", "x16.png", [], 2, "config.yaml is missing"),
        ("truncated-checkpoint", runs / "broken_ckpt", "x16.png", [], 2, "cannot load prior-center"),
        ("out-is-a-folder", ok, "x16.png", ["--out-dir"], 2, "is a folder"),
        ("out-under-a-file", ok, "x16.png", ["--out-under-file"], 2, "is a file"),
    ]


@pytest.mark.parametrize("case", range(len(_explain_cases(Path("/")))))
def test_explain_inputs(case, world, tmp_path):
    cid, run, image, extra, code, needle = _explain_cases(world)[case]
    method, out = "prior-center", tmp_path / "panel.png"
    if extra == ["--method-override", "gradcam"]:
        method, extra = "gradcam", []
    elif extra == ["--out-dir"]:
        out, extra = tmp_path, []
    elif extra == ["--out-under-file"]:
        out, extra = world / "afile" / "p.png", []
    before = snapshot(world, tmp_path)
    res = runner.invoke(app, ["explain", "--run", str(run), "--method", method, str(world / image), "--out", str(out), *extra],
                        terminal_width=4000)
    assert res.exit_code == code, (cid, res.output, res.exception)
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], (cid, res.output)
    assert "Traceback" not in res.output
    if code == 0:
        with Image.open(out) as im:
            assert im.size[0] > 100
    else:
        assert not out.is_file(), cid
    assert snapshot(world, tmp_path) == before, cid  # run folders and inputs untouched


def test_explain_feeds_the_16bit_image_unsaturated(world, monkeypatch, tmp_path):
    """What the model sees for a 16-bit PNG: the image scaled by its maximum, not clipped to white."""
    import wsl_bench.methods as M

    seen = {}
    real = M.create_method

    def spy(*a, **k):
        method = real(*a, **k)
        predict = method.predict

        def record(x):
            seen["x"] = x.clone()
            return predict(x)

        method.predict = record
        return method

    monkeypatch.setattr(M, "create_method", spy)
    res = runner.invoke(app, ["explain", "--run", str(world / "runs" / "ok"), "--method", "prior-center",
                              str(world / "x16.png"), "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    x = seen["x"]
    assert (x >= 0.999).float().mean() < 0.05 and 0.3 < float(x.mean()) < 0.7


# --- sizes that would exhaust memory: each in a subprocess, peak RSS measured, CPU time limited -------------

WRAPPER = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_CPU, (300, 300))
from wsl_bench.cli import app
code = 0
try:
    app(sys.argv[2:], prog_name="wsl-bench")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
finally:
    # VmHWM: this process image's own peak (ru_maxrss would keep the forking pytest's peak across exec)
    hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
    open(sys.argv[1], "w").write(hwm[0] if hwm else str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(code)
"""

# The scorer streams one map at a time (peak ~1 GB with a 4096² map, imports included).
MEMORY_CASES = [
    # (id, args as a function of the world folder, out, expected exit code, needle, env)
    ("bundle-sizes-14000", lambda w: ["score", "--heatmaps", str(w / "sizes14000.npz"), "--boxes", str(w / "boxes.csv")], 2, "14000 x 14000", {}),
    ("bundle-sizes-200000", lambda w: ["score", "--heatmaps", str(w / "sizes200000.npz"), "--boxes", str(w / "boxes.csv")], 2, "200000 x 200000", {}),
    ("score-image-size-overflow", lambda w: ["score", "--heatmaps", str(w / "maps.npz"), "--boxes", str(w / "boxes.csv"),
                                             "--image-size", "99999999999999999999"], 2, "over the limit", {}),
    ("score-4096-map-zip-bomb", lambda w: ["score", "--heatmaps", str(w / "bigmap.npz"), "--boxes", str(w / "boxes.csv"),
                                           "--image-size", "4096", "--n-boot", "10", "--no-sanity"], 0, "scored 1 boxes", {}),
    ("explain-10000-png", lambda w: ["explain", "--run", str(w / "runs" / "ok"), "--method", "prior-center", str(w / "huge.png")],
     2, "over the limit", {}),
    ("explain-decompression-bomb", lambda w: ["explain", "--run", str(w / "runs" / "ok"), "--method", "prior-center",
                                              str(w / "bomb.png")], 2, "decompression bomb", {"WSL_BENCH_MAX_PIXELS": str(10**12)}),
]


@pytest.mark.parametrize("case", range(len(MEMORY_CASES)))
def test_sizes_are_checked_before_allocation(case, world, tmp_path):
    cid, args, code, needle, env = MEMORY_CASES[case]
    out = tmp_path / ("out.png" if args(world)[0] == "explain" else "out")
    rss = tmp_path / "rss"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "4000", **env}
    res = subprocess.run([sys.executable, "-c", WRAPPER, str(rss), *args(world), "--out", str(out)],
                         capture_output=True, text=True, env=full_env, cwd=tmp_path, timeout=900)
    output = (res.stdout + res.stderr).strip()
    assert res.returncode == code, (cid, output)
    assert needle in output and "Traceback" not in output, (cid, output)
    if code:
        assert len(output.splitlines()) == 1 and output.startswith("error: "), (cid, output)
    peak_gb = int(rss.read_text()) / 2**20  # ru_maxrss is in KiB on Linux
    assert peak_gb < 2.0, (cid, peak_gb)
