"""Heatmap bundles: one `.npz` of 2-D float maps keyed ``"<image id>::<finding label>"``.

The bundle is the hand-off between methods and the scorer, and the input of ``wsl-bench score``,
so maps made by any other tool can be scored. Maps are read lazily (one array at a time) so a
bundle of full-resolution maps never has to fit in memory, and every map is checked on access:
a non-2-D array or a NaN/inf value is a ``ValueError`` that names the key.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from wsl_bench.io import atomic_path
from wsl_bench.labels import finding_to_box

KEY_SEP = "::"
# Reserved entry holding the image sizes as JSON; map keys never start with "__".
_SIZES_ENTRY = "__image_sizes__"


def bundle_key(image_id: str, label: str) -> str:
    """The bundle key of one map: ``"<image id>::<label>"`` with box findings in box-file spelling."""
    image_id, label = str(image_id), str(label)
    if KEY_SEP in image_id or not image_id:
        raise ValueError(f"image id {image_id!r} must be non-empty and must not contain {KEY_SEP!r}")
    if not label:
        raise ValueError(f"empty finding label for image {image_id!r}")
    return f"{image_id}{KEY_SEP}{finding_to_box(label)}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of `bundle_key`: ``"img.png::Mass"`` -> ``("img.png", "Mass")``."""
    image_id, sep, label = str(key).rpartition(KEY_SEP)
    if not sep or not image_id or not label:
        raise ValueError(f"heatmap key {key!r} is not of the form '<image id>{KEY_SEP}<finding label>'")
    return image_id, finding_to_box(label)


def check_map(key: str, arr) -> np.ndarray:
    """Return `arr` as a float32 2-D array, or raise a ValueError naming `key`."""
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"heatmap {key!r}: expected a 2-D array, got shape {tuple(a.shape)}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"heatmap {key!r}: empty array of shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ValueError(f"heatmap {key!r}: expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        n_bad = int((~np.isfinite(a)).sum())
        raise ValueError(
            f"heatmap {key!r}: {n_bad} NaN/inf value(s); replace them (e.g. np.nan_to_num) before scoring"
        )
    return a


def _check_size(key: str, size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"image size for {key!r} must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image size for {key!r} must be positive, got {(h, w)}")
    return h, w


def write_bundle(
    path: str | os.PathLike,
    maps: Mapping[str, np.ndarray],
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> Path:
    """Write `maps` (key -> 2-D array) and optional image sizes (image id -> (h, w)) atomically."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for key, arr in maps.items():
        split_key(key)
        if key.startswith("__"):
            raise ValueError(f"heatmap key {key!r}: keys starting with '__' are reserved")
        arrays[key] = check_map(key, arr)
    if image_sizes:
        sizes = {str(k): list(_check_size(k, v)) for k, v in image_sizes.items()}
        arrays[_SIZES_ENTRY] = np.array(json.dumps(sizes, sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


class HeatmapBundle(Mapping):
    """A read-only mapping key -> float32 2-D map, loaded lazily, plus `image_sizes` (id -> (h, w))."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"heatmap bundle {self.path} does not exist")
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise ValueError(f"{self.path} is not a readable .npz heatmap bundle ({exc})") from None
        names = list(self._npz.files)
        self._keys = [k for k in names if not k.startswith("__")]
        self._keyset = set(self._keys)
        for key in self._keys:
            split_key(key)
        self.image_sizes: dict[str, tuple[int, int]] = {}
        if _SIZES_ENTRY in names:
            raw = json.loads(str(self._npz[_SIZES_ENTRY]))
            self.image_sizes = {k: _check_size(k, v) for k, v in raw.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keyset:
            raise KeyError(key)
        return check_map(key, self._npz[key])

    def __contains__(self, key: object) -> bool:
        return key in self._keyset

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def validate(self) -> None:
        """Check every map now (reads each once); raises on the first bad key."""
        for key in self._keys:
            self[key]

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> "HeatmapBundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_bundle(path: str | os.PathLike) -> HeatmapBundle:
    """Open a bundle written by `write_bundle` (or any .npz with ``id::label`` keys)."""
    return HeatmapBundle(path)
