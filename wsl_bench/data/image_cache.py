"""A one-time resized image cache: one uint8 `.npy` file per split and size, memory-mapped.

Decoding a 1024² PNG and resizing it costs milliseconds of CPU per image; reading the same image at
224 or 512 px from a memory-mapped file costs microseconds. `open_or_build(path, files, size)` returns
an array [N, size, size] uint8 whose row i is exactly `wsl_bench.images.read_grey(files[i], size)` (the
suite's one image reader; the cache holds what the uncached loader returns, byte for byte):

- **Built once, with every core.** The file is allocated in full first (`posix_fallocate`, so a full disk
  is an error before any pixel is written, never a SIGBUS in the middle), then filled by a process pool
  (forked workers that use only numpy, PIL and the file) that decodes chunks of images and writes their
  rows with `pwrite`; a tqdm bar counts images. It is written under a temporary name, renamed into place.
- **Checksummed.** A sidecar `<name>.json` records the cache version, the size, the shape, the source
  fingerprint (every source file's path, byte size and mtime, and the reader: `wsl_bench/images.py` and
  the Pillow version) and the sha256 of every 64 MiB chunk of the cache file. Opening re-hashes the file
  (threads; hashlib releases the GIL) and compares everything; any mismatch (a changed or added source
  image, another size, a changed reader, a damaged or truncated cache, a missing sidecar) rebuilds it.
- **Refused when the disk lacks room.** Before allocating, `shutil.disk_usage` of the folder is compared
  with the bytes the file needs; too few is one `ImageCacheError` line naming the folder, the bytes needed
  and free, and where to put the cache instead.
- **Safe with several processes.** Checks hold a shared `flock` on `.<name>.lock` and a build an exclusive
  one, so DDP ranks that open the same cache verify it side by side, build it once, and the others wait,
  then verify it. A rebuild renames a new file into place, so a process still mapping the old one keeps
  reading the old, consistent pixels.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from wsl_bench.io import write_json

CACHE_VERSION = 1
CHUNK_BYTES = 64 << 20  # checksum unit: 64 MiB
log = logging.getLogger("wsl_bench.data.image_cache")


class ImageCacheError(ValueError):
    """The cache cannot be written (no room, folder not writable); the message names the folder and the fix."""


def default_folder() -> Path:
    """`$WSL_BENCH_CACHE/images` (default `~/.cache/wsl-bench/images`)."""
    from wsl_bench.data.assets import default_cache_dir

    return default_cache_dir() / "images"


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def reader_fingerprint() -> str:
    """What makes the reader's pixels: the reader's source and the Pillow version (resampling may change)."""
    import PIL

    import wsl_bench.images as images

    h = hashlib.sha256(Path(images.__file__).read_bytes())
    h.update(f"|pillow={PIL.__version__}|numpy-u8".encode())
    return h.hexdigest()


def source_fingerprint(files: Sequence[str | os.PathLike]) -> dict:
    """The source as the cache saw it: file count and a digest of (path, bytes, mtime_ns) of every file, in order."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"n": len(files), "files": h.hexdigest(), "reader": reader_fingerprint()}


def nbytes_needed(n: int, size: int) -> int:
    """Bytes of the `.npy` file holding n images of size x size uint8 (header included)."""
    return _header_len((n, size, size)) + n * size * size


def _header_len(shape: tuple[int, ...]) -> int:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.tell()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)  # pragma: no cover


# ---------------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------------


def _hash_range(path: str, start: int, length: int) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < length:
            block = os.pread(fd, min(8 << 20, length - done), start + done)
            if not block:
                break
            h.update(block)
            done += len(block)
    finally:
        os.close(fd)
    return h.hexdigest()


