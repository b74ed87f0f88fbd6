"""The NIH ChestX-ray14 adapter: the official layout, labels, boxes and split, read as a Cohort.

Layout under `root` (as downloaded from https://nihcc.app.box.com/v/ChestXray-NIHCC):
  images/*.png  or  images_001/images/*.png … images_012/images/*.png
  Data_Entry_2017*.csv, BBox_List_2017.csv, train_val_list.txt, test_list.txt
When only the images are present, the label and box tables fall back to the copies shipped in the
torchxrayvision wheel; without the split lists the split is derived (box-image patients -> test),
and both are recorded in `Cohort.info`. Every box image, every view and every box is kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from wsl_bench.data import assets
from wsl_bench.data.schema import CXRDataset, Cohort
from wsl_bench.data.tables import read_bbox_list, read_data_entry, read_id_list
from wsl_bench.labels import FINDINGS

OFFICIAL_SOURCE = (
    "the official NIH ChestX-ray14 files come from https://nihcc.app.box.com/v/ChestXray-NIHCC "
    "(images_001.tar.gz … images_012.tar.gz, Data_Entry_2017_v2020.csv, BBox_List_2017.csv, "
    "train_val_list.txt, test_list.txt)"
)
MAX_SIDE = 8192  # a header claiming more than this is refused before decoding
MAX_PRELOAD_BYTES = 1 << 30
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class NIHDataError(ValueError):
    """A problem with the NIH files under the data root; the message says what and how to fix it."""


def check_image_id(image_id: str, where: str) -> str:
    """An image id must be a plain file name inside the image folders (no paths, no `..`)."""
    s = str(image_id).strip()
    if not _SAFE_ID.match(s) or ".." in s or "/" in s or "\\" in s:
        raise NIHDataError(f"{where}: image id {image_id!r} is not a plain file name; ids that could escape the data root are refused")
    return s


@dataclass
class NIHLayout:
    """What was found under a data root."""

    root: Path
    image_dirs: list[Path] = field(default_factory=list)
    data_entry: Path | None = None
    bbox: Path | None = None
    train_val_list: Path | None = None
    test_list: Path | None = None

    @property
    def missing(self) -> list[str]:
        out = []
        if not self.image_dirs:
            out.append("images/ (or images_001/images … images_012/images)")
        if self.data_entry is None:
            out.append("Data_Entry_2017*.csv")
        if self.bbox is None:
            out.append("BBox_List_2017.csv")
        if self.train_val_list is None:
            out.append("train_val_list.txt")
        if self.test_list is None:
            out.append("test_list.txt")
        return out


def find_layout(root: str | os.PathLike) -> NIHLayout:
    root = Path(root).expanduser()
    lay = NIHLayout(root=root)
    if not root.is_dir():
        return lay
    if (root / "images").is_dir():
        lay.image_dirs.append(root / "images")
    for d in sorted(root.glob("images_*")):
        if (d / "images").is_dir():
            lay.image_dirs.append(d / "images")
        elif d.is_dir() and any(p.suffix.lower() == ".png" for p in d.iterdir()):
            lay.image_dirs.append(d)
    entries = sorted(p for p in root.glob("Data_Entry_2017*.csv*") if p.is_file())
    lay.data_entry = entries[-1] if entries else None
    for name, attr in (("BBox_List_2017.csv", "bbox"), ("train_val_list.txt", "train_val_list"), ("test_list.txt", "test_list")):
        p = root / name
        if p.is_file():
            setattr(lay, attr, p)
    return lay


def _index_images(dirs: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in dirs:
        with os.scandir(d) as it:
            for e in it:
                if e.name.lower().endswith(".png") and e.is_file():
                    out.setdefault(e.name, Path(e.path))
    return out


def read_png_header(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, refusing absurd or unreadable headers before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        raise NIHDataError(f"{path}: cannot read ({exc})") from None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise NIHDataError(f"{path}: header claims {w}x{h} pixels (limit {MAX_SIDE}); refused before decoding")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise NIHDataError(f"{path}: not a readable image ({exc}); re-extract it from the official archive or skip it with --set data.skip_bad=true") from None
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise NIHDataError(f"{path}: header claims {w}x{h} pixels (limit {MAX_SIDE}); refused before decoding")
    return h, w


def decode_png(path: Path, size: int | None) -> np.ndarray:
    """8-bit grayscale uint8 [H,W] (RGBA/RGB/16-bit converted), resized to size x size if given.

    Decoded by the suite's one image reader (`wsl_bench.images.read_grey`, shared with `wsl-bench explain`)."""
    from wsl_bench.images import ImageError, read_grey

    read_png_header(path)
    try:
        return read_grey(path, size)
    except ImageError as exc:
        raise NIHDataError(f"{exc}; re-extract it from the official archive or skip it with --set data.skip_bad=true") from None


