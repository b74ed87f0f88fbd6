"""The one checkpoint format (`wsl_bench.checkpoints`): round trips, each refusal, interrupted saves, folders
written by older versions, and every registered trainable method's fit writing this format and nothing else."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wsl_bench import checkpoints
from wsl_bench.checkpoints import CheckpointError, load_checkpoint, read_meta, read_state_dict, save_checkpoint
from wsl_bench.io import sha256_file
from wsl_bench.methods import FitContext, available_methods, create_method, resolve_config


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 3, generator=g).t(),  # not contiguous: saved contiguous
        "steps": torch.arange(5, dtype=torch.int64) + seed,
        "half": torch.randn(3, generator=g).to(torch.bfloat16),
        "mask": torch.tensor([True, False, True]),
    }


META = {"method": "demo", "config": {"arch": "resnet18", "widths": [8, 16], "weights": None}, "fit": {"fit_s": 1.5}}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# -- the format ---------------------------------------------------------------------------------------------


def test_round_trip_keeps_tensors_and_meta_and_is_deterministic(tmp_path):
    path = save_checkpoint(tmp_path / "a", tensors(), META)
    assert path == tmp_path / "a" / "model.json"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.json", "model.safetensors"]
    got, meta = load_checkpoint(tmp_path / "a")
    assert_same(got, tensors())
    assert meta == META  # the seal is not part of the meta
    seal = json.loads(path.read_text())["checkpoint"]
    weights = tmp_path / "a" / "model.safetensors"
    assert seal == {"format": checkpoints.FORMAT, "tensors": "model.safetensors", "bytes": weights.stat().st_size,
                    "sha256": sha256_file(weights)}
    # the same tensors and meta give the same bytes
    save_checkpoint(tmp_path / "b", tensors(), META)
    for name in ("model.json", "model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read_meta(tmp_path / "a") == META


def test_named_checkpoints_live_side_by_side(tmp_path):
    save_checkpoint(tmp_path, tensors(1), {"n": 1}, name="teacher")
    save_checkpoint(tmp_path, {"logits": torch.ones(2, 14)}, {"rows": 2}, name="train_logits")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "teacher.json", "teacher.safetensors", "train_logits.json", "train_logits.safetensors"]
    assert_same(load_checkpoint(tmp_path, "teacher")[0], tensors(1))
    assert load_checkpoint(tmp_path, "train_logits")[1] == {"rows": 2}


@pytest.mark.parametrize("meta, error, match", [
    ({"checkpoint": 1}, ValueError, "reserved|may not use the key"),
    ({"score": float("nan")}, ValueError, "Out of range float"),
    ({"when": object()}, TypeError, "not JSON serializable"),
    (["not", "a", "dict"], TypeError, "must be a dict"),
])
def test_bad_meta_is_refused_before_anything_is_written(tmp_path, meta, error, match):
    with pytest.raises(error, match=match):
        save_checkpoint(tmp_path / "ck", tensors(), meta)
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_non_tensor_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="not tensors: \\['lr'\\]"):
        save_checkpoint(tmp_path, {"w": torch.ones(1), "lr": 0.1}, {})


# -- refusals -----------------------------------------------------------------------------------------------


def test_missing_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a CAN checkpoint: can.safetensors is missing; fit can first"):
        load_checkpoint(tmp_path, "can", kind="a CAN checkpoint", fix="fit can first")
    save_checkpoint(tmp_path, tensors(), META)
    (tmp_path / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match="model.json is missing .*interrupted.*; delete the folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("text, match", [
    ("{not json", "model.json is not valid JSON"),
    ("[1, 2, 3]", "holds a JSON list, not an object"),
    ('"model"', "holds a JSON str, not an object"),
    ('{"config": {}}', "has no 'checkpoint' seal"),
    ('{"checkpoint": {"format": "wsl-bench-checkpoint/99"}}', "format 'wsl-bench-checkpoint/99' is not"),
    ('{"checkpoint": "yes"}', "format 'yes' is not"),
])
def test_a_json_that_is_not_a_checkpoint_is_refused(tmp_path, text, match):
    save_checkpoint(tmp_path, tensors(), META)
    (tmp_path / "model.json").write_text(text)
    for read in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError, match=match) as err:
            read(tmp_path, fix="refit it")
        assert str(err.value).endswith("; refit it") and isinstance(err.value, ValueError)


def test_a_mismatched_pair_is_refused(tmp_path):
    save_checkpoint(tmp_path / "a", tensors(0), META)
    save_checkpoint(tmp_path / "b", tensors(1), META)
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors does not match the checksum sealed in model.json"):
        load_checkpoint(tmp_path / "a")
    # a JSON sealing another checkpoint's tensors
    save_checkpoint(tmp_path / "c", tensors(0), META, name="teacher")
    shutil.copy(tmp_path / "c" / "teacher.json", tmp_path / "c" / "segmenter.json")
    shutil.copy(tmp_path / "c" / "teacher.safetensors", tmp_path / "c" / "segmenter.safetensors")
    with pytest.raises(CheckpointError, match="seals 'teacher.safetensors', not segmenter.safetensors"):
        load_checkpoint(tmp_path / "c", "segmenter")


class Payload:
    """Unpickling creates `target`: stands in for code an attacker would run."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_tensors_that_are_pickle_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned.txt"
    save_checkpoint(tmp_path, tensors(), META)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(tmp_path)
    # even with a seal forged to match, the file is read as safetensors (data), never unpickled
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["checkpoint"].update(bytes=weights.stat().st_size, sha256=sha256_file(weights))
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


