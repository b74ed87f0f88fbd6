"""Writing a mirror of a Kaggle-layout dataset (RSNA Pneumonia, SIIM-ACR Pneumothorax, VinDr-CXR): its
official layout with the real annotation geometry from the torchxrayvision wheel and synthetic films,
which read back through `wsl_bench.data.films` like a real download.

Films are uncompressed 8-bit MONOCHROME2 DICOM: a plain synthetic chest with each lesion drawn at its
annotated place, seeded per film so a film does not depend on which others are written.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from wsl_bench.data import assets
from wsl_bench.data.films import import_pydicom
from wsl_bench.data.registry import DatasetError

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # DICOM SOP class: Computed Radiography Image Storage


def wheel_path(name: str) -> Path:
    """A file of the torchxrayvision wheel (the real annotations a mirror copies); a DatasetError when absent."""
    try:
        return assets.wheel_file(name)
    except FileNotFoundError as exc:
        raise DatasetError(f"{exc}; a mirror copies the real annotations from it") from None


def dicom_uid(key: str) -> str:
    """A valid DICOM UID for `key`: itself when it already is one, else a 2.25 (UUID-derived) UID of its hash."""
    if 0 < len(key) <= 64 and all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in key.split(".")):
        return key
    return "2.25." + str(int(hashlib.sha256(key.encode()).hexdigest()[:32], 16))


def write_dicom(path: Path, pixels: np.ndarray, uid: str, **tags: str) -> None:
    """An uncompressed 8-bit MONOCHROME2 CR DICOM of `pixels` ([H,W] uint8) with the given string tags
    (PatientID, PatientSex, PatientAge, ViewPosition, ...); study and series UIDs derive from `uid`."""
    import_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR_IMAGE_STORAGE, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = dicom_uid(f"study:{uid}"), dicom_uid(f"series:{uid}")
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    for k, v in tags.items():
        setattr(ds, k, v)
    px = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = px.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def write_picture(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[:, None], c[None, :]


def synthetic_film(size: int, rng: np.random.Generator) -> np.ndarray:
    """A plain chest-like film in [0,1], [size,size] float32: body, two dark lung fields, a heart shadow,
    a seeded jitter of their placement and pixel noise. Fast at any size; no anatomy to learn from."""
    yy, xx = _grid(size)
    dx, dy, s = rng.normal(0, 0.02), rng.normal(0, 0.02), rng.uniform(0.92, 1.08)
    img = 0.55 + 0.25 * np.exp(-(((xx - 0.5 - dx) / 0.42) ** 2 + ((yy - 0.55 - dy) / 0.6) ** 2) ** 2)
    for cx in (0.3, 0.7):
        lung = ((xx - cx - dx) / (0.16 * s)) ** 2 + ((yy - 0.47 - dy) / (0.3 * s)) ** 2
        img = img - 0.35 * np.clip(1.2 - lung, 0, 1)
    heart = ((xx - 0.56 - dx) / 0.13) ** 2 + ((yy - 0.64 - dy) / 0.12) ** 2
    img = img + 0.22 * np.clip(1.0 - heart, 0, 1)
    img = img + rng.normal(0, 0.02, (size, size))
    return np.clip(img, 0, 1).astype(np.float32)


def draw_box_lesion(img: np.ndarray, x: float, y: float, w: float, h: float, strength: float = 0.25) -> None:
    """Brighten (an opacity) the ellipse inscribed in box (x, y, w, h), in place; at least one pixel."""
    size_y, size_x = img.shape
    x0, y0 = int(np.clip(np.floor(x), 0, size_x - 1)), int(np.clip(np.floor(y), 0, size_y - 1))
    x1, y1 = int(np.clip(np.ceil(x + w), x0 + 1, size_x)), int(np.clip(np.ceil(y + h), y0 + 1, size_y))
    yy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - (y + h / 2)) / max(h / 2, 0.5)
    xx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - (x + w / 2)) / max(w / 2, 0.5)
    r2 = yy[:, None] ** 2 + xx[None, :] ** 2
    img[y0:y1, x0:x1] += strength * np.clip(1.3 - r2, 0, 1)


def draw_mask_lesion(img: np.ndarray, mask: np.ndarray, strength: float = 0.2) -> None:
    """Darken (air without lung markings) the pixels of `mask`, in place."""
    img[mask] -= strength


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def scale_mask(crop: np.ndarray, box: tuple[int, int, int, int], src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """A mask crop at `box` (x0, y0, x1, y1) in a src frame, drawn in a dst frame as bool [H,W]: a dst pixel
    is set when any src pixel it covers is, so shrinking never makes an instance vanish."""
    out = np.zeros(dst_hw, dtype=bool)
    x0, y0, x1, y1 = box
    m = crop
    for axis, (lo, hi, src, dst) in enumerate(((y0, y1, src_hw[0], dst_hw[0]), (x0, x1, src_hw[1], dst_hw[1]))):
        if dst <= src:  # each src index falls in one dst index: OR the src indices of each dst index together
            tgt = (np.arange(lo, hi) * dst) // src
            starts = np.flatnonzero(np.diff(np.concatenate([[-1], tgt])))
            m = np.logical_or.reduceat(m, starts, axis=axis)
            idx = tgt[starts]
        else:  # each dst index takes the src index it falls in
            idx = np.arange((lo * dst + src - 1) // src, (hi * dst + src - 1) // src)
            m = np.take(m, idx * src // dst - lo, axis=axis)
        if axis == 0:
            rows = idx
        else:
            cols = idx
    out[np.ix_(rows, cols)] = m
    return out


def image_order(ids: list[str], boxed: set[str], images: str | int) -> list[str]:
    """Which films a mirror writes pixels for: "all", "boxed" (those with an annotation), or the first n ids."""
    if images == "all":
        return list(ids)
    if images == "boxed":
        return [i for i in ids if i in boxed]
    if isinstance(images, int) and not isinstance(images, bool) and images >= 0:
        return list(ids[:images])
    raise DatasetError(f"images={images!r}: give 'all', 'boxed' or a number of images")


def format_number(v: float) -> str:
    """A coordinate as the shortest text that reads back to the same float ('' for NaN)."""
    return "" if not np.isfinite(v) else repr(float(v)).removesuffix(".0")


def write_mirror_films(ids: list[str], size: int, seed: int, path_of: Callable[[str], Path],
                       draw: Callable[[str, np.ndarray], None], tags_of: Callable[[str], dict[str, str]],
                       progress: bool = False, desc: str = "") -> int:
    """Render and write one synthetic DICOM film per id (lesions drawn by `draw(id, film)`); each film's
    noise is seeded by (seed, id), so a film does not depend on which others are written."""
    from tqdm.auto import tqdm

    for iid in tqdm(ids, desc=desc or "writing films", disable=not progress):
        rng = np.random.default_rng([seed, int(hashlib.sha256(iid.encode()).hexdigest()[:8], 16)])
        img = synthetic_film(size, rng)
        draw(iid, img)
        write_dicom(path_of(iid), to_uint8(img), dicom_uid(iid), **tags_of(iid))
    return len(ids)
