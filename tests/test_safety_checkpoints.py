"""A checkpoint is data, never code: every loading path refuses a file carrying pickled code.

The payload is a torch checkpoint whose unpickling would create a marker file (`builtins.open`).
A positive control shows that plain `torch.load(..., weights_only=False)` WOULD run it; then each
loader in the project must raise and leave no marker. Loading paths (grep torch.load /
load_state_dict / safetensors / np.load in wsl_bench/, clarity/, baselines/):
  - wsl_bench.training.trainer.load_weights, ._usable_checkpoint (Lightning resume pre-check)
  - clarity.dino.load_dino_file, baselines._backbones.load_local_weights, baselines.afloc.load_backbone_weights
  - Method.load of safetensors-backed methods (clarity, baselines/_trainable, can, afloc)
  - np.load of user .npy/.npz files (clarity.priors.UserMasks; allow_pickle defaults to False)
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

MARKER = "pwned.txt"


class Payload:
    """Unpickling creates `target` (stands in for any code an attacker wants to run)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    state = {"state_dict": {"weight": torch.zeros(2)}, "extra": Payload(marker)}
    torch.save(state, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / MARKER
    return malicious_checkpoint(tmp_path / "evil.pth", marker), marker


def test_payload_really_is_code(tmp_path):
    marker = tmp_path / "control.txt"
    path = malicious_checkpoint(tmp_path / "control.pth", marker)
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.exists()


def assert_refused(call, marker: Path):
    """The load raises one of the refusal types (torch weights_only, safetensors, numpy) and runs nothing."""
    from safetensors import SafetensorError

    with pytest.raises((pickle.UnpicklingError, SafetensorError, ValueError)):
        call()
    assert not marker.exists(), "pickled code ran"


def test_training_load_weights_refuses(evil):
    from wsl_bench.training.trainer import load_weights

    path, marker = evil
    assert_refused(lambda: load_weights(torch.nn.Linear(2, 1), path), marker)


def test_resume_checkpoint_is_moved_aside_not_run(evil):
    from wsl_bench.training.trainer import _usable_checkpoint

    path, marker = evil
    last = path.with_name("last.ckpt")
    path.rename(last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _usable_checkpoint(last) is False
    assert not marker.exists() and not last.exists() and last.with_name("last.ckpt.corrupt").exists()


def test_clarity_dino_file_refuses(evil):
    from clarity.dino import load_dino_file

    path, marker = evil
    assert_refused(lambda: load_dino_file(path), marker)


def test_timm_local_weights_refuse(evil):
    from baselines._backbones import load_local_weights

    path, marker = evil
    assert_refused(lambda: load_local_weights(torch.nn.Linear(2, 1), path), marker)


def test_afloc_backbone_weights_refuse(evil):
    from baselines.afloc import load_backbone_weights

    path, marker = evil
    assert_refused(lambda: load_backbone_weights(torch.nn.Linear(2, 1), path), marker)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    from safetensors.torch import load_file

    marker = tmp_path / MARKER
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(pickle.dumps(Payload(marker)))
    assert_refused(lambda: load_file(str(fake)), marker)
    malicious_checkpoint(fake, marker)  # a torch zip checkpoint renamed .safetensors
    assert_refused(lambda: load_file(str(fake)), marker)


@pytest.mark.parametrize("name", ["gradcam", "rollout", "clarity"])
def test_method_load_refuses_swapped_weights(tmp_path, name):
    from wsl_bench.methods import create_method, load_entry_points

    load_entry_points()
    torch.manual_seed(0)
    method = create_method(name, preset="quick")
    ckpt = tmp_path / "ckpt"
    method.save(ckpt)
    weights = sorted(ckpt.glob("*.safetensors"))
    assert weights, f"{name} saved no safetensors file"
    marker = tmp_path / MARKER
    for w in weights:
        malicious_checkpoint(w, marker)
    assert_refused(lambda: create_method(name, preset="quick").load(ckpt), marker)


def test_numpy_object_arrays_are_refused(tmp_path):
    from clarity.priors import UserMasks

    marker = tmp_path / MARKER
    arr = np.empty((2, 2), dtype=object)
    arr[0, 0] = Payload(marker)
    np.save(tmp_path / "atlas.npy", arr, allow_pickle=True)
    assert_refused(lambda: UserMasks(tmp_path / "atlas.npy"), marker)
    np.savez(tmp_path / "masks.npz", a=arr)
    assert_refused(lambda: UserMasks(tmp_path / "masks.npz"), marker)