# -- interrupted saves --------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def test_a_save_killed_after_the_tensors_is_never_trusted(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "old", tensors(0), {"epoch": 1})

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(checkpoints, "write_text", die)  # the JSON is written last: killed before it
    with pytest.raises(Killed):
        save_checkpoint(tmp_path / "old", tensors(1), {"epoch": 2})
    with pytest.raises(CheckpointError, match="does not match the checksum"):  # new tensors beside the old JSON
        load_checkpoint(tmp_path / "old")
    with pytest.raises(Killed):
        save_checkpoint(tmp_path / "new", tensors(1), {"epoch": 2})
    with pytest.raises(FileNotFoundError, match="model.json is missing"):  # a first save: tensors, no JSON
        load_checkpoint(tmp_path / "new")


def test_a_save_killed_while_writing_the_tensors_leaves_the_old_pair(tmp_path, monkeypatch):
    import safetensors.torch

    save_checkpoint(tmp_path, tensors(0), {"epoch": 1})

    def half_then_die(state, path, *args, **kwargs):
        Path(path).write_bytes(b"\x00" * 10)
        raise Killed

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_die)
    with pytest.raises(Killed):
        save_checkpoint(tmp_path, tensors(1), {"epoch": 2})
    got, meta = load_checkpoint(tmp_path)
    assert_same(got, tensors(0)) and meta == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]  # no temporary left


# -- folders written by older versions ----------------------------------------------------------------------


def make_legacy(directory: Path, name: str, legacy_meta: str) -> None:
    """Turn a checkpoint into what versions before the format wrote: the same tensors, the meta unsealed."""
    new = directory / f"{name}.json"
    raw = json.loads(new.read_text())
    raw.pop("checkpoint")
    new.unlink()
    (directory / legacy_meta).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def test_an_older_unsealed_pair_is_read_with_a_warning(tmp_path, caplog):
    save_checkpoint(tmp_path, tensors(), META)
    make_legacy(tmp_path, "model", "model_config.json")
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        load_checkpoint(tmp_path)  # not declared: not read
    with caplog.at_level(logging.WARNING, logger="wsl_bench.checkpoints"):
        got, meta = load_checkpoint(tmp_path, legacy_meta="model_config.json")
    assert_same(got, tensors()) and meta == META
    assert "model_config.json: read without a seal" in caplog.text
    # an older JSON under the current name (can.json, afloc.json) is read only when declared
    save_checkpoint(tmp_path / "can", tensors(), META, name="can")
    make_legacy(tmp_path / "can", "can", "can.json")
    with pytest.raises(CheckpointError, match="no 'checkpoint' seal"):
        load_checkpoint(tmp_path / "can", "can")
    assert load_checkpoint(tmp_path / "can", "can", legacy_meta="can.json")[1] == META


# (method, the name it now saves under, the JSON it wrote before the format)
LEGACY = [("gradcam", "model", "model_config.json"), ("rollout", "model", "model_config.json"),
          ("oracle-seg", "model", "oracle.json"), ("clarity", "model", "clarity_config.json"),
          ("can", "can", "can.json"), ("afloc", "afloc", "afloc.json")]
