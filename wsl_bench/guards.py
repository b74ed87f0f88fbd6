"""Guards a run folder needs against what a user or a crash can leave behind.

- `check_out_dir`: an output folder that is a file, sits under a file, or cannot be written is one clear
  error line before anything starts (every command that writes a folder calls it).
- `sanitize_manifest`: a `manifest.json` that parses but has the wrong shape (``[]``, ``null``,
  ``{"stages": "x"}``, a stage whose ``files`` is not a mapping, ...) is repaired to the parts that are well
  formed, with a warning; what is dropped is simply redone. It is never trusted as it stands.
- `sweep_temporaries`: the temporary files `wsl_bench.io.atomic_path` writes beside their targets
  (``.<name>.<random>.tmp``) that a killed process left behind are removed at the start of the next run
  (under the run lock, so no live writer owns them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_out_dir(path: str | os.PathLike, what: str = "--out", create: bool = True) -> Path:
    """Prove folder `path` can be made and written (creating it when `create`); else a ValueError naming it.

    With `create=False` nothing is made: the nearest existing folder above `path` must be writable, so a
    command whose other inputs turn out bad leaves no empty output folder behind."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise ValueError(f"{what} {path} {where}; give a folder path (a new one is created)")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probe_dir = next(p for p in [path, *path.parents] if p.exists()) if not create else path
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        if create:
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=path)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be written ({_describe(exc)}); choose a folder you can write to") from None
    return path


def check_out_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """An output file: not a folder, and its folder exists (or can be made) and is writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name, e.g. {path / 'out.png'}")
    check_out_dir(path.parent if str(path.parent) else Path("."), what=f"{what} {path}: the folder", create=False)
    return path


def sanitize_manifest(obj: Any, path: str | os.PathLike, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The well-formed part of a parsed manifest (see the module docstring); warns once about the rest."""
    dropped: list[str] = []
    if not isinstance(obj, dict):
        log(f"warning: {path} holds a JSON {type(obj).__name__}, not a manifest object; every stage will be redone")
        return {}
    out = dict(obj)
    stages = out.get("stages", {})
    if not isinstance(stages, dict):
        dropped.append("stages")
        stages = {}
    clean: dict[str, Any] = {}
    for name, entry in stages.items():
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(k, {}), dict) and all(isinstance(a, str) and isinstance(b, str) for a, b in entry.get(k, {}).items())
            for k in ("files", "caches")
        ) and isinstance(entry.get("key", ""), str)
        if ok:
            clean[str(name)] = entry
        else:
            dropped.append(f"stages.{name}")
    if "stages" in out or clean:
        out["stages"] = clean
    for key, kind in (("timings", dict), ("failures", dict), ("config_history", list)):
        if key in out and not isinstance(out[key], kind):
            dropped.append(key)
            out.pop(key)
    if isinstance(out.get("timings"), dict):
        for m in [m for m, t in out["timings"].items() if not isinstance(t, dict)]:
            dropped.append(f"timings.{m}")
            out["timings"].pop(m)
    if dropped:
        log(f"warning: {path}: malformed entries {', '.join(dropped)} ignored; the stages they described are redone")
    return out


RUN_SUBFOLDERS = ("data", "checkpoints", "heatmaps", "scores", "report", "shared", "sanity")


def sweep_temporaries(root: str | os.PathLike, log: Callable[[str], None] = print) -> list[Path]:
    """Remove `atomic_path` leftovers (``.<name>.*.tmp`` files and ``.<name>.tmp`` score folders) under `root`.

    Call it only while holding the folder's run lock: then no live process owns one of them."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    # the folder itself (config.yaml, manifest.json) and the sub-folders a run writes: never a walk of
    # whatever else `--out` may contain
    walks = [(str(root), [], [e.name for e in os.scandir(root) if e.is_file()])]
    for sub in RUN_SUBFOLDERS:
        if (root / sub).is_dir():
            walks.extend(os.walk(root / sub))
    for dirpath, dirnames, filenames in walks:
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                p = Path(dirpath) / name
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
        for name in list(dirnames):
            if name.startswith(".") and name.endswith(".tmp"):
                p = Path(dirpath) / name
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
                dirnames.remove(name)
    if removed:
        log(f"removed {len(removed)} temporary file(s) left by an interrupted run (e.g. {removed[0].relative_to(root)})")
    return removed
