"""Every shared cache is covered by checksums: each kind is poisoned here and the damage is detected,
the cache rebuilt (to the very bytes it had: CPU training is deterministic), and never loaded.

Kinds: the baselines' shared backbone (`shared/backbones/<arch>-<key>/`), CLARiTy's DINO backbone, its
ConvNeXtV2 teacher, the teacher's logits table and the lung segmenter (`checkpoints/<stage>-<key>/`); and,
through a whole run, the manifest's record of the caches a fit trusted (`stages.fit/<m>.caches`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wsl_bench import caches
from wsl_bench.io import sha256_file
from wsl_bench.methods import FitContext, create_method

TINY_CLARITY = {
    "arch": "t16-64-d3", "segcam_hidden": 16, "epochs": 1, "batch_size": 16,
    "teacher": "convnextv2_atto", "teacher_epochs": 1, "teacher_batch_size": 16,
    "dino_epochs": 1, "dino_batch_size": 16, "dino_local_crops": 2, "dino_local_size": 32, "dino_out_dim": 64,
}


def flip_byte(path: Path, at: int = -16) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def toy():
    from test_clarity_fit import ToyLungs

    return ToyLungs(32, 0), ToyLungs(16, 1)


def test_seal_problem_and_usable(tmp_path, caplog):
    d = tmp_path / "cache"
    d.mkdir()
    (d / "w.bin").write_bytes(b"weights")
    assert "missing or unreadable" in caches.problem(d, "w.bin")
    caches.seal(d, "w.bin")
    assert caches.problem(d, "w.bin") is None and caches.usable(d, "w.bin")
    (d / "w.bin").write_bytes(b"poison!")
    assert "does not match its checksum" in caches.problem(d, "w.bin")
    with caplog.at_level(logging.WARNING, logger="wsl_bench.caches"):
        assert not caches.usable(d, "w.bin")
    assert "w.bin does not match its checksum" in caplog.text and "rebuilt" in caplog.text
    assert not d.exists()  # removed, so nothing in it is ever loaded or resumed
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "checksums.json").write_text('{"files": "not a mapping"}')
    assert caches.read_seal(tmp_path / "c2") is None


def test_clarity_stage_caches_are_verified_and_rebuilt(tmp_path, toy, caplog):
    from clarity.config import ClarityConfig
    from clarity.dino import WEIGHTS as DINO_WEIGHTS, get_dino_backbone
    from clarity.stages import is_done
    from clarity.teacher import TABLE, WEIGHTS as TEACHER_WEIGHTS, get_teacher, get_teacher_table

    train, val = toy
    cfg = ClarityConfig.from_dict(TINY_CLARITY)
    run = tmp_path / "run"

    def ctx():
        return FitContext(checkpoint_dir=run / "checkpoints" / "clarity", run_dir=run, seed=0)

    c = ctx()
    get_dino_backbone(cfg, train, val, c)
    teacher = get_teacher(cfg, 64, train, val, c)
    get_teacher_table(cfg, teacher, 64, train, c)
    dino_dir = next((run / "checkpoints").glob("dino-*"))
    teacher_dir = next((run / "checkpoints").glob("teacher-*"))
    good = {p: sha256_file(p) for p in (dino_dir / DINO_WEIGHTS, teacher_dir / TEACHER_WEIGHTS, teacher_dir / TABLE)}
    assert {Path(p) for p in c.extra["cache_files"]} == set(good)  # what the harness puts in the manifest

    # a cached stage is trusted only while it matches its seal: reused untouched
    c = ctx()
    get_dino_backbone(cfg, train, val, c)
    assert sha256_file(dino_dir / DINO_WEIGHTS) == good[dino_dir / DINO_WEIGHTS]

    # DINO weights with one flipped byte: detected, removed, retrained to the same bytes
    flip_byte(dino_dir / DINO_WEIGHTS)
    with caplog.at_level(logging.WARNING, logger="wsl_bench.caches"):
        get_dino_backbone(cfg, train, val, ctx())
    assert "backbone.safetensors does not match its checksum" in caplog.text
    assert sha256_file(dino_dir / DINO_WEIGHTS) == good[dino_dir / DINO_WEIGHTS]

    # a truncated teacher (the SafetensorError case): rebuilt, never loaded
    truncate(teacher_dir / TEACHER_WEIGHTS)
    teacher = get_teacher(cfg, 64, train, val, ctx())
    assert sha256_file(teacher_dir / TEACHER_WEIGHTS) == good[teacher_dir / TEACHER_WEIGHTS]
    assert not (teacher_dir / TABLE).exists()  # went with its teacher's folder

    # the teacher table poisoned alone: recomputed, the teacher kept
    get_teacher_table(cfg, teacher, 64, train, ctx())
    before = (teacher_dir / TEACHER_WEIGHTS).stat().st_mtime_ns
    table = load_file(teacher_dir / TABLE)["logits"]
    save_file({"logits": -table}, str(teacher_dir / TABLE))
    got = get_teacher_table(cfg, teacher, 64, train, ctx())
    torch.testing.assert_close(got, table)
    assert sha256_file(teacher_dir / TABLE) == good[teacher_dir / TABLE]
    assert (teacher_dir / TEACHER_WEIGHTS).stat().st_mtime_ns == before

    # a finished stage nobody sealed (an older wsl-bench) is not trusted either
    (dino_dir / caches.SEAL).unlink()
    assert not is_done(dino_dir, DINO_WEIGHTS) and not dino_dir.exists()
    # ...but an unfinished one (no done.json) is kept, so training resumes from its last.ckpt
    unfinished = run / "checkpoints" / "dino-unfinished"
    unfinished.mkdir()
    (unfinished / "last.ckpt").write_bytes(b"resume me")
    assert not is_done(unfinished, DINO_WEIGHTS) and (unfinished / "last.ckpt").exists()


def test_lung_segmenter_cache_is_verified(tmp_path, toy):
    from clarity.segmenter import WEIGHTS, train_segmenter

    train, val = toy
    ctx = FitContext(checkpoint_dir=tmp_path / "run" / "checkpoints" / "clarity", run_dir=tmp_path / "run", seed=0)
    train_segmenter(train, val, ctx, epochs=1, batch_size=16)
    d = next((tmp_path / "run" / "checkpoints").glob("lung-segmenter-*"))
    good = sha256_file(d / WEIGHTS)
    truncate(d / WEIGHTS)
    train_segmenter(train, val, ctx, epochs=1, batch_size=16)
    assert sha256_file(d / WEIGHTS) == good


def test_shared_backbone_is_verified_before_another_method_loads_it(tmp_path):
    from baselines._trainable import CONFIG_FILE, WEIGHTS_FILE
    from conftest import TinyLabelled

    train, val = TinyLabelled(64, 0, size=32), TinyLabelled(32, 1, size=32)
    run = tmp_path / "run"
    conf = {"arch": "resnet10t", "max_epochs": 1, "batch_size": 16}

    def fit(name):
        m = create_method(name, conf)
        ctx = FitContext(checkpoint_dir=run / "checkpoints" / name, run_dir=run, seed=0, image_size=32)
        m.fit(train, val, ctx)
        return m, ctx

    first, ctx = fit("gradcam")
    shared = next((run / "shared" / "backbones").glob("resnet10t-*"))
    good = sha256_file(shared / WEIGHTS_FILE)
    assert caches.read_seal(shared) == {WEIGHTS_FILE: good, CONFIG_FILE: sha256_file(shared / CONFIG_FILE)}
    assert str(shared / WEIGHTS_FILE) in ctx.extra["cache_files"]

    second, _ = fit("gradcam++")  # intact: shared, not trained again
    assert second.fit_info["trained"] is False

    # poisoned: the sign of the classifier flipped (a file that still loads fine)
    state = load_file(shared / WEIGHTS_FILE)
    key = next(k for k in state if k.endswith("fc.weight"))
    state[key] = -state[key]
    save_file(state, str(shared / WEIGHTS_FILE))
    third, _ = fit("xgradcam")
    assert third.fit_info["trained"] is True  # retrained, not loaded
    assert sha256_file(shared / WEIGHTS_FILE) == good  # the same bytes the first fit made


@pytest.mark.slow
def test_a_run_redoes_fits_whose_shared_cache_was_poisoned(tmp_path):
    """The brief's probe, through `execute`: poison the shared backbone and truncate the checkpoint."""
    from baselines._trainable import CONFIG_FILE
    from wsl_bench import run as R

    over = R.parse_overrides(["data.n_train=64", "data.n_val=32", "data.n_test=32", "report.full=false",
                              "score.n_boot=10", "score.sanity=false"])
    cfg = R.build_config(["gradcam"], preset="tiny", seed=0, overrides=over)
    out = tmp_path / "run"
    R.execute(cfg, out, log=lambda m: None)
    manifest = json.loads((out / "manifest.json").read_text())
    used = manifest["stages"]["fit/gradcam"]["caches"]
    rel = next(r for r in used if r.startswith("shared/backbones/") and r.endswith("model.safetensors"))
    scores = (out / "scores" / "gradcam" / "summary.json").read_bytes()

    state = load_file(out / rel)
    key = next(k for k in state if k.endswith("fc.weight"))
    state[key] = -state[key]
    save_file(state, str(out / rel))
    truncate(out / "checkpoints" / "gradcam" / "model.safetensors")
    logs: list[str] = []
    R.execute(cfg, out, log=logs.append)
    assert any("redoing the stage" in m for m in logs)
    saved = json.loads((out / "checkpoints" / "gradcam" / CONFIG_FILE).read_text())
    assert saved["fit"]["trained"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["fit/gradcam"]["caches"] == used  # rebuilt to the same bytes
    assert (out / "scores" / "gradcam" / "summary.json").read_bytes() == scores