SMALL = {"clarity": {"arch": "t16-64-d3", "segcam_hidden": 16},
         "can": {"backbone_a": "resnet18", "backbone_b": "resnet10t", "channels_a": [8, 8, 16, 16],
                 "channels_b": [8, 8, 16, 16]},
         "afloc": {"backbone": "resnet18", "backbone_channels": [8, 8, 16, 16], "embed_dim": 16},
         "oracle-seg": {"widths": [8, 16], "stem_stride": 2}}


def untrained(name: str):
    torch.manual_seed(0)
    method = create_method(name, {**resolve_config(name, "quick"), **SMALL.get(name, {})})
    if name == "can":
        method.build()
    elif name == "afloc":
        method.build(16)
    return method


@pytest.mark.parametrize("name, ckpt, legacy", LEGACY)
def test_a_method_folder_written_before_the_format_still_loads(tmp_path, name, ckpt, legacy):
    method = untrained(name)
    method.save(tmp_path)
    make_legacy(tmp_path, ckpt, legacy)
    again = create_method(name, resolve_config(name, "quick"))
    again.load(tmp_path)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.predict(x), method.predict(x))


@pytest.mark.parametrize("module", ["clarity.dino", "clarity.teacher", "clarity.segmenter", "baselines._trainable"])
def test_a_shared_cache_written_before_the_format_is_rebuilt_with_a_log_line(tmp_path, caplog, module):
    """Cached stages and shared backbones are not read in their old layout: their seal does not cover the
    JSON, so the cache is removed (and trained again by its caller), never loaded."""
    import importlib

    from baselines._trainable import TrainedNetMethod
    from clarity.stages import DONE, is_done
    from wsl_bench import caches

    mod = importlib.import_module(module)
    cache = tmp_path / "cache"
    cache.mkdir()
    if module == "baselines._trainable":  # the old shared backbone: weights + model_config.json, sealed
        weights, meta, old = mod.WEIGHTS_FILE, mod.CONFIG_FILE, (mod.WEIGHTS_FILE, mod.LEGACY_CONFIG_FILE)
        usable = lambda: TrainedNetMethod._source_usable(cache, "auto")  # noqa: E731
    else:  # an old finished stage: done.json + bare weights, sealed
        weights, meta, old = mod.WEIGHTS, mod.META, (DONE, mod.WEIGHTS)
        usable = lambda: is_done(cache, weights, meta)  # noqa: E731
    save_file({"w": torch.ones(3)}, str(cache / weights))
    for name in old:
        if not (cache / name).exists():
            (cache / name).write_text("{}")
    caches.seal(cache, *old)
    with caplog.at_level(logging.WARNING, logger="wsl_bench.caches"):
        assert not usable()
    assert f"{meta} is not covered by checksums.json" in caplog.text and "rebuilt" in caplog.text
    assert not cache.exists()


# -- user-named weights files -------------------------------------------------------------------------------


