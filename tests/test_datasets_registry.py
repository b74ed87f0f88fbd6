"""The dataset registry: the contract every registered dataset keeps, synth and nih through it, the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.data import registry as D
from wsl_bench.data.nih_registered import NIH_KEYS
from wsl_bench.data.registry import DatasetError, available_datasets, get_dataset, mapping_rows
from wsl_bench.labels import BOX_FINDINGS, FINDINGS
from wsl_bench.settings import data_problems

NAMES = list(available_datasets())
MIRROR_COUNTS = {
    "Atelectasis": 180, "Cardiomegaly": 146, "Effusion": 153, "Infiltrate": 123,
    "Mass": 85, "Nodule": 79, "Pneumonia": 120, "Pneumothorax": 98,
}
runner = CliRunner()


def test_the_built_ins_are_registered():
    assert {"synth", "nih"} <= set(NAMES)
    assert NAMES == sorted(NAMES)


# ---------------------------------------------------------------------------------------------------
# the contract, for every registered dataset
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    ds = get_dataset(name)
    assert ds.name == name and ds.description.strip() and ds.source.strip()
    assert ds.labels and ds.localizes
    for flag in (ds.needs_root, ds.has_masks, ds.exact_masks, ds.readers):
        assert isinstance(flag, bool)
    assert ds.has_masks or not ds.exact_masks  # exact masks are masks
    targets = {t for ts in ds.to_suite.values() for t in ts}
    assert targets and targets <= set(FINDINGS) | set(BOX_FINDINGS)
    assert ds.suite_box_findings(), f"{name} localizes none of the suite's box findings"
    assert set(ds.suite_box_findings()) <= set(BOX_FINDINGS)
    rows = mapping_rows(ds)
    assert {r["finding"] for r in rows} == set(ds.labels) | set(ds.localizes)
    assert all(r["suite"] in ("", *FINDINGS, *BOX_FINDINGS) for r in rows)


@pytest.mark.parametrize("name", NAMES)
def test_resolve_config_refuses_an_unknown_key_by_name(name, tmp_path):
    ds = get_dataset(name)
    with pytest.raises(DatasetError, match="no_such_key"):
        ds.resolve_config({"name": name, "image_size": 32, "root": str(tmp_path), "no_such_key": 1})


@pytest.mark.parametrize("name", NAMES)
def test_resolve_config_is_idempotent_and_names_the_dataset(name, tmp_path):
    ds = get_dataset(name)
    once = ds.resolve_config({"name": name, "image_size": 32, "root": str(tmp_path)})
    assert once["name"] == name and once["image_size"] == 32
    assert ds.resolve_config(once) == once


@pytest.mark.parametrize("name", [n for n in NAMES if available_datasets()[n].needs_root])
def test_a_dataset_read_from_disk_needs_a_root(name):
    with pytest.raises(DatasetError, match=f"--data {name} needs --root DIR"):
        get_dataset(name).resolve_config({"name": name, "image_size": 32})


@pytest.mark.parametrize("name", NAMES)
def test_datasets_list_shows_it(name):
    ds = get_dataset(name)
    res = runner.invoke(app, ["datasets", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    block = "\n".join(lines[lines.index(name) + 1 : lines.index(name) + 5])
    assert ds.description in block and ds.source in block
    res = runner.invoke(app, ["datasets", "list", "--json"])
    assert res.exit_code == 0, res.output
    entry = {e["name"]: e for e in json.loads(res.output)}[name]
    assert entry["localizes"] == list(ds.suite_box_findings()) and entry["mapping"] == mapping_rows(ds)
    assert entry["needs_root"] == ds.needs_root and entry["has_masks"] == ds.has_masks


# ---------------------------------------------------------------------------------------------------
# synth: today's run config and cohort
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["quick", "standard", "tiny"])
def test_synth_resolve_config_is_the_run_config(preset):
    from wsl_bench import run as R

    want = R.build_config(["prior-center"], preset=preset)["data"]
    assert get_dataset("synth").resolve_config(dict(R.PRESETS[preset]["data"])) == want


def test_synth_resolve_config_spells_out_every_field_but_the_seed():
    from dataclasses import fields

    from wsl_bench.data.synth import SynthConfig

    cfg = get_dataset("synth").resolve_config({"name": "synth", "n_train": 5, "root": "/ignored"})
    assert set(cfg) == {"name"} | {f.name for f in fields(SynthConfig)} - {"seed"}
    assert cfg["n_train"] == 5 and cfg["n_val"] == SynthConfig().n_val and "root" not in cfg


@pytest.mark.parametrize("bad, needle", [
    ({"seed": 3}, "data.seed is set by --seed"),
    ({"confounders": "ruler"}, "data settings: unknown confounder"),
    ({"n_train": -1}, "data settings: SynthConfig.n_train must be >= 0"),
])
def test_synth_resolve_config_errors(bad, needle):
    with pytest.raises(DatasetError, match=needle):
        get_dataset("synth").resolve_config({"name": "synth", **bad})


def test_synth_load_is_load_synth_at_the_run_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("WSL_BENCH_CACHE", str(tmp_path / "cache"))
    from wsl_bench.data.synth import SynthConfig, load_synth

    ds = get_dataset("synth")
    cfg = ds.resolve_config({"name": "synth", "n_train": 6, "n_val": 2, "n_test": 6, "generate_size": 32, "image_size": 16})
    got = ds.load(cfg, seed=5)
    want = load_synth(SynthConfig(n_train=6, n_val=2, n_test=6, generate_size=32, image_size=16, seed=5), cache_dir=False)
    assert got.fingerprint == want.fingerprint and got.name == "synth"
    for split in ("train", "val", "test"):
        a, b = getattr(got, split), getattr(want, split)
        assert a.image_ids == b.image_ids and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.load_images(range(len(a))).numpy(), b.load_images(range(len(b))).numpy())
    assert got.test.boxes.equals(want.test.boxes)


def test_synth_info_and_no_mirror(tmp_path):
    d = get_dataset("synth").info(seed=0)
    assert d["split"] == {"train": 2400, "val": 400, "test": 600}
    with pytest.raises(DatasetError, match="'synth' has no mirror export; datasets with one: .*nih"):
        get_dataset("synth").export_mirror(tmp_path, size=32)


# ---------------------------------------------------------------------------------------------------
# nih: a mirror written through the registry, read back through it
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nih_mirror(tmp_path_factory):
    """`synth export --mirror nih`: the 880 real box images at 32 px and 20 synthetic train_val images."""
    out = tmp_path_factory.mktemp("nih-mirror")
    res = runner.invoke(app, ["synth", "export", "--mirror", "nih", "--n", "20", "--size", "32", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.output)


def test_nih_round_trip_on_its_mirror(nih_mirror):
    root, summary = nih_mirror
    assert summary["images"] == 900 and summary["box_images"] == 880 and summary["boxes"] == 984
    ds = get_dataset("nih")
    cfg = ds.resolve_config({"name": "nih", "image_size": 16, "root": str(root)})
    assert cfg == {"name": "nih", "image_size": 16, "root": str(root), "val_fraction": 0.1, "skip_bad": False}
    cohort = ds.load(cfg, seed=0)
    assert len(cohort.test) == 880 and len(cohort.test.boxes) == 984
    assert len(cohort.train) + len(cohort.val) == 20
    assert cohort.info["boxes_per_label"] == MIRROR_COUNTS
    assert set(cohort.test.boxes["label"]) <= set(ds.suite_box_findings())
    from wsl_bench.data.nih import load_nih

    direct = load_nih(root, image_size=16, seed=0, val_fraction=0.1, skip_bad=False)
    assert cohort.fingerprint == direct.fingerprint and cohort.test.image_ids == direct.test.image_ids
    info = ds.info(root)
    assert info["boxes"] == 984 and info["split"] == {"train_val": 20, "test": 880} and info["missing_files"] == []


def test_nih_info_errors_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="needs --root"):
        get_dataset("nih").info(None)
    with pytest.raises(DatasetError, match="nihcc.app.box.com"):
        get_dataset("nih").info(tmp_path / "none")


def test_mirror_nih_is_an_alias_of_mirror_nih(tmp_path, monkeypatch):
    from wsl_bench.data import export

    calls = []
    monkeypatch.setattr(export, "export_nih_layout", lambda out, **kw: calls.append(kw) or
                        {"images": 1, "box_images": 1, "boxes": 1})
    for args in (["--mirror-nih"], ["--mirror", "nih"], ["--mirror-nih", "--n", "7"], ["--mirror", "nih", "--n", "7"]):
        res = runner.invoke(app, ["synth", "export", *args, "--size", "64", "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert "wrote 1 images (1 with 1 boxes)" in res.output
    assert calls[0] == calls[1] == {"n": 1000, "size": 64, "seed": 0, "mirror_nih": True, "progress": True}
    assert calls[2] == calls[3] == {**calls[0], "n": 7}


# ---------------------------------------------------------------------------------------------------
# commands and settings
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["datasets", "info", "--data", "imagenet"], "unknown dataset 'imagenet'; registered: "),
    (["synth", "export", "--mirror", "imagenet", "--out", "x"], "unknown dataset 'imagenet'; registered: "),
    (["synth", "export", "--mirror", "synth", "--out", "x"], "has no mirror export"),
    (["synth", "export", "--mirror", "synth", "--mirror-nih", "--out", "x"], "--mirror-nih is --mirror nih"),
    (["synth", "export", "--n", "0", "--out", "x"], "would write an empty dataset"),
])
def test_command_errors_are_one_line_exit_2(args, needle):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    if "registered: " in needle:
        assert all(n in res.output for n in NAMES)


def test_list_and_info_have_examples():
    for args in (["datasets", "list", "--help"], ["datasets", "info", "--help"], ["synth", "export", "--help"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and "Example: wsl-bench" in res.output


def test_settings_accept_registered_names_only():
    problems = data_problems({"name": "imagenet", "image_size": 32}, NIH_KEYS)
    assert len(problems) == 1 and "unknown data 'imagenet'" in problems[0]
    assert all(n in problems[0] for n in NAMES)
    assert "unknown data ['synth']" in data_problems({"name": ["synth"], "image_size": 32}, NIH_KEYS)[0]
    assert data_problems({"name": "synth", "image_size": 32}, NIH_KEYS) == []


# ---------------------------------------------------------------------------------------------------
# the registry's own rules
# ---------------------------------------------------------------------------------------------------


class _Toy(D.Dataset):
    name = "toy-registry"
    description = "a toy"
    source = "nowhere"
    labels = ("blob",)
    localizes = ("blob",)
    to_suite = {"blob": ("Nodule",)}
    needs_root = False

    def load(self, data_cfg, seed, progress=False):
        raise NotImplementedError

    def info(self, root=None, seed=0):
        return {"images": 0}

    def export_mirror(self, out, *, size, seed=0, progress=False):
        return {"out": str(out), "size": size}


@pytest.fixture
def toy():
    D.register_dataset(_Toy)
    yield _Toy.name
    D.unregister_dataset(_Toy.name)


def test_registration_rules(toy):
    assert toy in available_datasets() and isinstance(get_dataset(toy), _Toy)
    D.register_dataset(_Toy)  # the same class again is fine
    with pytest.raises(ValueError, match="registered twice"):
        D.register_dataset(type("Other", (_Toy,), {}))
    with pytest.raises(TypeError, match="Dataset subclass with a name"):
        D.register_dataset(object)
    with pytest.raises(TypeError, match="Dataset subclass with a name"):
        D.register_dataset(type("Nameless", (_Toy,), {"name": ""}))
    with pytest.raises(ValueError, match=r"unknown suite findings \['Fracture'\]"):
        D.register_dataset(type("Bad", (_Toy,), {"name": "toy-bad", "to_suite": {"blob": ("Fracture",)}}))
    assert "toy-bad" not in available_datasets()
    D.unregister_dataset(toy)
    assert toy not in available_datasets()


def test_defaults_and_known_keys(toy):
    ds = get_dataset(toy)
    assert ds.resolve_config({"name": "other", "image_size": 8}) == {"name": toy, "image_size": 8}
    with pytest.raises(DatasetError, match=r"unknown toy-registry data setting\(s\) \['zoom'\]; known: image_size, name, root"):
        ds.resolve_config({"image_size": 8, "zoom": 2})


def test_a_mirror_without_extra_images_refuses_n(toy, tmp_path):
    res = runner.invoke(app, ["synth", "export", "--mirror", toy, "--n", "3", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "drop --n" in res.output
    res = runner.invoke(app, ["synth", "export", "--mirror", toy, "--size", "48", "--out", str(tmp_path)])
    assert res.exit_code == 0 and '"size": 48' in res.output


def test_settings_hand_other_datasets_their_own_checks(toy):
    assert data_problems({"name": toy, "image_size": 32}, NIH_KEYS) == []
    problems = data_problems({"name": toy, "image_size": 4, "zoom": 2}, NIH_KEYS)
    assert any("data.image_size=4" in p for p in problems) and any("['zoom']" in p for p in problems)


def _reload_with(monkeypatch, modules, optional):
    monkeypatch.setattr(D, "BUILTIN_MODULES", tuple(modules))
    monkeypatch.setattr(D, "OPTIONAL_BUILTINS", frozenset(optional))
    monkeypatch.setattr(D, "_LOADED", False)
    return available_datasets()


def test_absent_optional_builtins_are_skipped_and_nothing_else(monkeypatch, tmp_path):
    absent = "wsl_bench.data.no_such_dataset_module"
    assert {"synth", "nih"} <= set(_reload_with(monkeypatch, [*D.BUILTIN_MODULES, absent], D.OPTIONAL_BUILTINS | {absent}))
    with pytest.raises(ModuleNotFoundError, match="no_such_dataset_module"):
        _reload_with(monkeypatch, [absent], set())
    # an optional module that exists but lacks a dependency is an error, not a skip
    (tmp_path / "h1_dataset_needing_a_dependency.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        _reload_with(monkeypatch, ["h1_dataset_needing_a_dependency"], {"h1_dataset_needing_a_dependency"})
    sys.modules.pop("h1_dataset_needing_a_dependency", None)
    assert D._LOADED is False  # a failed load is retried next time


def test_a_broken_entry_point_is_reported_not_raised(monkeypatch):
    class EP:
        name, value = "broken", "nowhere_module"

        def load(self):
            raise ImportError("No module named 'nowhere_module'")

    monkeypatch.setattr(D.metadata, "entry_points", lambda group: [EP()] if group == D.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(D, "_LOADED", False)
    assert {"synth", "nih"} <= set(available_datasets())
    assert D.entry_point_errors() == ["entry point 'broken' (nowhere_module): ImportError: No module named 'nowhere_module'"]
    res = runner.invoke(app, ["datasets", "list"])
    assert res.exit_code == 0 and "warning: entry point 'broken'" in res.output
    monkeypatch.setattr(D.metadata, "entry_points", lambda group: [])
    D.load_entry_points()
    assert D.entry_point_errors() == []