class NIHDataset(CXRDataset):
    """A ChestX-ray14 split; pixels are read from disk, preloaded when they fit in memory, or read from the
    resized image cache (`wsl_bench.data.image_cache`, a memory-mapped uint8 file) when `cache_file` is given
    and `cache` is true, or `cache` is None and the split is over the preload budget."""

    def __init__(self, paths: list[Path], image_ids, patient_ids, labels, orig_sizes, image_size, boxes, meta=None, preload=None,
                 cache=False, cache_file=None, progress=None):
        super().__init__(image_ids, patient_ids, labels, orig_sizes, image_size, boxes, meta)
        self.paths = list(paths)
        self.views = list((meta or {}).get("views", ["PA"] * len(self.paths)))
        self.meta.pop("views", None)
        self.images = None
        self.rows = None  # rows of `images` (a subset of a memory-mapped cache keeps the map, not a copy)
        self.cache_file = None
        fits = len(self.paths) * image_size * image_size <= MAX_PRELOAD_BYTES
        if cache is None:
            cache = preload is None and not fits
        if cache and cache_file is not None and self.paths:
            from wsl_bench.data import image_cache
            from wsl_bench.images import ImageError

            try:
                self.images = image_cache.open_or_build(
                    cache_file, self.paths, image_size, progress=progress,
                    desc=f"caching NIH {self.meta.get('split', '')} at {image_size} px",
                )
            except ImageError as exc:
                raise NIHDataError(f"{exc}; re-extract it from the official archive or skip it with --set data.skip_bad=true") from None
            self.cache_file = Path(cache_file)
            if preload:
                self.images = np.array(self.images)
            return
        if preload is None:
            preload = fits
        if preload and self.paths:
            self.images = np.stack([decode_png(p, image_size) for p in self.paths])

    def __getstate__(self):
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap):  # DataLoader workers reopen the map instead of copying the pixels
            state["images"] = None
            state["_memmap"] = os.fspath(self.images.filename)
        return state

    def __setstate__(self, state):
        path = state.pop("_memmap", None)
        self.__dict__.update(state)
        if path is not None:
            self.images = np.load(path, mmap_mode="r", allow_pickle=False)

    def _raw(self, i: int) -> np.ndarray:
        if self.images is None:
            return decode_png(self.paths[i], self.image_size)
        return self.images[i if self.rows is None else self.rows[i]]

    def _load_image(self, i: int) -> np.ndarray:
        return self._raw(i).astype(np.float32) / 255.0

    def __getitem__(self, i: int) -> dict[str, Any]:
        # uint8 -> float32 / 255 in torch, one pass: the same float32 values as `_load_image` (IEEE division),
        # 3x less CPU than numpy's astype + divide, which matters once pixels come from the cache at 512 px
        i = int(i)
        row = self._raw(i)
        if not row.flags.writeable:  # a row of the read-only memory map
            row = np.array(row)
        return {"image": torch.from_numpy(row).float().div_(255.0)[None], "labels": torch.from_numpy(self.labels[i]), "index": i}

    def load_images(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        if self.images is not None:
            return torch.from_numpy(self.images[idx if self.rows is None else self.rows[idx]]).float().div_(255.0)[:, None]
        return torch.from_numpy(np.stack([self._raw(int(i)) for i in idx])).float().div_(255.0)[:, None]

    def subset(self, indices) -> "NIHDataset":
        idx = np.asarray(indices, dtype=np.int64)
        ids = [self.image_ids[i] for i in idx]
        boxes = self.boxes[self.boxes["image_id"].isin(set(ids))] if not self.boxes.empty else self.boxes
        ds = NIHDataset.__new__(NIHDataset)
        CXRDataset.__init__(ds, ids, [self.patient_ids[i] for i in idx], self.labels[idx], self.orig_sizes[idx], self.image_size, boxes, self.meta)
        ds.paths = [self.paths[i] for i in idx]
        ds.views = [self.views[i] for i in idx]
        ds.cache_file = self.cache_file
        if isinstance(self.images, np.memmap):
            ds.images, ds.rows = self.images, (idx if self.rows is None else self.rows[idx])
        else:
            ds.images, ds.rows = (self.images[idx] if self.images is not None else None), None
        return ds


def patient_pick(patients: Iterable[str], fraction: float, seed: int) -> set[str]:
    """A seeded, order-independent pick of round(fraction * n) of the n distinct patients: those that
    come first by sha256("<seed>:<patient>"). NIH's validation patients, and the film datasets' test
    and validation patients."""
    uniq = sorted(set(patients))
    key = [hashlib.sha256(f"{seed}:{p}".encode()).hexdigest() for p in uniq]
    order = [p for _, p in sorted(zip(key, uniq))]
    return set(order[: int(round(fraction * len(order)))])


@dataclass
class NIHTables:
    """Everything `load_nih` and `datasets info` need, with provenance."""

    layout: NIHLayout
    entries: pd.DataFrame
    boxes: pd.DataFrame
    train_val: list[str]
    test: list[str]
    on_disk: dict[str, Path]
    fallbacks: list[str]
    missing_images: list[str]


def read_tables(root: str | os.PathLike) -> NIHTables:
    """Find and read the NIH files under root (fallbacks recorded); a clear error when unusable."""
    lay = find_layout(root)
    if not lay.root.is_dir() or not lay.image_dirs:
        raise NIHDataError(
            f"NIH data root {lay.root}: missing {', '.join(lay.missing) if lay.root.is_dir() else 'the folder itself'}; "
            f"{OFFICIAL_SOURCE}"
        )
    fallbacks = []
    if lay.data_entry is None:
        entries_path = assets.wheel_file(assets.DATA_ENTRY)
        fallbacks.append(f"Data_Entry_2017*.csv missing under {lay.root}: using the copy in the torchxrayvision wheel ({entries_path})")
    else:
        entries_path = lay.data_entry
    if lay.bbox is None:
        bbox_path = assets.wheel_file(assets.BBOX_LIST)
        fallbacks.append(f"BBox_List_2017.csv missing under {lay.root}: using the copy in the torchxrayvision wheel ({bbox_path})")
    else:
        bbox_path = lay.bbox
    try:
        entries = read_data_entry(entries_path)
        boxes = read_bbox_list(bbox_path)
    except (ValueError, FileNotFoundError) as exc:
        raise NIHDataError(f"{exc}; {OFFICIAL_SOURCE}") from None
    for r, iid in enumerate(entries["image_id"]):
        check_image_id(iid, f"{entries_path} row {r + 2}")
    for r, iid in enumerate(boxes["image_id"]):
        check_image_id(iid, f"{bbox_path} row {r + 2}")
    on_disk = _index_images(lay.image_dirs)
    known = set(entries["image_id"])
    if lay.train_val_list is not None and lay.test_list is not None:
        tv = [check_image_id(i, str(lay.train_val_list)) for i in read_id_list(lay.train_val_list)]
        te = [check_image_id(i, str(lay.test_list)) for i in read_id_list(lay.test_list)]
    else:
        fallbacks.append(
            f"train_val_list.txt/test_list.txt missing under {lay.root}: derived a patient-disjoint split "
            "(every patient with a box image in test); this is not the official split"
        )
        box_patients = set(entries.loc[entries["image_id"].isin(set(boxes["image_id"])), "patient_id"])
        in_test = entries["patient_id"].isin(box_patients)
        tv = entries.loc[~in_test, "image_id"].tolist()
        te = entries.loc[in_test, "image_id"].tolist()
    listed = [i for i in tv + te if i in known]
    missing_images = [i for i in listed if i not in on_disk]
    return NIHTables(lay, entries, boxes, tv, te, on_disk, fallbacks, missing_images)


def load_nih(
    root: str | os.PathLike,
    image_size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    preload: bool | None = None,
    cache: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> Cohort:
    """The NIH ChestX-ray14 cohort: official train_val/test split, a patient-disjoint validation
    split of train_val (`val_fraction`, seeded), all box images and boxes (original pixels) in the
    split that holds them. Images missing on disk are left out and counted; a corrupt image is an
    error naming it, or with `skip_bad=True` skipped and counted (`info["skipped_bad_images"]`).

    Pixels: `preload=None` keeps a split in memory when it fits in `MAX_PRELOAD_BYTES` (1 GiB), else reads
    it per batch; `preload=True/False` forces either. `cache=True` reads every split from the resized image
    cache (`nih-<split>-<size>px.npy`, built once with all cores, checksummed, memory-mapped; with
    `preload=True` copied into memory); `cache=None` (default) uses it for the splits that do not fit the
    preload budget when `preload` is None; `cache=False` never. The cache lives in `cache_dir`, default
    `$WSL_BENCH_CACHE/images/nih-<digest of the root>/` (`~/.cache/wsl-bench/...`)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    t = read_tables(root)
    entries = t.entries.set_index("image_id")
    skipped: list[str] = []
    sizes: dict[str, tuple[int, int]] = {}
    for iid in t.train_val + t.test:
        p = t.on_disk.get(iid)
        if p is None or iid not in entries.index:
            continue
        try:
            sizes[iid] = read_png_header(p)
            if skip_bad:
                decode_png(p, 8)  # a full decode, so damaged files are caught now
        except NIHDataError:
            if not skip_bad:
                raise
            skipped.append(iid)
            sizes.pop(iid, None)
    val_patients = patient_pick([entries.at[i, "patient_id"] for i in t.train_val if i in sizes], val_fraction, seed)
    if cache_dir is None:
        from wsl_bench.data.image_cache import default_folder

        digest = hashlib.sha256(os.path.abspath(t.layout.root).encode()).hexdigest()[:12]
        cache_folder = default_folder() / f"nih-{digest}"
    else:
        cache_folder = Path(cache_dir).expanduser()

    def make(ids: list[str], split: str) -> NIHDataset:
        ids = [i for i in ids if i in sizes]
        rows = entries.loc[ids] if ids else entries.iloc[:0]
        boxes = t.boxes[t.boxes["image_id"].isin(set(ids))].reset_index(drop=True)
        return NIHDataset(
            [t.on_disk[i] for i in ids], ids, rows["patient_id"].tolist(), rows[list(FINDINGS)].to_numpy(np.float32),
            np.array([sizes[i] for i in ids], dtype=np.int64).reshape(-1, 2), image_size, boxes,
            meta={"split": split, "dataset": "nih", "views": rows["view"].tolist()}, preload=preload,
            cache=cache, cache_file=cache_folder / f"nih-{split}-{image_size}px.npy", progress=progress,
        )

    tv_ids = [i for i in t.train_val if i in sizes]
    train = make([i for i in tv_ids if entries.at[i, "patient_id"] not in val_patients], "train")
    val = make([i for i in tv_ids if entries.at[i, "patient_id"] in val_patients], "val")
    test = make(t.test, "test")
    if len(test) == 0:
        raise NIHDataError(
            f"NIH data root {t.layout.root}: no test images found on disk "
            f"({len(t.missing_images)} listed images are missing); {OFFICIAL_SOURCE}"
        )
    warnings = [] if len(train) else ["no train_val images on disk: methods can only be evaluated, not trained"]
    fp_src = "|".join([str(image_size), str(seed), str(val_fraction)] + sorted(sizes) + [str(len(t.boxes))])
    fingerprint = "nih-" + hashlib.sha256(fp_src.encode()).hexdigest()[:16]
    all_boxes = pd.concat([train.boxes, val.boxes, test.boxes], ignore_index=True)
    info: dict[str, Any] = {
        "dataset": "nih",
        "root": str(t.layout.root),
        "image_size": image_size,
        "n_images": {"train": len(train), "val": len(val), "test": len(test)},
        "n_boxes": int(len(all_boxes)),
        "boxes_per_label": {str(k): int(v) for k, v in all_boxes.groupby("label").size().items()},
        "box_images": int(all_boxes["image_id"].nunique()) if len(all_boxes) else 0,
        "missing_images": len(t.missing_images),
        "skipped_bad_images": len(skipped),
        "image_cache": {s.meta["split"]: (str(s.cache_file) if s.cache_file else None) for s in (train, val, test)},
        "skipped_bad_image_ids": skipped[:100],
        "fallbacks": t.fallbacks,
        "warnings": warnings,
    }
    return Cohort(name="nih", train=train, val=val, test=test, fingerprint=fingerprint, info=info)


def dataset_info(root: str | os.PathLike) -> dict[str, Any]:
    """What `wsl-bench datasets info --data nih` prints: counts, split sizes and what is missing."""
    t = read_tables(root)
    present = set(t.on_disk)
    boxes = t.boxes[t.boxes["image_id"].isin(present)]
    return {
        "root": str(t.layout.root),
        "images": len(present),
        "box_images": int(boxes["image_id"].nunique()),
        "boxes": int(len(boxes)),
        "boxes_per_label": {str(k): int(v) for k, v in boxes.groupby("label").size().items()},
        "split": {
            "train_val": sum(1 for i in t.train_val if i in present),
            "test": sum(1 for i in t.test if i in present),
        },
        "missing_files": t.layout.missing,
        "missing_images": len(t.missing_images),
        "fallbacks": t.fallbacks,
    }
