"""Anatomical priors for SegmentCAM's foreground (the abstract says "explicit anatomical priors";
which ones is ours). A prior maps a training batch to a lung-field map [B,1,S,S] in [0,1].

Sources (config `prior`):
  synth      the exact lung masks SynthCXR items carry ("lung_mask").
  atlas      the mean of the 517 real lung masks in the torchxrayvision wheel (same map for every image).
  segmenter  a small lung segmenter trained on SynthCXR masks (clarity/segmenter.py), run on each image.
  user       the user's masks: `prior_path` is a .npy atlas [H,W], a .npz of image_id -> mask, or a
             folder of <image_id>.png / .npy files.
  auto       synth when the batch carries "lung_mask", else atlas.
  none       no prior: SegmentCAM's foreground is then untrained (its classification loss still applies).

Region (config `prior_region`, ours): `lungs` uses the lung fields as they are; `thorax` fills each image row
between its outermost lung pixels (`fill_rows`), which adds the heart and mediastinum between the lung fields.
The lung fields cover about 65 % of a SynthCXR Cardiomegaly box, the filled region about 95 % (docs/clarity.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

PriorFn = Callable[[dict, bool], "torch.Tensor | None"]


def _resize(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    m = m.float()
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return m.clamp(0, 1)


def atlas_prior(size: int) -> torch.Tensor:
    """The real-mask lung atlas [1,1,size,size] (mean of the 517 torchxrayvision masks)."""
    from baselines.priors import lung_atlas  # one atlas for the whole suite (harness-owned)

    return torch.from_numpy(lung_atlas(size)).float()[None, None]


class UserMasks:
    """Masks the user supplies (see module doc); a missing file or image id is a clear error."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(
                f"clarity: prior_path {self.path} does not exist; give a .npy atlas, a .npz of "
                "image_id -> mask, or a folder of <image_id>.png/.npy lung masks"
            )
        self.atlas: torch.Tensor | None = None
        self.table: dict[str, np.ndarray] | None = None
        if self.path.suffix == ".npy":
            self.atlas = torch.from_numpy(np.load(self.path, allow_pickle=False).astype(np.float32))[None, None]
            if self.atlas.ndim != 4:
                raise ValueError(f"clarity: {self.path} must hold one 2-D mask, got shape {tuple(self.atlas.shape[2:])}")
        elif self.path.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as z:
                self.table = {k: z[k].astype(np.float32) for k in z.files}

    def _one(self, image_id: str) -> np.ndarray:
        if self.table is not None:
            if image_id not in self.table:
                raise KeyError(f"clarity: {self.path} has no mask for image {image_id!r}")
            return self.table[image_id]
        for ext in (".npy", ".png"):
            f = self.path / f"{image_id}{ext}"
            if f.exists():
                if ext == ".npy":
                    return np.load(f, allow_pickle=False).astype(np.float32)
                from PIL import Image

                return np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0
        raise FileNotFoundError(f"clarity: no mask {image_id}.png or {image_id}.npy in {self.path}")

    def __call__(self, image_ids: list[str], size: tuple[int, int]) -> torch.Tensor:
        if self.atlas is not None:
            return _resize(self.atlas, size).expand(len(image_ids), 1, *size)
        return torch.cat([_resize(torch.from_numpy(self._one(i))[None, None], size) for i in image_ids])


def fill_rows(m: torch.Tensor) -> torch.Tensor:
    """Each row filled between its outermost foreground pixels: min of the running max from the left and
    from the right, so a binary mask is filled exactly and a soft one (an atlas) keeps values in [0, 1]."""
    left = torch.cummax(m, dim=-1).values
    right = torch.cummax(m.flip(-1), dim=-1).values.flip(-1)
    return torch.minimum(left, right)


def make_prior(source: str, train, val, *, prior_path: str | None = None, segmenter=None,
               region: str = "lungs") -> PriorFn | None:
    """A callable (batch, training) -> [B,1,S,S] prior (or None) for the given splits; `region` "thorax"
    fills each row between the lung fields (`fill_rows`)."""
    if region not in ("lungs", "thorax"):
        raise ValueError(f"clarity: prior_region={region!r}; choose 'lungs' or 'thorax'")
    prior = _make_prior(source, train, val, prior_path=prior_path, segmenter=segmenter)
    if prior is None or region == "lungs":
        return prior

    def thorax(batch: dict, training: bool) -> torch.Tensor:
        return fill_rows(prior(batch, training))

    return thorax


def _make_prior(source: str, train, val, *, prior_path: str | None = None, segmenter=None) -> PriorFn | None:
    if source == "none":
        return None
    if source == "user":
        masks = UserMasks(prior_path)

        def user(batch: dict, training: bool) -> torch.Tensor:
            split = train if training else val
            ids = [split.image_ids[int(i)] for i in batch["index"]]
            return masks(ids, tuple(batch["image"].shape[-2:])).to(batch["image"].device)

        return user
    if source == "segmenter":
        if segmenter is None:
            raise ValueError("clarity: prior='segmenter' needs a trained lung segmenter")

        def segment(batch: dict, training: bool) -> torch.Tensor:
            return segmenter.predict(batch["image"])

        return segment
    atlas_cache: dict[tuple[int, int], torch.Tensor] = {}

    def from_batch_or_atlas(batch: dict, training: bool) -> torch.Tensor:
        if "lung_mask" in batch and source in ("auto", "synth"):
            return _resize(batch["lung_mask"].reshape(batch["image"].shape[0], 1, *batch["lung_mask"].shape[-2:]),
                           tuple(batch["image"].shape[-2:]))
        if source == "synth":
            raise KeyError(
                "clarity: prior='synth' needs batches with 'lung_mask' (SynthCXR); use prior='atlas', "
                "'segmenter' or 'user' on other data"
            )
        size = tuple(batch["image"].shape[-2:])
        if size not in atlas_cache:
            atlas_cache[size] = _resize(atlas_prior(max(size)), size)
        return atlas_cache[size].to(batch["image"].device).expand(batch["image"].shape[0], 1, *size)

    return from_batch_or_atlas
