"""The one image reader of the suite (the NIH loader and `wsl-bench explain` both read through it),
and the one pixel limit every size a file can claim is checked against.

`read_grey(path)` returns an 8-bit grey image [H, W] (uint8):

- 8-bit grey (``L``), palette, RGB, RGBA, LA, CMYK and 1-bit images are converted with PIL's ITU-R 601-2
  luma (``convert("L")``); an alpha channel is ignored (X-rays carry no transparency);
- 16-bit and 32-bit integer images (``I;16``, ``I;16B``, ``I``) and float images (``F``) are scaled by their
  own maximum to 0..255 (the NIH loader's rule: many 16-bit X-rays use only 10-12 bits, so dividing by 65535
  would give a black image, and PIL's ``convert("L")`` clips every value above 255 to white);
- JPEG is decoded like any other file; DICOM is refused with a line saying how to convert it.

Before any pixel is decoded, the size the header claims is checked against `max_pixels()` (default
4096 x 4096 = 16,777,216 pixels; the environment variable ``WSL_BENCH_MAX_PIXELS`` raises or lowers it),
and PIL's decompression-bomb check is turned into the same one-line `ImageError`. The same limit bounds the
image sizes a heatmap bundle or `wsl-bench score --image-size` may claim and the maps a bundle may hold, so
no input file under 1 MB makes any command allocate more than a few hundred MB for pixels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_PIXELS_ENV = "WSL_BENCH_MAX_PIXELS"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A converted image with more than this fraction of its pixels at 255 is not explained: it is what a
# wrong conversion (e.g. 16-bit values clipped to 8 bits) or a blank frame looks like.
SATURATED_FRACTION = 0.95


class ImageError(ValueError):
    """An image file that cannot or must not be read; the message names the file and the fix."""


def max_pixels() -> int:
    """The largest image or map (height x width) any command accepts: $WSL_BENCH_MAX_PIXELS or 4096²."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r} must be a positive whole number of pixels, e.g. {DEFAULT_MAX_PIXELS}")
    return value


def check_pixels(h, w, what: str) -> tuple[int, int]:
    """(h, w) as ints if both are >= 1 and h * w is within `max_pixels()`; else a ValueError naming `what`."""
    try:
        h, w = int(h), int(w)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what}: size must be two whole numbers (height, width), got {h!r} x {w!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what}: size must be positive, got {h} x {w}")
    limit = max_pixels()
    if h * w > limit:
        raise ValueError(
            f"{what}: {h} x {w} = {h * w:,} pixels is over the limit of {limit:,} (set {MAX_PIXELS_ENV} "
            "to raise it if the size is real)"
        )
    return h, w


def read_header(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file's header, checked against `max_pixels()` before any decoding."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        raise ImageError(f"{path}: DICOM is not read yet; convert it to a 16-bit PNG (e.g. with pydicom + PIL)")
    if head[:8] == PNG_MAGIC and head[12:16] == b"IHDR":  # the PNG header, before PIL parses anything
        w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        _checked(path, h, w)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc}); give a PNG or JPEG file") from None
    return _checked(path, h, w)


def _checked(path: Path, h: int, w: int) -> tuple[int, int]:
    try:
        return check_pixels(h, w, f"{path}: header claims")
    except ValueError as exc:
        raise ImageError(f"{exc}; refused before decoding") from None


def read_grey(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """The image as 8-bit grey [H, W] uint8 (see the module docstring), resized to size x size if given."""
    from PIL import Image

    path = Path(path)
    read_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                    arr = np.clip(np.asarray(im, dtype=np.float64), 0, None)
                    arr = (255 * arr / max(float(arr.max()), 1.0)).astype(np.uint8)
                    im = Image.fromarray(arr)
                elif im.mode != "L":
                    im = im.convert("L")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
                return np.asarray(im, dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        raise ImageError(f"{path}: cannot decode image ({type(exc).__name__}: {exc}); re-save it as PNG") from None


def saturated_fraction(grey: np.ndarray) -> float:
    """The fraction of pixels at the maximum grey value 255."""
    return float(np.count_nonzero(grey == 255)) / max(1, grey.size)


def check_not_saturated(grey: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """`grey` unchanged, or an ImageError when it is (nearly) all white: nothing to explain there."""
    frac = saturated_fraction(grey)
    if frac > SATURATED_FRACTION:
        raise ImageError(
            f"{path}: {100 * frac:.1f} % of its pixels are saturated (white) after conversion to 8-bit grey; "
            "it is blank or stored in a way this reader does not understand; re-save it as an 8- or 16-bit grey PNG"
        )
    return grey
