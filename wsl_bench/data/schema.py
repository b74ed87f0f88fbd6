"""The data contract between datasets and everything downstream.

A `Cohort` holds splits; each split is a `CXRDataset` (a torch Dataset) that yields
``{"image": float32 [1,S,S] in [0,1], "labels": float32 [14], "index": int}`` at the configured
model size S, and carries the per-image tables the scorer needs: ids, patient ids, original
sizes, and boxes in *original-image* pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

# Columns of every boxes table: label is the box-file spelling (BOX_FINDINGS), x/y/w/h in
# original-image pixels, top-left origin.
BOX_COLUMNS = ("image_id", "label", "x", "y", "w", "h")


class CXRDataset(Dataset):
    """Base class for a split. Subclasses implement `_load_image(i) -> float32 [S,S] in [0,1]`.

    Attributes (all aligned by row index):
      image_ids   list[str]
      patient_ids list[str]
      labels      np.ndarray [N,14] float32 (0/1)
      orig_sizes  np.ndarray [N,2] int (height, width) of the original image
      boxes       pd.DataFrame with BOX_COLUMNS (may be empty)
      masks       optional callable(i) -> dict[label, bool array at original size] (synth only)
      image_size  int, the side S of the tensors yielded
    """

    def __init__(
        self,
        image_ids: list[str],
        patient_ids: list[str],
        labels: np.ndarray,
        orig_sizes: np.ndarray,
        image_size: int,
        boxes: pd.DataFrame | None = None,
        meta: dict[str, Any] | None = None,
    ):
        n = len(image_ids)
        if not (len(patient_ids) == n and len(labels) == n and len(orig_sizes) == n):
            raise ValueError("image_ids, patient_ids, labels and orig_sizes must have the same length")
        self.image_ids = list(image_ids)
        self.patient_ids = list(patient_ids)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.orig_sizes = np.asarray(orig_sizes, dtype=np.int64).reshape(n, 2)
        self.image_size = int(image_size)
        self.boxes = (boxes if boxes is not None else pd.DataFrame(columns=list(BOX_COLUMNS))).reset_index(drop=True)
        self.meta = dict(meta or {})
        self._index = {iid: i for i, iid in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def index_of(self, image_id: str) -> int:
        return self._index[image_id]

    def _load_image(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_images(self, indices) -> torch.Tensor:
        """A batch [B,1,S,S] float32; subclasses holding arrays in memory override this to avoid loops."""
        return torch.stack([torch.from_numpy(np.ascontiguousarray(self._load_image(int(i))))[None] for i in indices])

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = torch.from_numpy(np.ascontiguousarray(self._load_image(int(i)), dtype=np.float32))[None]
        return {"image": img, "labels": torch.from_numpy(self.labels[i]), "index": int(i)}

    def box_image_indices(self) -> np.ndarray:
        """Row indices of images that have at least one box."""
        if self.boxes.empty:
            return np.zeros(0, dtype=np.int64)
        ids = set(self.boxes["image_id"])
        return np.array([i for i, iid in enumerate(self.image_ids) if iid in ids], dtype=np.int64)

    def subset(self, indices) -> "CXRDataset":
        """A view on some rows (same class, boxes filtered to those images)."""
        raise NotImplementedError


@dataclass
class Cohort:
    """A dataset's splits plus what identifies it (for caching and the run manifest)."""

    name: str
    train: CXRDataset
    val: CXRDataset
    test: CXRDataset
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
