"""Run-length masks in the SIIM-ACR pneumothorax encoding (`train-rle.csv`, column `EncodedPixels`).

The encoding is "start length start length …" over the pixels in column-major order (pixel index
x * height + y), where each start counts the pixels skipped since the end of the previous run (the
first one since pixel 0). "-1" means an empty mask. One row of the csv is one instance.
"""

from __future__ import annotations

import numpy as np

from wsl_bench.data.registry import DatasetError

EMPTY = "-1"


class RLEError(DatasetError):
    """A run-length string that is not a valid mask for its image; the message names where it came from."""


def _fail(where: str, what: str) -> RLEError:
    return RLEError(f"{where + ': ' if where else ''}{what}")


def runs(rle: str, height: int, width: int, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Absolute (starts, ends) of the runs, ends exclusive, in column-major pixel indices.

    Empty arrays for "-1"; an RLEError for anything that is not a whole, in-image run list."""
    text = "" if rle is None else str(rle).strip()
    if text == EMPTY:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if text in ("", "nan", "NaN"):
        raise _fail(where, f"empty run-length mask; write {EMPTY} for an image without a mask")
    tokens = text.split()
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise _fail(where, f"run-length value {bad!r} is not a whole number") from None
    if len(values) % 2:
        raise _fail(where, f"odd number of run-length values ({len(values)}): start/length pairs expected; is the row truncated?")
    gaps, lengths = values[0::2], values[1::2]
    if (gaps < 0).any():
        raise _fail(where, f"negative start offset {int(gaps[gaps < 0][0])} in run {int(np.flatnonzero(gaps < 0)[0]) + 1}")
    if (lengths < 1).any():
        k = int(np.flatnonzero(lengths < 1)[0])
        raise _fail(where, f"run {k + 1} has length {int(lengths[k])}; every run covers at least one pixel")
    ends = np.cumsum(gaps + lengths)
    starts = ends - lengths
    total = int(height) * int(width)
    if ends[-1] > total:
        k = int(np.flatnonzero(ends > total)[0])
        raise _fail(where, f"run {k + 1} ends at pixel {int(ends[k])}, past the {height}x{width} image ({total} pixels)")
    return starts, ends


def column_segments(starts: np.ndarray, ends: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs cut at column boundaries: (column, first row, end row exclusive) of each piece."""
    c0, c1 = starts // height, (ends - 1) // height
    n = c1 - c0 + 1
    which = np.repeat(np.arange(len(starts)), n)
    step = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    col = c0[which] + step
    seg_s = np.maximum(starts[which], col * height)
    seg_e = np.minimum(ends[which], (col + 1) * height)
    return col, seg_s - col * height, seg_e - col * height


def decode_crop(rle: str, height: int, width: int, where: str = "") -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The mask's bounding box (x0, y0, x1, y1; ends exclusive) and the boolean crop of that box,
    without building the full image; None for an empty mask."""
    starts, ends = runs(rle, height, width, where)
    if not len(starts):
        return None
    col, r0, r1 = column_segments(starts, ends, height)
    x0, x1, y0, y1 = int(col.min()), int(col.max()) + 1, int(r0.min()), int(r1.max())
    diff = np.zeros((y1 - y0 + 1, x1 - x0), dtype=np.int32)
    np.add.at(diff, (r0 - y0, col - x0), 1)
    np.add.at(diff, (r1 - y0, col - x0), -1)
    return (x0, y0, x1, y1), np.cumsum(diff, axis=0)[:-1] > 0


def decode(rle: str, height: int, width: int, where: str = "") -> np.ndarray:
    """The mask as bool [height, width]."""
    out = np.zeros((int(height), int(width)), dtype=bool)
    found = decode_crop(rle, height, width, where)
    if found is not None:
        (x0, y0, x1, y1), crop = found
        out[y0:y1, x0:x1] = crop
    return out


def encode(mask: np.ndarray) -> str:
    """The run-length string of a 2-D boolean mask ("-1" when it is empty)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"encode takes a 2-D mask, got shape {m.shape}")
    flat = np.ascontiguousarray(m.astype(bool).T).ravel()
    edges = np.diff(np.concatenate([[0], flat.view(np.uint8), [0]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return EMPTY
    gaps = starts - np.concatenate([[0], ends[:-1]])
    pairs = np.stack([gaps, ends - starts], axis=1).ravel()
    return " ".join(map(str, pairs.tolist()))
