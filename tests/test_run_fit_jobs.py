"""Fits side by side (`--fit-jobs`): the weights, maps and scores of one fit at a time at the same thread count."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
import torch

from wsl_bench import caches
from wsl_bench import run as R
from wsl_bench.settings import SettingsError
from wsl_bench.stages import base as B
from wsl_bench.stages import fit_pool as P

SMALL = {"data": {"n_train": 96, "n_val": 32, "n_test": 48}, "score": {"n_boot": 20}, "report": {"full": False},
         "explain": {"batch_size": 16}}


def config(methods, **hardware):
    return R.build_config(methods, preset="tiny", seed=0, overrides=json.loads(json.dumps(SMALL)), hardware=hardware)


@pytest.mark.slow
def test_two_fits_at_once_give_the_weights_maps_and_scores_of_one_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the serial run's thread count, which each worker then gets
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        methods = ["gradcam", "gradcam++"]  # one shared backbone: one trains it, the other waits and loads it
        R.execute(config(methods, fit_jobs=1), tmp_path / "one", log=lambda m: None)
        log: list[str] = []
        R.execute(config(methods, fit_jobs=2), tmp_path / "two", log=log.append)
    finally:
        torch.set_num_threads(threads)
    assert "fit: 3 methods, 2 at a time, 1 torch thread(s) each" in log  # gradcam, gradcam++, oracle-seg
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    for m in ("gradcam", "gradcam++", "oracle-seg"):
        assert two["timings"][m]["fit_jobs"] == 2 and two["timings"][m]["fit_threads"] == 1
        assert "fit_jobs" not in one["timings"][m]
        for rel in (f"checkpoints/{m}/model.safetensors", f"heatmaps/{m}.npz", f"scores/{m}/per_box.csv"):
            assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
        assert two["stages"][f"fit/{m}"]["key"] == one["stages"][f"fit/{m}"]["key"]
    assert sorted(two["stages"]["fit/gradcam"]["caches"]) == sorted(two["stages"]["fit/gradcam++"]["caches"])
    shared = [json.loads((tmp_path / "two" / "checkpoints" / m / "model.json").read_text())["fit"] for m in methods]
    assert sorted(info["trained"] for info in shared) == [False, True]  # the backbone was trained once
    again: list[str] = []
    R.execute(config(methods, fit_jobs=2), tmp_path / "two", log=again.append)
    assert not any(line.startswith("fit") for line in again)  # resumed: every fit recorded as done


def test_fit_jobs_counts(monkeypatch):
    monkeypatch.setattr(P, "_cores", lambda: 16)
    cpu = {"accelerator": "cpu", "devices": 1, "num_nodes": 1}
    assert P.fit_jobs({**cpu, "fit_jobs": "auto"}, 3) == 3  # never more workers than fits
    assert P.fit_jobs({**cpu, "fit_jobs": "auto"}, 40) == 16
    assert P.fit_jobs({**cpu, "fit_jobs": 4}, 40) == 4
    assert P.fit_jobs({**cpu, "fit_jobs": 4}, 0) == 1
    assert P.fit_jobs(cpu, 5) == 1  # not set: one fit at a time
    assert P.fit_jobs({**cpu, "devices": 2, "strategy": "ddp", "fit_jobs": "auto"}, 5) == 1  # DDP has the cores


def test_threads_per_process_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [B.threads_per_process(n) for n in (1, 2, 3)] == [2, 1, 1]


def test_fit_jobs_default_and_flag():
    for preset in ("quick", "standard", "tiny"):
        assert R.build_config(["gradcam"], preset=preset)["hardware"]["fit_jobs"] == 1
    assert R.build_config(["gradcam"], preset="standard", hardware={"fit_jobs": "auto"})["hardware"]["fit_jobs"] == "auto"
    assert R.build_config(["gradcam"], preset="quick", hardware={"fit_jobs": None})["hardware"]["fit_jobs"] == 1
    # a hardware setting: the same results, so the same config hash and stage keys
    assert R.run_config_hash(config(["gradcam"], fit_jobs=2)) == R.run_config_hash(config(["gradcam"], fit_jobs=1))


@pytest.mark.parametrize("bad, match", [(0, "--fit-jobs 0 must be a count"), ("two", "--fit-jobs 'two' must be"),
                                        (True, "must be a count")])
def test_bad_fit_jobs_is_refused(bad, match):
    with pytest.raises(SettingsError, match=match):
        R.build_config(["gradcam"], preset="tiny", hardware={"fit_jobs": bad})


def test_fit_jobs_and_ddp_are_one_or_the_other():
    with pytest.raises(SettingsError, match="cannot be combined with --devices 2"):
        R.build_config(["gradcam"], preset="tiny", hardware={"fit_jobs": 2, "devices": 2, "strategy": "ddp",
                                                             "accelerator": "cpu"})


def _fake_run(**shares):
    methods = {m: {"config": {"share_checkpoint": s}} for m, s in {"a": None, "b": None, "c": None, **shares}.items()}
    return SimpleNamespace(config={"methods": methods})


def test_a_fit_sharing_a_named_checkpoint_waits_for_it():
    run = _fake_run(a="c")  # a loads c's checkpoint: c must finish first
    pending = [("a", "ka"), ("b", "kb"), ("c", "kc")]
    assert P._ready(run, pending, {}, 2) == [("b", "kb"), ("c", "kc")]
    assert P._ready(run, [("a", "ka")], {"fut": ("c", "kc")}, 2) == []  # c still running
    assert P._ready(run, [("a", "ka")], {}, 2) == [("a", "ka")]  # c done
    assert P._ready(_fake_run(), pending, {"fut": ("x", "kx")}, 2) == [("a", "ka")]  # one free worker
    assert P._ready(_fake_run(a="auto"), pending, {}, 1) == [("a", "ka")]  # "auto" is the cache, not a method


def test_building_a_cache_is_exclusive(tmp_path):
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        with caches.building(tmp_path / "cache"):
            order.append("second")
            entered.set()

    with caches.building(tmp_path / "cache"):
        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(0.3)  # the second builder waits while the first holds the cache
        order.append("first done")
    assert entered.wait(10)
    t.join()
    assert order == ["first done", "second"]


def test_a_ddp_fit_takes_no_cache_lock(tmp_path):
    ddp = SimpleNamespace(devices=2, num_nodes=1)
    with caches.building(tmp_path / "cache", ddp), caches.building(tmp_path / "cache", ddp):
        pass  # ranks build a cache together: a lock would make them wait on each other
    assert not (tmp_path / ".cache.lock").exists()


def test_dry_run_says_how_the_fits_will_run(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "_cores", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = R.dry_run_text(config(["gradcam"], fit_jobs="auto"), tmp_path / "run")
    assert "fits: 2 trainable to do, 2 at a time with 1 torch thread(s) each" in text  # gradcam, oracle-seg
    assert "fits: one at a time (2 trainable to do" in R.dry_run_text(config(["gradcam"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
