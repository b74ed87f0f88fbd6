"""Shared caches in a run folder, sealed with checksums and verified before they are trusted.

Some trained artefacts are shared between methods instead of living in one method's `checkpoints/<m>/`:
the baselines' backbones (`shared/backbones/<arch>-<key>/`, `baselines/_trainable.py`) and CLARiTy's DINO
backbone, ConvNeXtV2 teacher, its logits table and the lung segmenter (`checkpoints/<stage>-<key>/`,
`clarity/stages.py`). Each is written, then *sealed*: `checksums.json` beside it records the sha256 of every
file a later fit trusts. Before a cache is used:

- its files are compared with the seal; a cache whose seal is missing (an older wsl-bench, or a kill between
  the write and the seal) or does not match is logged, removed and rebuilt, never loaded;
- the fit that used it records those files and checksums in `manifest.json` (`stages.fit/<m>.caches`), and
  `Run.is_done` checks them like the fit's own files, so damaging a cache later makes every fit that
  trusted it redo itself (and rebuild the cache) on the next run.

`record_use(ctx, directory, *names)` is how a method tells the harness which cache files it trusted.
`building(directory, ctx)` is held while a cache is checked, built and sealed, so that fits running at once
(`--fit-jobs`) build a shared cache once: the others wait for it, then find it sealed and load it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from wsl_bench.io import sha256_file, write_json

SEAL = "checksums.json"
log = logging.getLogger("wsl_bench.caches")


def _rank_zero() -> bool:
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def read_seal(directory: str | os.PathLike) -> dict[str, str] | None:
    """name -> sha256 from `directory/checksums.json`, or None when it is missing or not a valid seal."""
    path = Path(directory) / SEAL
    try:
        seal = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    files = seal.get("files") if isinstance(seal, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return files


def seal(directory: str | os.PathLike, *names: str) -> dict[str, str]:
    """Add the sha256 of each named file of `directory` to its seal (written atomically); returns the seal."""
    directory = Path(directory)
    files = dict(read_seal(directory) or {})
    for name in names:
        files[name] = sha256_file(directory / name)
    write_json(directory / SEAL, {"files": files})
    return files


def problem(directory: str | os.PathLike, *names: str) -> str | None:
    """None when every named file exists and matches its sealed checksum; else what is wrong, naming the file."""
    directory = Path(directory)
    files = read_seal(directory)
    if files is None:
        return f"{directory / SEAL} is missing or unreadable (made by an older wsl-bench, or a write was killed)"
    for name in names:
        path = directory / name
        if name not in files:
            return f"{path} is not covered by {SEAL}"
        if not path.is_file():
            return f"{path} is missing"
        if sha256_file(path) != files[name]:
            return f"{path} does not match its checksum in {SEAL}"
    return None


def usable(directory: str | os.PathLike, *names: str, remove: str = "directory") -> bool:
    """True when `directory` exists and its named files match their seal.

    Otherwise False, after logging why and removing what failed (`remove="directory"`: the whole cache, so
    it is rebuilt from scratch and no half-trusted checkpoint in it is resumed; `"files"`: only the named
    files, for a table cached beside a good model). Only the first DDP rank removes anything.
    """
    directory = Path(directory)
    if not directory.exists():
        return False
    why = problem(directory, *names)
    if why is None:
        return True
    log.warning("cache %s: %s; it is rebuilt", directory.name, why)
    if _rank_zero():
        if remove == "directory":
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for name in names:
                (directory / name).unlink(missing_ok=True)
    return False


@contextlib.contextmanager
def building(directory: str | os.PathLike, ctx: Any = None) -> Iterator[None]:
    """An exclusive lock (flock on `.<name>.lock` beside the cache) for checking, building and sealing a cache.

    Not taken in a multi-process (DDP) fit, whose ranks build the cache together and would wait on each other."""
    if ctx is not None and _multi_process(ctx):
        yield
        return
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _multi_process(ctx: Any) -> bool:
    devices = getattr(ctx, "devices", 1)
    return str(devices) not in ("1", "[0]") or int(getattr(ctx, "num_nodes", 1) or 1) > 1


def record_use(ctx: Any, directory: str | os.PathLike, *names: str) -> None:
    """Tell the harness that this fit trusted these cache files (they go into the manifest's checksums)."""
    extra = getattr(ctx, "extra", None)
    if isinstance(extra, dict):
        used = extra.setdefault("cache_files", [])
        for name in names:
            path = str(Path(directory) / name)
            if path not in used:
                used.append(path)


def manifest_entries(extra: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, str]:
    """{path relative to the run folder: sha256} of every cache file a fit recorded with `record_use`."""
    run_dir = Path(run_dir).resolve()
    out: dict[str, str] = {}
    for raw in extra.get("cache_files", []) or []:
        path = Path(raw)
        if not path.is_file():
            continue
        try:
            rel = path.resolve().relative_to(run_dir).as_posix()
        except ValueError:  # a cache outside the run folder (no run_dir given): not the manifest's to check
            continue
        out[rel] = sha256_file(path)
    return dict(sorted(out.items()))
