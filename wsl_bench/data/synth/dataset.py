"""SynthCXR splits held in memory (uint8 images at generate size and model size, lung masks,
exact lesion masks, reports) and their on-disk cache (one folder per config fingerprint, written
to a temporary folder and renamed into place, so a crash never leaves a half cache)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from wsl_bench.data.schema import BOX_COLUMNS, CXRDataset


def resize_uint8(images: np.ndarray, size: int, chunk: int = 512, mode: str = "area") -> np.ndarray:
    """[N,G,G] uint8 -> [N,size,size] uint8 (area averaging when shrinking; batched)."""
    n, g = images.shape[0], images.shape[-1]
    if g == size:
        return np.ascontiguousarray(images)
    out = np.empty((n, size, size), dtype=np.uint8)
    for s in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + chunk])).float()[:, None]
        if size < g and mode == "area":
            y = F.interpolate(x, size=(size, size), mode="area")
        else:
            y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out[s : s + chunk] = y[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return out


class LesionMaskStore:
    """Exact lesion masks as bit-packed crops: records (row, label, y0, x0, h, w, offset)."""

    def __init__(self, records: pd.DataFrame, bits: np.ndarray, generate_size: int):
        self.records = records.reset_index(drop=True)
        self.bits = bits
        self.generate_size = int(generate_size)
        self._by_row: dict[int, list[int]] = {}
        for k, r in enumerate(self.records["row"].to_numpy()):
            self._by_row.setdefault(int(r), []).append(k)

    @classmethod
    def build(cls, items: list[tuple[int, str, int, int, np.ndarray]], generate_size: int) -> "LesionMaskStore":
        rows, labels, y0s, x0s, hs, ws, offs, chunks = [], [], [], [], [], [], [], []
        off = 0
        for row, label, y0, x0, mask in items:
            packed = np.packbits(mask.astype(bool).ravel())
            rows.append(row), labels.append(label), y0s.append(y0), x0s.append(x0)
            hs.append(mask.shape[0]), ws.append(mask.shape[1]), offs.append(off)
            chunks.append(packed)
            off += len(packed)
        rec = pd.DataFrame({"row": rows, "label": labels, "y0": y0s, "x0": x0s, "h": hs, "w": ws, "offset": offs})
        bits = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
        return cls(rec, bits, generate_size)

    def masks(self, row: int) -> dict[str, np.ndarray]:
        g = self.generate_size
        out: dict[str, np.ndarray] = {}
        for k in self._by_row.get(int(row), []):
            r = self.records.iloc[k]
            h, w, off = int(r["h"]), int(r["w"]), int(r["offset"])
            n = h * w
            crop = np.unpackbits(self.bits[off : off + (n + 7) // 8])[:n].reshape(h, w).astype(bool)
            full = out.setdefault(str(r["label"]), np.zeros((g, g), dtype=bool))
            full[int(r["y0"]) : int(r["y0"]) + h, int(r["x0"]) : int(r["x0"]) + w] |= crop
        return out

    def subset(self, rows: np.ndarray) -> "LesionMaskStore":
        remap = {int(r): i for i, r in enumerate(rows)}
        rec = self.records[self.records["row"].isin(remap)].copy()
        rec["row"] = rec["row"].map(remap)
        return LesionMaskStore(rec, self.bits, self.generate_size)


class SynthDataset(CXRDataset):
    """A SynthCXR split. Items add `"lung_mask"` [1,S,S] float; `.reports[i]` is the report of
    image i; `.lesion_masks(i)` gives exact masks (box label -> bool [G,G]) of every lesion,
    including findings without boxes in train/val; `.images_orig` holds the generate-size pixels."""

    def __init__(
        self,
        image_ids, patient_ids, labels, images_orig: np.ndarray, lungs_orig: np.ndarray, image_size: int,
        boxes: pd.DataFrame | None, reports: list[str], mask_store: LesionMaskStore, views: list[str],
        meta: dict[str, Any] | None = None,
    ):
        g = images_orig.shape[-1]
        n = len(image_ids)
        super().__init__(image_ids, patient_ids, labels, np.tile([g, g], (n, 1)), image_size, boxes, meta)
        self.images_orig = images_orig
        self.lungs_orig = lungs_orig
        self.images = resize_uint8(images_orig, image_size)
        self.lungs = (resize_uint8(lungs_orig.astype(np.uint8) * 255, image_size) >= 128)
        self.reports = list(reports)
        self.views = list(views)
        self._store = mask_store
        self.masks = self.lesion_masks

    def lesion_masks(self, i: int) -> dict[str, np.ndarray]:
        return self._store.masks(int(i))

    def _load_image(self, i: int) -> np.ndarray:
        return self.images[i].astype(np.float32) / 255.0

    def load_images(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.images[idx]).float().div_(255.0)[:, None]

    def load_lung_masks(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.lungs[idx]).float()[:, None]

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        return {
            "image": torch.from_numpy(self.images[i]).float().div_(255.0)[None],
            "labels": torch.from_numpy(self.labels[i]),
            "index": i,
            "lung_mask": torch.from_numpy(self.lungs[i]).float()[None],
        }

    def subset(self, indices) -> "SynthDataset":
        idx = np.asarray(indices, dtype=np.int64)
        ids = [self.image_ids[i] for i in idx]
        keep = set(ids)
        boxes = self.boxes[self.boxes["image_id"].isin(keep)] if not self.boxes.empty else self.boxes
        ds = SynthDataset.__new__(SynthDataset)
        CXRDataset.__init__(ds, ids, [self.patient_ids[i] for i in idx], self.labels[idx], self.orig_sizes[idx], self.image_size, boxes, self.meta)
        ds.images_orig, ds.lungs_orig = self.images_orig[idx], self.lungs_orig[idx]
        ds.images, ds.lungs = self.images[idx], self.lungs[idx]
        ds.reports = [self.reports[i] for i in idx]
        ds.views = [self.views[i] for i in idx]
        ds._store = self._store.subset(idx)
        ds.masks = ds.lesion_masks
        return ds


# ---------------------------------------------------------------- cache
SPLITS = ("train", "val", "test")


def save_split_arrays(folder: Path, name: str, payload: dict[str, Any]) -> None:
    """Write one split's arrays/tables into `folder` (a temporary cache folder)."""
    np.save(folder / f"{name}_images.npy", payload["images"], allow_pickle=False)
    np.save(folder / f"{name}_lungs.npy", np.packbits(payload["lungs"], axis=-1), allow_pickle=False)
    np.save(folder / f"{name}_maskbits.npy", payload["store"].bits, allow_pickle=False)
    payload["store"].records.to_csv(folder / f"{name}_masks.csv", index=False)
    payload["boxes"].to_csv(folder / f"{name}_boxes.csv", index=False)
    table = pd.DataFrame({"image_id": payload["image_ids"], "patient_id": payload["patient_ids"], "view": payload["views"]})
    for j in range(payload["labels"].shape[1]):
        table[f"y{j}"] = payload["labels"][:, j]
    table.to_csv(folder / f"{name}_table.csv", index=False)
    (folder / f"{name}_reports.json").write_text(json.dumps(payload["reports"]), encoding="utf-8")