def test_read_state_dict_reads_safetensors_and_torch_files(tmp_path):
    state = {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    save_file(state, str(tmp_path / "w.safetensors"))
    assert_same(read_state_dict(tmp_path / "w.safetensors"), state)
    torch.save({"teacher": {"state_dict": state}, "epoch": 3}, tmp_path / "w.pth")
    assert_same(read_state_dict(tmp_path / "w.pth", nested=("teacher", "state_dict", "model")), state)
    assert set(read_state_dict(tmp_path / "w.pth", nested=("model",))) == {"teacher", "epoch"}  # absent key: kept
    marker = tmp_path / "pwned.txt"
    torch.save({"state_dict": state, "extra": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


# -- every registered trainable method ----------------------------------------------------------------------

TRAINABLE = sorted(name for name, info in available_methods().items() if info.cls.trainable)
TINY_TRAINED = {"max_epochs": 1, "batch_size": 16, "explain_batch_size": 4}
# tiny sizes per class (the quick preset otherwise): seconds per fit on one CPU thread
TINY_BY_CLASS = {
    "ViTExplainer": {**TINY_TRAINED, "patch_size": 8, "reg_tokens": 1},
    "HybridExplainer": {**TINY_TRAINED, "cnn_stage": 2, "depth": 2},
    "Clarity": {"arch": "t16-64-d3", "segcam_hidden": 16, "epochs": 1, "batch_size": 16, "input_size": None,
                "teacher": "convnextv2_atto", "teacher_epochs": 1, "teacher_batch_size": 16, "teacher_input_size": 32,
                "dino_epochs": 1, "dino_batch_size": 16, "dino_local_crops": 2, "dino_local_size": 32,
                "dino_global_size": 64, "dino_out_dim": 64},
    "CAN": {**SMALL["can"], "max_epochs": 1, "batch_size": 16},
    "AFLoc": {**SMALL["afloc"], "input_size": None, "text_mode": "frozen", "max_epochs": 1, "batch_size": 16},
    "OracleSeg": {"widths": [8, 16, 32], "stem_stride": 2, "max_input_size": 64, "max_epochs": 1, "batch_size": 16},
    "TrainedNetMethod": TINY_TRAINED,
}
# what may sit beside a checkpoint: the training loop's resume state (Lightning; its logs in logs/), the run's
# record of the config that made the folder, and a shared cache's seal and completion mark (wsl_bench.caches)
OTHER_FILES = {"best.ckpt", "last.ckpt", "stage.json", "checksums.json", "done.json"}


def tiny_config(name: str) -> dict:
    cls = available_methods()[name].cls
    over = next((TINY_BY_CLASS[c.__name__] for c in cls.__mro__ if c.__name__ in TINY_BY_CLASS), {})
    return {**resolve_config(name, "quick"), **over}


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """Every trainable method fitted once on a tiny SynthCXR cohort into one run folder (shared caches
    included); {name: fitted method or the exception its fit raised}."""
    from wsl_bench.data.synth import SynthConfig, load_synth

    cohort = load_synth(SynthConfig(n_train=48, n_val=16, n_test=8, image_size=32, generate_size=64, seed=0))
    run = tmp_path_factory.mktemp("run")
    out: dict[str, object] = {}
    for name in TRAINABLE:
        method = create_method(name, tiny_config(name))
        ctx = FitContext(checkpoint_dir=run / "checkpoints" / name, run_dir=run, seed=0, image_size=32,
                         max_epochs=1, batch_size=16)
        try:
            method.fit(cohort.train, cohort.val, ctx)
            out[name] = method
        except Exception as exc:  # noqa: BLE001 - reported by that method's own test
            out[name] = exc
    return run, out, cohort.test.load_images(list(range(4)))


def checkpoint_pairs(directory: Path) -> list[str]:
    """The checkpoint names in `directory`, after checking that it holds nothing but sealed checkpoint pairs
    and `OTHER_FILES`."""
    files = {p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")}
    names = sorted(p[: -len(".safetensors")] for p in files if p.endswith(".safetensors"))
    pairs = {f"{n}.safetensors" for n in names} | {f"{n}.json" for n in names}
    assert files - pairs - OTHER_FILES == set(), f"{directory}: files outside the format"
    assert {p.name for p in directory.iterdir() if p.is_dir()} <= {"logs"}, directory
    for n in names:
        load_checkpoint(directory, n)  # sealed and matching
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINABLE)
def test_a_fit_writes_only_the_checkpoint_format(fitted_run, name):
    run, fitted, images = fitted_run
    method = fitted[name]
    if isinstance(method, Exception):
        raise method
    ckdir = run / "checkpoints" / name
    assert checkpoint_pairs(ckdir), f"{name} wrote no checkpoint"
    again = create_method(name, tiny_config(name))
    again.load(ckdir)
    assert torch.equal(again.predict(images), method.predict(images))
    net, loaded = getattr(method, "net", None), getattr(again, "net", None)
    if isinstance(net, torch.nn.Module) and isinstance(loaded, torch.nn.Module):
        assert_same(dict(loaded.state_dict()), dict(net.state_dict()))  # the trained weights, bit for bit


@pytest.mark.slow
def test_every_cache_in_the_run_folder_is_in_the_format(fitted_run):
    run, _, _ = fitted_run
    folders = {p.parent for p in run.rglob("*.safetensors") if "logs" not in p.parts}
    assert {f.parent.name for f in folders} >= {"checkpoints"}
    for folder in folders:
        checkpoint_pairs(folder)
    assert not [p for p in run.rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".pkl"}]
