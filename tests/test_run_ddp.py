"""Explain sharded across processes: the same bundle, probabilities and scores as one process."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from wsl_bench import run as R
from wsl_bench.stages import data as D
from wsl_bench.stages import base as B
from wsl_bench.stages import explain as X
from wsl_bench.stages import fit as F
from wsl_bench.heatmaps import read_bundle

SMALL = {"data": {"n_train": 96, "n_val": 32, "n_test": 48}, "score": {"n_boot": 20}, "report": {"full": False},
         "explain": {"batch_size": 8}}


def config(method: str, **hardware):
    return R.build_config([method], preset="tiny", seed=0, overrides=json.loads(json.dumps(SMALL)), hardware=hardware)


def test_explain_world_follows_devices_and_strategy():
    assert R.explain_world({"devices": 1, "strategy": "ddp"}) == 1
    assert R.explain_world({"devices": 4, "strategy": "auto"}) == 1  # not a DDP run: one process
    assert R.explain_world({"devices": 4, "strategy": "ddp"}) == 4
    assert R.explain_world({"devices": "3", "strategy": "ddp_find_unused_parameters_true"}) == 3
    assert R.explain_world({"devices": "auto", "strategy": "ddp", "accelerator": "cpu"}) == 1


@pytest.mark.slow
def test_two_explain_processes_give_the_identical_bundle(demo_method, tmp_path):
    one = tmp_path / "one"
    R.execute(config(demo_method), one, log=lambda m: None)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    redo = (demo_method, "random")  # a trained CAM (sharded) and the seeded-noise reference (one process)
    for m in redo:
        (two / "heatmaps" / f"{m}.npz").unlink()  # fails its checksum: explain, score and report are redone
    log = []
    R.execute(config(demo_method, accelerator="cpu", devices=2, strategy="ddp"), two, log=log.append)
    assert f"explain {demo_method}: 2 processes, one shard of batches each" in log
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["timings"][demo_method]["explain_processes"] == 2
    assert manifest["timings"]["random"]["explain_processes"] == 1  # references never start workers
    assert "explain random: 2 processes, one shard of batches each" not in log
    for m in redo:
        with read_bundle(one / "heatmaps" / f"{m}.npz") as a, read_bundle(two / "heatmaps" / f"{m}.npz") as b:
            assert sorted(a) == sorted(b) and a.image_sizes == b.image_sizes
            for k in a:
                assert np.array_equal(a[k], b[k]), k
        for rel in (f"heatmaps/{m}.probs.csv", f"scores/{m}/summary.json", f"scores/{m}/per_box.csv"):
            assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    assert not list((two / "heatmaps").glob("*.parts"))


def test_fit_speed_options_reach_the_fit_context(demo_method, tmp_path):
    cfg = R.build_config([demo_method], preset="tiny", overrides=R.parse_overrides(
        ["fit.compile=aot_eager", "fit.channels_last=true"]))
    run = R.Run(tmp_path, cfg)
    ctx = F.fit_context(run, cfg["methods"][demo_method], tmp_path / "ck")
    assert ctx.compile == "aot_eager" and ctx.channels_last is True
    plain = F.fit_context(R.Run(tmp_path, R.build_config([demo_method], preset="tiny")), cfg["methods"][demo_method], tmp_path)
    assert plain.compile is False and plain.channels_last is None
    with pytest.raises(R.RunError, match="unknown fit setting"):
        R.build_config([demo_method], preset="tiny", overrides={"fit": {"compiled": True}})
    with pytest.raises(R.RunError, match="fit.compile must be"):
        R.build_config([demo_method], preset="tiny", overrides={"fit": {"compile": 3}})


def test_explain_threads_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [R.explain_threads(n) for n in (1, 2, 3, 8, 32)] == [16, 8, 5, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's setting is an upper bound
    assert [R.explain_threads(n) for n in (1, 2, 8)] == [4, 4, 2]


def test_explain_worker_sets_its_thread_count_before_working(monkeypatch, tmp_path):
    """A spawned explain rank on CPU runs with cores // world torch threads (not the all-cores default)."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    seen = {}
    monkeypatch.setattr(D, "load_cohort", lambda data, seed, progress=False: type("Cohort", (), {"test": "the test split"})())

    def fake_shards(run, test, name, parts, rank, world):
        seen.update(threads=torch.get_num_threads(), rank=rank, world=world, test=test, name=name)

    monkeypatch.setattr(X, "_write_shards", fake_shards)
    before = torch.get_num_threads()
    cfg = config("random", accelerator="cpu", devices=3, strategy="ddp")
    try:
        X._explain_worker(1, str(tmp_path), cfg, "random", str(tmp_path / "parts"), 3, "wsl_bench.methods")
    finally:
        torch.set_num_threads(before)
    assert seen == {"threads": 2, "rank": 2, "world": 3, "test": "the test split", "name": "random"}