def load_split_arrays(folder: Path, name: str, g: int) -> dict[str, Any]:
    table = pd.read_csv(folder / f"{name}_table.csv", dtype={"image_id": str, "patient_id": str, "view": str}, keep_default_na=False)
    ycols = [c for c in table.columns if c.startswith("y") and c[1:].isdigit()]
    rec = pd.read_csv(folder / f"{name}_masks.csv", dtype={"label": str})
    boxes = pd.read_csv(folder / f"{name}_boxes.csv", dtype={"image_id": str, "label": str})
    if boxes.empty:
        boxes = pd.DataFrame(columns=list(BOX_COLUMNS))
    return {
        "images": np.load(folder / f"{name}_images.npy", allow_pickle=False),
        "lungs": np.unpackbits(np.load(folder / f"{name}_lungs.npy", allow_pickle=False), axis=-1)[..., :g].astype(bool),
        "store": LesionMaskStore(rec, np.load(folder / f"{name}_maskbits.npy", allow_pickle=False), g),
        "boxes": boxes,
        "image_ids": table["image_id"].tolist(),
        "patient_ids": table["patient_id"].tolist(),
        "views": table["view"].tolist(),
        "labels": table[ycols].to_numpy(np.float32),
        "reports": json.loads((folder / f"{name}_reports.json").read_text(encoding="utf-8")),
    }


def write_cache(final: Path, writer) -> None:
    """Run `writer(tmp_folder)` then rename the folder into place (atomic on one filesystem)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        writer(tmp)
        (tmp / "COMPLETE").write_text("ok\n")
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "COMPLETE").is_file():  # someone else's half folder: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
