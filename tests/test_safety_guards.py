"""Run-folder guards: leftover temporary files of a killed stage, manifests of the wrong shape, output
folders that cannot be folders; and the settings a run records are the settings that ran."""

from __future__ import annotations

import json

import pytest

from wsl_bench import run as R
from wsl_bench.guards import check_out_dir, check_out_file, sanitize_manifest, sweep_temporaries
from wsl_bench.settings import SettingsError, check_run_inputs, method_problems


def test_sweep_removes_atomic_leftovers_only_in_run_folders(tmp_path):
    run = tmp_path / "run"
    figs = run / "report" / "figures"
    figs.mkdir(parents=True)
    (figs / ".iou_curves.pdf.k3j2x.tmp").write_bytes(b"half a pdf")  # what a kill during the report leaves
    (figs / "iou_curves.pdf").write_bytes(b"%PDF")
    (run / ".manifest.json.abc.tmp").write_text("{")
    (run / "scores" / ".gradcam.tmp").mkdir(parents=True)
    (run / "elsewhere").mkdir()
    (run / "elsewhere" / ".keep.tmp").write_text("not a run sub-folder: left alone")
    (run / ".lock").write_text("")
    logs: list[str] = []
    removed = sweep_temporaries(run, logs.append)
    assert sorted(p.name for p in removed) == [".gradcam.tmp", ".iou_curves.pdf.k3j2x.tmp", ".manifest.json.abc.tmp"]
    assert (figs / "iou_curves.pdf").exists() and (run / "elsewhere" / ".keep.tmp").exists() and (run / ".lock").exists()
    assert logs and "removed 3 temporary file(s)" in logs[0]


def test_a_run_removes_the_temporaries_of_a_killed_one(tmp_path):
    over = R.parse_overrides(["data.n_train=32", "data.n_val=16", "data.n_test=16", "report.full=false", "score.n_boot=5",
                              "score.sanity=false"])
    cfg = R.build_config(["prior-center"], preset="tiny", seed=0, overrides=over)
    out = tmp_path / "run"
    stale = out / "report" / "figures" / ".iou_curves.pdf.x1y2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"killed mid-write")
    logs: list[str] = []
    R.execute(cfg, out, log=logs.append)
    assert not stale.exists() and any("temporary file(s)" in m for m in logs)


@pytest.mark.parametrize("obj", [[], None, "x", 3, {"stages": "x"}, {"stages": {"a": []}}, {"stages": {"a": {"files": [1]}}},
                                 {"stages": {"a": {"files": {"f": 1}}}}, {"stages": {"a": {"caches": "x"}}},
                                 {"timings": [], "failures": "no", "config_history": {}}, {"timings": {"m": 3}}])
def test_sanitize_manifest_keeps_only_well_formed_parts(obj):
    logs: list[str] = []
    clean = sanitize_manifest(obj, "manifest.json", logs.append)
    assert isinstance(clean, dict) and logs and logs[0].startswith("warning: manifest.json")
    for entry in clean.get("stages", {}).values():
        assert isinstance(entry.get("files", {}), dict)
    assert isinstance(clean.get("timings", {}), dict) and all(isinstance(t, dict) for t in clean.get("timings", {}).values())


def test_sanitize_keeps_a_good_manifest_as_it_is():
    good = {"stages": {"fit/a": {"key": "k", "done": True, "files": {"x": "ab"}, "caches": {"y": "cd"}}},
            "timings": {"a": {"fit_s": 1.0}}, "config_history": ["h"], "failures": {}}
    logs: list[str] = []
    assert sanitize_manifest(json.loads(json.dumps(good)), "m", logs.append) == good and not logs


def test_out_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*f is a file; give a folder path"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=r"is under .*f, which is a file"):
        check_out_dir(tmp_path / "f" / "sub")
    assert not (tmp_path / "new").exists()
    check_out_dir(tmp_path / "new", create=False)
    assert not (tmp_path / "new").exists()
    assert check_out_dir(tmp_path / "new").is_dir()
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        check_out_file(tmp_path)


def test_settings_list_every_problem_and_keep_the_old_wording(demo_method):
    with pytest.raises(SettingsError) as info:
        check_run_inputs([demo_method], data=None, root=None, preset="tiny", seed=-1, ablate=None,
                         overrides={"fit": {"max_epochs": 0, "bogus": 1}, "score": {"policy": "x"}},
                         hardware={"devices": "abc", "num_nodes": 0})
    msg = str(info.value)
    assert msg.startswith("6 problems with the run settings:")
    for needle in ("--seed=-1", "unknown fit setting(s) ['bogus']", "fit.max_epochs=0", "unknown policy 'x'",
                   "--devices 'abc'", "--num-nodes=0"):
        assert needle in msg
    assert isinstance(info.value, R.RunError) and isinstance(info.value, KeyError)


def test_valid_settings_pass_and_sanity_keys_are_accepted(demo_method):
    check_run_inputs([demo_method], data=None, root=None, preset="tiny", seed=2**32 - 1, ablate=None,
                     overrides={"fit": {"max_epochs": 2, "batch_size": 8, "precision": "32-true"},
                                "score": {"sanity": False, "sanity_images": 4, "n_boot": 0}},
                     hardware={"accelerator": "cpu", "devices": 1, "strategy": "ddp", "num_nodes": 1})


def test_every_registered_method_accepts_its_own_presets_and_ablations():
    from wsl_bench.methods import available_methods

    for name, info in available_methods().items():
        groups = [dict(info.defaults), *map(dict, info.cls.presets.values()), *map(dict, info.cls.ablations.values())]
        for values in groups:
            for preset in (None, *info.cls.presets):
                assert method_problems(name, info, preset, values) == [], (name, preset, values)
        assert method_problems(name, info, None, {"no_such_key_at_all": 1}), name  # and refuses unknown keys


def test_the_config_written_is_the_config_that_ran(demo_method, tmp_path):
    over = R.parse_overrides(["data.n_train=32", "data.n_val=16", "data.n_test=16", "report.full=false", "score.n_boot=5",
                              "score.sanity=false", "fit.batch_size=7", "fit.max_epochs=1"])
    cfg = R.build_config([demo_method], preset="tiny", seed=0, overrides=over)
    out = tmp_path / "run"
    R.execute(cfg, out, log=lambda m: None)
    import yaml

    written = yaml.safe_load((out / "config.yaml").read_text())
    timings = json.loads((out / "manifest.json").read_text())["timings"][demo_method]
    assert written["fit"]["batch_size"] == timings["fit_batch_size"] == 7
    assert written["fit"]["max_epochs"] == timings["fit_max_epochs"] == 1


def test_train_module_refuses_zero_instead_of_replacing_it(tiny_splits, tmp_path):
    from wsl_bench.methods import FitContext
    from wsl_bench.training import ClassifierModule, train_module

    net = __import__("torch").nn.Sequential(__import__("torch").nn.Flatten(), __import__("torch").nn.Linear(256, 14))
    ctx = FitContext(checkpoint_dir=tmp_path / "ck", max_epochs=0)
    with pytest.raises(ValueError, match="max_epochs=0"):
        train_module(ClassifierModule(net), *tiny_splits, ctx, max_epochs=3, batch_size=8)
