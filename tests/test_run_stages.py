"""The run orchestration in-process: layout, skip-when-unchanged, redo-when-changed, checksums, lock."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wsl_bench import run as R
from wsl_bench.heatmaps import read_bundle
from wsl_bench.labels import BOX_FINDINGS, FINDINGS

# small cohort, few bootstrap replicates, markdown-only report (the full report has its own tests)
SMALL = {"data": {"n_train": 96, "n_val": 32, "n_test": 48}, "score": {"n_boot": 20}, "report": {"full": False}}


def small_config(method: str, **kw):
    over = json.loads(json.dumps(SMALL))
    for k, v in kw.pop("overrides", {}).items():
        over.setdefault(k, {}).update(v)
    return R.build_config([method], preset="tiny", seed=0, overrides=over, **kw)


class Log(list):
    def __call__(self, msg):
        self.append(msg)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, demo_method):
    out = tmp_path_factory.mktemp("runs") / "base"
    log = Log()
    R.execute(small_config(demo_method), out, log=log)
    return out, log


def fresh_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_layout_and_manifest(done_run, demo_method):
    out, log = done_run
    methods = [demo_method, *R.REFERENCE_METHODS]
    for rel in ("config.yaml", "manifest.json", "data/images.csv", "data/boxes.csv", "data/gallery.npz", "report/report.md"):
        assert (out / rel).is_file(), rel
    images = pd.read_csv(out / "data/images.csv", dtype={"image_id": str})
    boxes = pd.read_csv(out / "data/boxes.csv", dtype={"image_id": str})
    assert list(images.columns) == ["image_id", "patient_id", "orig_h", "orig_w", *FINDINGS] and len(images) == 48
    box_ids = sorted(set(boxes.image_id))
    with np.load(out / "data/gallery.npz") as g:
        assert sorted(g.files) == box_ids and g[box_ids[0]].dtype == np.uint8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods_order"] == methods
    assert manifest["data_fingerprint"].startswith("synth-") and manifest["config_hash"] == R.run_config_hash(small_config(demo_method))
    for m in methods:
        t = manifest["timings"][m]
        assert t["n_heatmaps"] == 8 * len(box_ids) and t["heatmaps_per_s"] > 0 and t["fit_s"] >= 0
        with read_bundle(out / "heatmaps" / f"{m}.npz") as b:
            assert sorted(b) == sorted(f"{i}::{lab}" for i in box_ids for lab in BOX_FINDINGS)
            assert b.image_sizes[box_ids[0]] == tuple(images.set_index("image_id").loc[box_ids[0], ["orig_h", "orig_w"]])
        probs = pd.read_csv(out / "heatmaps" / f"{m}.probs.csv", dtype={"image_id": str})
        assert list(probs.image_id) == list(images.image_id) and list(probs.columns[1:]) == list(FINDINGS)
        summary = json.loads((out / "scores" / m / "summary.json").read_text())
        assert summary["n_boxes"] == len(boxes)
        assert manifest["stages"][f"score/{m}"]["done"]
    assert manifest["timings"][demo_method]["n_params"] > 0
    assert not list((out / "heatmaps").glob("*.parts"))  # shards are merged and removed
    # the CPU type is recorded: byte-reproducibility holds per thread count on one CPU type only
    assert manifest["platform"]["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert manifest["platform"]["machine"]


def test_second_run_skips_every_stage(done_run, demo_method, tmp_path):
    out = fresh_copy(done_run[0], tmp_path / "again")
    before = {p: p.read_bytes() for p in (out / "scores").rglob("*.json")}
    log = Log()
    R.execute(small_config(demo_method), out, log=log)
    assert not [m for m in log if m.startswith(("fit", "explain", "score", "data: writing", "report"))], log
    assert {p: p.read_bytes() for p in (out / "scores").rglob("*.json")} == before


def test_scores_of_methods_no_longer_in_the_config_are_dropped(done_run, demo_method, tmp_path):
    out = fresh_copy(done_run[0], tmp_path / "stale")
    shutil.copytree(out / "scores" / demo_method, out / "scores" / "old-method")
    log = Log()
    R.execute(small_config(demo_method), out, log=log)
    assert not (out / "scores" / "old-method").exists() and (out / "scores" / demo_method).is_dir()
    assert any("scores of old-method removed" in m for m in log)


def test_truncated_bundle_is_redone_not_trusted(done_run, demo_method, tmp_path):
    out = fresh_copy(done_run[0], tmp_path / "trunc")
    bundle = out / "heatmaps" / f"{demo_method}.npz"
    bundle.write_bytes(bundle.read_bytes()[:100])
    summary = (out / "scores" / demo_method / "summary.json").read_bytes()
    log = Log()
    R.execute(small_config(demo_method), out, log=log)
    assert f"explain: {demo_method}" in log and f"fit: {demo_method}" not in log
    assert (out / "scores" / demo_method / "summary.json").read_bytes() == summary


def test_damaged_checkpoint_is_refitted_from_scratch(done_run, demo_method, tmp_path):
    from safetensors.torch import load

    out = fresh_copy(done_run[0], tmp_path / "damaged")
    weights = out / "checkpoints" / demo_method / "model.safetensors"
    good = load(weights.read_bytes())
    weights.write_bytes(weights.read_bytes()[:300])
    summary = (out / "scores" / demo_method / "summary.json").read_bytes()
    log = Log()
    R.execute(small_config(demo_method), out, log=log)
    assert any("fail their checksums; refitting from scratch" in m for m in log)
    again = load(weights.read_bytes())
    assert all(torch.equal(good[k], again[k]) for k in good)  # CPU training is bit-identical
    assert (out / "scores" / demo_method / "summary.json").read_bytes() == summary


def test_config_change_redoes_exactly_the_affected_stages(done_run, demo_method, tmp_path):
    out = fresh_copy(done_run[0], tmp_path / "changed")
    old_ckpt = (out / "checkpoints" / demo_method / "model.safetensors").read_bytes()
    # a scoring setting: only the scores (and report) are redone
    log = Log()
    R.execute(small_config(demo_method, overrides={"score": {"n_boot": 30}}), out, log=log)
    assert any("made by another config" in m for m in log)
    assert not [m for m in log if m.startswith(("fit", "explain"))] and f"score: {demo_method}" in log
    # a method setting: that method's fit starts afresh (old checkpoints are not resumed from)
    log = Log()
    cfg = small_config(demo_method, overrides={"methods": {demo_method: {"width": 4}}})
    R.execute(cfg, out, log=log)
    assert f"fit: {demo_method}" in log and "fit: prior-center" not in log
    assert any("starting this fit afresh" in m for m in log)
    assert (out / "checkpoints" / demo_method / "model.safetensors").read_bytes() != old_ckpt
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config_hash"] == R.run_config_hash(cfg) and len(manifest["config_history"]) == 3


def test_lock_refuses_a_second_run(tmp_path):
    with R.run_lock(tmp_path):
        with pytest.raises(R.RunError, match="in use by another wsl-bench run"):
            with R.run_lock(tmp_path):
                pass
    with R.run_lock(tmp_path):  # released afterwards
        pass


def test_same_seed_same_summary_bytes(done_run, demo_method, tmp_path):
    R.execute(small_config(demo_method), tmp_path / "twin", log=Log())
    for m in (demo_method, *R.REFERENCE_METHODS):
        a = (done_run[0] / "scores" / m / "summary.json").read_bytes()
        assert (tmp_path / "twin" / "scores" / m / "summary.json").read_bytes() == a, m


def test_dry_run_plans_without_touching(done_run, demo_method, tmp_path):
    text = R.dry_run_text(small_config(demo_method), done_run[0])
    assert f"fit/{demo_method}" in text and "done" in text and "96/32/48" in text
    fresh = R.dry_run_text(small_config(demo_method), tmp_path / "nothing")
    assert "to do" in fresh and not (tmp_path / "nothing").exists()
    # no timings yet: a probe estimates fit (trainable methods) and explain time per method
    assert f"method {demo_method}: trainable" in fresh and "MiB" in fresh
    lines = fresh.splitlines()
    est = lines[lines.index(next(l for l in lines if l.startswith(f"method {demo_method}"))) + 1]
    assert est.startswith("  estimate: fit ≈ ") and "(1 epochs), explain ≤ " in est
    assert "estimate: explain ≤ " in fresh  # the references: no fit
    assert "estimate:" not in text  # a finished folder shows its measured timings instead


def test_config_building_rules(demo_method, monkeypatch):
    cfg = R.build_config([demo_method], preset="tiny", ablate=["wide"])
    assert cfg["methods_order"] == [demo_method, f"{demo_method}-no-wide", *R.REFERENCE_METHODS]
    assert cfg["methods"][f"{demo_method}-no-wide"]["config"]["width"] == 4
    with pytest.raises(R.RunError, match="no component 'nope'"):
        R.build_config([demo_method], preset="tiny", ablate=["nope"])
    with pytest.raises(KeyError, match="unknown method 'no-such'"):
        R.build_config(["no-such"])
    with pytest.raises(R.RunError, match="--root"):
        R.build_config([demo_method], data="nih")
    with pytest.raises(R.RunError, match="unknown preset"):
        R.build_config([demo_method], preset="huge")
    monkeypatch.setattr("wsl_bench.presets.DEFAULT_METHODS", ("not-yet-a-method", demo_method))
    with pytest.warns(UserWarning, match="not-yet-a-method"):
        cfg = R.build_config(None)
    assert cfg["methods_order"][0] == demo_method
    assert R.run_config_hash(cfg) == R.run_config_hash({**cfg, "hardware": {"devices": 8}})  # hardware not hashed


def test_overrides_parse():
    assert R.parse_overrides(["data.n_train=200", "methods.gradcam.lr=1e-3", "score.policy=threshold"]) == {
        "data": {"n_train": 200}, "methods": {"gradcam": {"lr": 1e-3}}, "score": {"policy": "threshold"}}
    for bad in ("n_train=3", "zzz.a=1", "methods.gradcam=1", "data.n_train"):
        with pytest.raises(R.RunError):
            R.parse_overrides([bad])


def test_explain_command_draws_one_image(done_run, demo_method, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from wsl_bench.cli import app

    with np.load(done_run[0] / "data/gallery.npz") as g:
        Image.fromarray(g[g.files[0]]).resize((100, 120)).convert("RGB").save(tmp_path / "cxr.jpg")
    out = tmp_path / "cxr.tiny.png"
    result = CliRunner().invoke(app, ["explain", "--run", str(done_run[0]), "--method", demo_method, str(tmp_path / "cxr.jpg"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 600
    bad = CliRunner().invoke(app, ["explain", "--run", str(done_run[0]), "--method", "gradcam", str(tmp_path / "cxr.jpg")])
    assert bad.exit_code == 2 and "not part of run" in bad.output


def test_an_nih_layout_folder_runs_end_to_end(demo_method, tmp_path):
    from baselines.priors import lung_atlas
    from wsl_bench.data.export import export_nih_layout

    export_nih_layout(tmp_path / "nih", n=80, size=64, seed=0)
    cfg = R.build_config([demo_method], data="nih", root=str(tmp_path / "nih"), preset="tiny",
                         overrides={"score": {"n_boot": 10}, "report": {"full": False}})
    assert cfg["data"]["name"] == "nih" and "n_train" not in cfg["data"]
    R.execute(cfg, tmp_path / "run", log=Log())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert all(manifest["stages"][f"score/{m}"]["done"] for m in cfg["methods_order"])
    assert manifest["data_fingerprint"] != ""
    # no lung masks in NIH items: prior-lung falls back to the atlas of the real masks
    state = json.loads((tmp_path / "run" / "checkpoints" / "prior-lung" / "prior.json").read_text())
    assert np.allclose(np.asarray(state["map"], np.float32), lung_atlas(64))


def test_a_changed_cohort_behind_the_same_config_rewrites_the_ground_truth(done_run, demo_method, tmp_path, monkeypatch):
    """A new SynthCXR renderer (same config, new fingerprint): the data tables are rewritten and every fit
    redone, never scored against the old cohort's boxes."""
    import wsl_bench.data.synth.config as synth_config

    out = fresh_copy(done_run[0], tmp_path / "renderer")
    old_fp = json.loads((out / "manifest.json").read_text())["data_fingerprint"]
    monkeypatch.setattr(synth_config, "RENDERER_VERSION", "test-bump")
    log = Log()
    R.execute(small_config(demo_method), out, log=log)
    assert any(m.startswith("data: writing") for m in log) and f"fit: {demo_method}" in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data_fingerprint"] != old_fp and manifest["data_info"]["renderer_version"] == "test-bump"