def chunk_digests(path: str | os.PathLike, workers: int | None = None) -> list[str]:
    """sha256 of each CHUNK_BYTES piece of the file, hashed by threads (hashlib and pread release the GIL)."""
    path = os.fspath(path)
    total = os.path.getsize(path)
    starts = list(range(0, total, CHUNK_BYTES)) or [0]
    with cf.ThreadPoolExecutor(max_workers=max(1, min(workers or cpu_count(), len(starts)))) as pool:
        return list(pool.map(lambda s: _hash_range(path, s, min(CHUNK_BYTES, total - s)), starts))


def combined_digest(chunks: list[str]) -> str:
    return hashlib.sha256("".join(chunks).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# verify / open
# ---------------------------------------------------------------------------------------------------


def problem(path: str | os.PathLike, files: Sequence[str | os.PathLike], size: int, source: dict | None = None) -> str | None:
    """None when `path` is a complete, undamaged cache of `files` at `size`; else what is wrong."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        return f"{path} does not exist"
    try:
        meta = json.loads(side.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        return f"{side} is missing or unreadable ({type(exc).__name__})"
    shape = [len(files), int(size), int(size)]
    if meta.get("version") != CACHE_VERSION:
        return f"{side}: cache version {meta.get('version')!r}, this wsl-bench writes {CACHE_VERSION}"
    if meta.get("size") != int(size) or meta.get("shape") != shape:
        return f"{side}: made for shape {meta.get('shape')}, wanted {shape}"
    if meta.get("source") != (source or source_fingerprint(files)):
        return f"{side}: the source images (or the image reader) changed since the cache was made"
    if path.stat().st_size != nbytes_needed(len(files), size):
        return f"{path} has {path.stat().st_size} bytes, expected {nbytes_needed(len(files), size)}"
    sums = meta.get("checksum", {})
    if sums.get("chunk_bytes") != CHUNK_BYTES or not isinstance(sums.get("chunks"), list):
        return f"{side}: no usable checksum"
    got = chunk_digests(path)
    if got != sums["chunks"] or combined_digest(got) != sums.get("sha256"):
        bad = next((i for i, (a, b) in enumerate(zip(got, sums["chunks"])) if a != b), len(got))
        return f"{path} does not match its checksum in {side.name} (first bad chunk: bytes {bad * CHUNK_BYTES:,}…)"
    return None


def open_cache(path: str | os.PathLike) -> np.memmap:
    """The cache file as a read-only memory map [N, S, S] uint8 (no checks: `open_or_build` verifies)."""
    arr = np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ImageCacheError(f"{path}: not an image cache (dtype {arr.dtype}, shape {arr.shape})")
    return arr


@contextlib.contextmanager
def _locked(path: Path, shared: bool = False) -> Iterator[None]:
    import fcntl

    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", delete=True)
        probe.close()
    except OSError as exc:
        raise ImageCacheError(
            f"image cache folder {folder} cannot be written ({exc.strerror or exc}); put the cache elsewhere with "
            "--set data.cache_dir=DIR (load_nih(cache_dir=...)) or turn it off with --set data.cache=false"
        ) from None


def check_room(folder: Path, needed: int, what: str = "") -> None:
    """An ImageCacheError naming the folder, the bytes needed and free, unless `needed` bytes fit in `folder`."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise _no_room(folder, needed, free, what)


def _no_room(folder: Path, needed: int, free: int, what: str) -> ImageCacheError:
    return ImageCacheError(
        f"image cache {folder}: {what}needs {needed:,} bytes ({_human(needed)}) but only {free:,} bytes "
        f"({_human(free)}) are free; free some space, put the cache elsewhere with --set data.cache_dir=DIR "
        "(load_nih(cache_dir=...)), or turn it off with --set data.cache=false"
    )


def open_or_build(
    path: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    size: int,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    desc: str | None = None,
) -> np.memmap:
    """The verified cache of `files` read by `read_grey(f, size)`, building (or rebuilding) it when needed.

    `workers` processes decode (default: every core this process may use); `progress` shows a tqdm bar
    (None: only on a terminal). Decode errors are `wsl_bench.images.ImageError` naming the file."""
    path = Path(path)
    _make_folder(path.parent)
    size = int(size)
    source = source_fingerprint(files)
    with _locked(path, shared=True):  # processes that only verify (DDP ranks) do so side by side
        if problem(path, files, size, source) is None:
            return open_cache(path)
    with _locked(path):  # one builds; the others wait here, then find it valid
        why = problem(path, files, size, source)
        if why is None:
            return open_cache(path)
        if path.exists() or sidecar_path(path).exists():
            log.warning("image cache %s is rebuilt: %s", path, why)
        build(path, files, size, source=source, workers=workers, progress=progress, desc=desc)
        return open_cache(path)


# ---------------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------------


def _fill(tmp: str, offset: int, start: int, files: list[str], size: int) -> int:
    """Worker: decode `files` with the one reader and write rows start… of the cache file; returns the count."""
    from wsl_bench.images import read_grey

    fd = os.open(tmp, os.O_WRONLY)
    try:
        for k, f in enumerate(files):
            row = np.ascontiguousarray(read_grey(f, size), dtype=np.uint8)
            if row.shape != (size, size):  # pragma: no cover - read_grey resizes to size x size
                raise ValueError(f"{f}: reader returned shape {row.shape}, expected {(size, size)}")
            os.pwrite(fd, row.tobytes(), offset + (start + k) * size * size)
    finally:
        os.close(fd)
    return len(files)


def build(
    path: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    size: int,
    *,
    source: dict | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    desc: str | None = None,
) -> None:
    """Write the cache file and its sidecar (see the module docstring); callers normally use `open_or_build`."""
    from tqdm.auto import tqdm

    path = Path(path)
    folder = path.parent
    _make_folder(folder)
    files = [os.fspath(f) for f in files]
    n, size = len(files), int(size)
    source = source or source_fingerprint(files)
    needed = nbytes_needed(n, size)
    check_room(folder, needed, f"{n:,} images at {size}x{size} px ")
    side = sidecar_path(path)
    side.unlink(missing_ok=True)  # a kill from here on leaves no sidecar: the next open rebuilds
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        header = _header_len((n, size, size))
        with os.fdopen(fd, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (n, size, size)})
            fh.flush()
            try:
                os.posix_fallocate(fh.fileno(), 0, needed)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the space went between the check and now
                    raise _no_room(folder, needed, shutil.disk_usage(folder).free, f"{n:,} images at {size}x{size} px ") from None
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without fallocate: plain file
                    raise
                fh.truncate(needed)
        workers = max(1, min(workers or cpu_count(), n or 1))
        per_task = max(1, min(64, math.ceil(n / (workers * 8)) if n else 1))
        tasks = [(start, files[start : start + per_task]) for start in range(0, n, per_task)]
        bar = tqdm(total=n, desc=desc or f"caching {path.name}", unit="img", disable=(None if progress is None else not progress), leave=False)
        try:
            if workers == 1 or len(tasks) == 1:
                for start, chunk in tasks:
                    bar.update(_fill(tmp, header, start, chunk, size))
            else:
                # fork: workers start at once and never re-run the caller's script (spawn would, for a script
                # without a __main__ guard); they touch only numpy, PIL and the file, never torch or CUDA
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    futures = [pool.submit(_fill, tmp, header, start, chunk, size) for start, chunk in tasks]
                    try:
                        for fut in cf.as_completed(futures):
                            bar.update(fut.result())
                    except BaseException:
                        for fut in futures:
                            fut.cancel()
                        raise
        finally:
            bar.close()
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; a shared dataset cache is readable by others
            os.fsync(fh.fileno())
        chunks = chunk_digests(tmp, workers)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_json(side, {
        "version": CACHE_VERSION,
        "size": size,
        "shape": [n, size, size],
        "dtype": "uint8",
        "source": source,
        "checksum": {"algorithm": "sha256 of each chunk; sha256 of their hex digests", "chunk_bytes": CHUNK_BYTES,
                     "chunks": chunks, "sha256": combined_digest(chunks)},
    })
