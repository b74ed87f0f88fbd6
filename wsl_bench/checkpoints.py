"""The one checkpoint format: ``<name>.safetensors`` (tensors) beside ``<name>.json`` (what rebuilds them).

Every trained artefact wsl-bench writes (a method's `save`, CLARiTy's cached stages, the shared backbones) is a
pair written by `save_checkpoint` and read by `load_checkpoint`. The tensors are written first and the JSON
last; the JSON carries a seal (``"checkpoint"``: format, tensor file, its size and sha256), so a pair whose
save was interrupted (new tensors beside an older JSON, or tensors with no JSON yet) is refused on load,
never trusted. Safetensors hold data only, so loading a checkpoint never runs code.

Files a user names as pretrained inputs are not checkpoints: `read_state_dict` reads those (safetensors, or a
torch file with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from wsl_bench.io import atomic_path, sha256_file, write_text

FORMAT = "wsl-bench-checkpoint/1"
SEAL_KEY = "checkpoint"  # the JSON key holding the seal; the rest of the JSON is the caller's meta
DEFAULT_FIX = "delete the folder and fit the method again"

log = logging.getLogger("wsl_bench.checkpoints")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names the file and what to do."""


def checkpoint_files(directory: str | os.PathLike, name: str = "model") -> tuple[Path, Path]:
    """The (tensors, JSON) paths of checkpoint `name` in `directory`."""
    directory = Path(directory)
    return directory / f"{name}.safetensors", directory / f"{name}.json"


def save_checkpoint(directory: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    name: str = "model") -> Path:
    """Write `tensors` and `meta` as ``<name>.safetensors`` + ``<name>.json`` in `directory`; returns the JSON path.

    `meta` must be a JSON object without the reserved key ``"checkpoint"``. Each file is written atomically,
    the JSON last, sealed with the tensor file's sha256.
    """
    from safetensors.torch import save_file

    if not isinstance(meta, Mapping):
        raise TypeError(f"checkpoint meta must be a dict (a JSON object), got {type(meta).__name__}")
    if SEAL_KEY in meta:
        raise ValueError(f"checkpoint meta may not use the key {SEAL_KEY!r}: the checkpoint's seal lives there")
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"checkpoint tensors must be torch tensors; not tensors: {sorted(map(str, bad))[:5]}")
    weights, meta_path = checkpoint_files(directory, name)
    _json_text(meta, {})  # refuse meta that is not JSON before anything is written
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
        seal = {"format": FORMAT, "tensors": weights.name, "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}
    write_text(meta_path, _json_text(meta, seal))
    return meta_path


def read_meta(directory: str | os.PathLike, name: str = "model", *, kind: str = "a wsl-bench checkpoint",
              fix: str = DEFAULT_FIX, legacy_meta: str | None = None) -> dict[str, Any]:
    """The meta of checkpoint `name` (its JSON without the seal), without reading the tensors."""
    return _read_json(Path(directory), name, kind, fix, legacy_meta)[0]


def load_checkpoint(directory: str | os.PathLike, name: str = "model", *, kind: str = "a wsl-bench checkpoint",
                    fix: str = DEFAULT_FIX, legacy_meta: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors on the CPU, meta) of checkpoint `name` in `directory`, after checking the pair belongs together.

    Raises FileNotFoundError when a file is missing and `CheckpointError` (a ValueError) for anything else
    wrong; each message names the file and ends with `fix`. `kind` says what the folder should be ("a CAN
    checkpoint"). `legacy_meta` names the JSON an older wsl-bench wrote beside ``<name>.safetensors``
    (unsealed): such a folder is read as it is, with a warning.

    The tensors may be memory-mapped from the file: copy them (`.clone()`) before the file may be overwritten
    in place.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    weights = checkpoint_files(directory, name)[0]
    meta, seal, meta_path = _read_json(directory, name, kind, fix, legacy_meta)
    if seal is not None:
        _check_seal(weights, seal, meta_path, fix)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({_first_line(exc)}); {fix}") from None
    return tensors, meta


def read_state_dict(path: str | os.PathLike, nested: tuple[str, ...] = ()) -> Any:
    """A user-named weights file: ``.safetensors``, or any other suffix as a torch file read with
    ``weights_only=True`` (data only). `nested` keys are unwrapped in order where they hold a dict
    (e.g. ``("state_dict", "model")`` for training checkpoints)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in nested:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


# -- internals ---------------------------------------------------------------------------------------------


def _json_text(meta: Mapping[str, Any], seal: dict[str, Any]) -> str:
    """Deterministic JSON (sorted keys, fixed indent, as `wsl_bench.io.write_json`): equal saves, equal bytes."""
    return json.dumps({**meta, SEAL_KEY: seal}, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_json(directory: Path, name: str, kind: str, fix: str,
               legacy_meta: str | None) -> tuple[dict[str, Any], dict[str, Any] | None, Path]:
    """(meta, seal or None for a legacy pair, the JSON path read)."""
    weights, meta_path = checkpoint_files(directory, name)
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} is not {kind}: {weights.name} is missing; {fix}")
    legacy = directory / legacy_meta if legacy_meta else None
    path = meta_path if meta_path.is_file() or legacy is None or not legacy.is_file() else legacy
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not {kind}: {meta_path.name} is missing (a save that was "
                                f"interrupted leaves the tensors without it); {fix}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({_first_line(exc)}); {fix}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a JSON {type(raw).__name__}, not an object; it is not {kind}; {fix}")
    seal = raw.pop(SEAL_KEY, None)
    if seal is None:
        if legacy is not None and path == legacy:
            log.warning("%s: read without a seal (written by an older wsl-bench); fitting the method again "
                        "rewrites it in the current format", path)
            return raw, None, path
        raise CheckpointError(f"{path} has no {SEAL_KEY!r} seal, so it was not written by save_checkpoint "
                              f"and is not {kind}; {fix}")
    if not isinstance(seal, dict) or seal.get("format") != FORMAT:
        got = seal.get("format") if isinstance(seal, dict) else seal
        raise CheckpointError(f"{path}: checkpoint format {got!r} is not {FORMAT!r} (another wsl-bench version?); {fix}")
    return raw, seal, path


def _check_seal(weights: Path, seal: dict[str, Any], meta_path: Path, fix: str) -> None:
    """The tensors file is the one the JSON was written for (name, size, sha256)."""
    if seal.get("tensors") != weights.name:
        raise CheckpointError(f"{meta_path} seals {seal.get('tensors')!r}, not {weights.name}; the pair is "
                              f"mismatched; {fix}")
    if weights.stat().st_size != seal.get("bytes") or sha256_file(weights) != seal.get("sha256"):
        raise CheckpointError(f"{weights} does not match the checksum sealed in {meta_path.name} (a save was "
                              f"interrupted, or the file changed since); {fix}")
