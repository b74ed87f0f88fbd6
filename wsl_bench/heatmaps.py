"""Heatmap bundles: one `.npz` of 2-D float maps keyed ``"<image id>::<finding label>"``.

The bundle is the hand-off between methods and the scorer, and the input of ``wsl-bench score``,
so maps made by any other tool can be scored. Maps are read lazily (one array at a time) so a
bundle of full-resolution maps never has to fit in memory, and every map is checked on access:
a non-2-D array or a NaN/inf value is a ``ValueError`` that names the key.
"""

from __future__ import annotations

import json
import os
import tokenize
import weakref
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from wsl_bench.images import DEFAULT_MAX_PIXELS, check_pixels, max_pixels
from wsl_bench.io import atomic_path
from wsl_bench.labels import finding_to_box

KEY_SEP = "::"
# Reserved entry holding the image sizes as JSON; map keys never start with "__".
_SIZES_ENTRY = "__image_sizes__"
# Read limits: a map or image size over `wsl_bench.images.max_pixels()` (4096 x 4096 unless
# $WSL_BENCH_MAX_PIXELS says otherwise), or an image-size table over 32 MiB, is refused before any memory
# is allocated for it (a header can claim any shape). MAX_MAP_PIXELS is the default limit.
MAX_MAP_PIXELS = DEFAULT_MAX_PIXELS
MAX_SIZES_BYTES = 32 << 20


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
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"image size for {key!r} must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image size for {key!r} must be positive, got {(h, w)}")
    return check_pixels(h, w, f"image size for {key!r}")


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


def _reopen_in_child(ref) -> None:
    bundle = ref()
    if bundle is not None and getattr(bundle, "_zip", None) is not None:
        try:
            bundle._zip = zipfile.ZipFile(bundle.path)
        except (OSError, zipfile.BadZipFile):
            pass  # the parent's handle stays; reading then fails with the bundle's own error


class HeatmapBundle(Mapping):
    """A read-only mapping key -> float32 2-D map, loaded lazily, plus `image_sizes` (id -> (h, w)).

    The .npz is read with `zipfile` and each member's .npy header is checked before its data is
    touched: object (pickled) arrays, non-numeric dtypes, arrays that are not 2-D and headers claiming
    more data than the member holds (or more than `MAX_MAP_PIXELS`) are a ValueError naming the file
    and key, so no file can run code, exhaust memory or crash the reader with a stray exception.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"heatmap bundle {self.path} does not exist")
        try:
            self._zip = zipfile.ZipFile(self.path)
            names = self._zip.namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ValueError(f"{self.path} is not a readable .npz heatmap bundle ({exc})") from None
        # A forked process (the scorer's workers) must not share this file's offset with its parent.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reopen_in_child(ref))
        self._members: dict[str, str] = {}
        for name in names:
            if not name.endswith(".npy"):
                self.close()
                raise ValueError(
                    f"{self.path}: entry {name!r} is not a .npy array; a heatmap bundle holds only arrays "
                    f"keyed '<image id>{KEY_SEP}<finding label>' (write it with np.savez or write_bundle)"
                )
            self._members[name[: -len(".npy")]] = name
        self._keys = [k for k in self._members if not k.startswith("__")]
        self._keyset = set(self._keys)
        for key in self._keys:
            try:
                split_key(key)
            except ValueError as exc:
                self.close()
                raise ValueError(f"{self.path}: {exc}") from None
        self.image_sizes: dict[str, tuple[int, int]] = {}
        if _SIZES_ENTRY in self._members:
            self.image_sizes = self._read_sizes()

    def _read_array(self, key: str, *, kinds: str, ndim: int, max_bytes: int, max_items: int | None = None) -> np.ndarray:
        """The array stored under `key`, after checking its header; any failure names file and key."""
        where = f"{self.path}: entry {key!r}"
        try:
            info = self._zip.getinfo(self._members[key])
            with self._zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                if dtype.hasobject:
                    raise ValueError("holds Python objects (pickled data), which are never loaded")
                if dtype.kind not in kinds or dtype.names is not None or dtype.subdtype is not None:
                    raise ValueError(f"has dtype {dtype}, expected numbers")
                if len(shape) != ndim:
                    raise ValueError(f"expected a {ndim}-D array, got shape {tuple(shape)}")
                n_items = int(np.prod(shape, dtype=object))
                if max_items is not None and n_items > max_items:
                    raise ValueError(f"shape {tuple(shape)} is larger than the limit of {max_items} pixels "
                                     "($WSL_BENCH_MAX_PIXELS raises it)")
                nbytes = n_items * dtype.itemsize
                if nbytes > max_bytes:
                    raise ValueError(f"shape {tuple(shape)} is larger than the limit of {max_bytes} bytes")
                if info.file_size - fh.tell() < nbytes:
                    raise ValueError(f"header claims shape {tuple(shape)} but the entry holds fewer bytes (truncated?)")
                data = bytearray(fh.read(nbytes))
            if len(data) != nbytes:
                raise ValueError("entry is truncated")
            return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, RuntimeError,
                NotImplementedError, OverflowError, TypeError, SyntaxError, tokenize.TokenError) as exc:
            raise ValueError(f"{where}: {exc}; rewrite the bundle with write_bundle or np.savez") from None

    def _read_sizes(self) -> dict[str, tuple[int, int]]:
        raw = self._read_array(_SIZES_ENTRY, kinds="U", ndim=0, max_bytes=MAX_SIZES_BYTES)
        try:
            sizes = json.loads(str(raw[()]))
        except ValueError as exc:
            raise ValueError(f"{self.path}: entry {_SIZES_ENTRY!r} is not valid JSON ({exc})") from None
        if not isinstance(sizes, dict):
            raise ValueError(f"{self.path}: entry {_SIZES_ENTRY!r} must be a JSON object id -> [h, w]")
        try:
            return {str(k): _check_size(k, v) for k, v in sizes.items()}
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keyset:
            raise KeyError(key)
        limit = max_pixels()
        arr = self._read_array(key, kinds="biuf", ndim=2, max_bytes=limit * 8, max_items=limit)
        if arr.size > limit:
            raise ValueError(f"{self.path}: heatmap {key!r} has {arr.size} pixels (limit {limit}; "
                             "$WSL_BENCH_MAX_PIXELS raises it)")
        try:
            return check_map(key, arr)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None

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
        self._zip.close()

    def __enter__(self) -> "HeatmapBundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_bundle(path: str | os.PathLike) -> HeatmapBundle:
    """Open a bundle written by `write_bundle` (or any .npz with ``id::label`` keys)."""
    return HeatmapBundle(path)
