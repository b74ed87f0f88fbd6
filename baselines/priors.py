"""Sanity references every run includes: "just guess the middle", "just guess the lungs", and noise.

A method's gain over these is what the benchmark is for. They look at no pixel (except `random`,
which hashes the image only to make its noise a fixed function of the image, independent of batching).
Their `predict` returns the training prevalence (AUROC 0.5), `random`'s returns noise.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from wsl_bench.io import write_json
from wsl_bench.labels import NUM_FINDINGS
from wsl_bench.methods import FitContext, Method, register_method

LUNG_ZIP = "semantic_masks_v7labs_lungs.zip"
STATE_FILE = "prior.json"


class _Prior(Method):
    """One map for every image and class; fit only records the training prevalence."""

    trainable = False
    config_keys: dict[str, Any] = {"map_size": 64, "seed": 0}  # read with config.get: the keys (and types) `--set` accepts
    # nothing to train or size: every run preset uses the defaults
    presets: dict[str, dict[str, Any]] = {"quick": {}, "standard": {}, "paper": {}}

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        self.map_size = int(self.config.get("map_size", 64))
        self.seed = int(self.config.get("seed", 0))
        self.prevalence = np.full(NUM_FINDINGS, 0.5, dtype=np.float64)
        self._map: np.ndarray | None = None

    @property
    def prior_map(self) -> np.ndarray:
        if self._map is None:
            self._map = self._default_map()
        return self._map

    @prior_map.setter
    def prior_map(self, value: np.ndarray) -> None:
        self._map = np.asarray(value, dtype=np.float32)

    def _default_map(self) -> np.ndarray:
        raise NotImplementedError

    def fit(self, train, val, ctx: FitContext) -> None:
        self.seed = int(ctx.seed)
        if len(train):
            self.prevalence = np.asarray(train.labels, dtype=np.float64).mean(axis=0)
        self.save(ctx.checkpoint_dir)

    def save(self, directory: Path) -> None:
        state = {"prevalence": self.prevalence.tolist(), "map": self.prior_map.tolist(), "seed": self.seed}
        write_json(Path(directory) / STATE_FILE, state)

    def load(self, directory: Path) -> None:
        path = Path(directory) / STATE_FILE
        try:
            state = json.loads(path.read_text())
            self.prevalence = np.asarray(state["prevalence"], dtype=np.float64).reshape(NUM_FINDINGS)
            self.prior_map = np.asarray(state["map"], dtype=np.float32)
            self.seed = int(state["seed"])
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a valid {self.name} state ({exc}); delete it and re-run fit") from None

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(self.prevalence, dtype=torch.float32)
        return p.expand(images.shape[0], NUM_FINDINGS).clone()

    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        m = torch.as_tensor(self.prior_map, dtype=torch.float32)
        return m.expand(images.shape[0], len(classes), *m.shape).clone()


def centred_gaussian(size: int, sigma: float) -> np.ndarray:
    """A peak-1 isotropic Gaussian at the image centre; `sigma` as a fraction of the side."""
    ax = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)


@register_method("prior-center", paper="Sanity reference: a centred Gaussian (no learning)")
class PriorCenter(_Prior):
    """Centred Gaussian prior: guesses the middle of the image for every finding."""

    config_keys = {**_Prior.config_keys, "sigma": 0.25}

    def _default_map(self) -> np.ndarray:
        return centred_gaussian(self.map_size, float(self.config.get("sigma", 0.25)))


@functools.lru_cache(maxsize=2)
def lung_atlas(size: int = 64) -> np.ndarray:
    """Mean of the 517 real lung masks in the torchxrayvision wheel, each resized to size x size.

    Built once (a few seconds) and cached as .npy in the wsl-bench cache folder.
    """
    from wsl_bench.data.assets import default_cache_dir
    from wsl_bench.io import atomic_path

    cache = default_cache_dir() / f"lung_atlas_v1_{size}.npy"
    if cache.is_file():
        try:
            arr = np.load(cache, allow_pickle=False)
            if arr.shape == (size, size):
                return arr
        except (OSError, ValueError):
            pass
    arr = _build_lung_atlas(size)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    return arr


def _build_lung_atlas(size: int) -> np.ndarray:
    from PIL import Image

    from wsl_bench.data.assets import wheel_file

    path = wheel_file(LUNG_ZIP)
    acc, n = np.zeros((size, size), dtype=np.float64), 0
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith("/"):
                continue
            im = Image.open(io.BytesIO(zf.read(name)))
            im.draft("L", (4 * size, 4 * size))
            mask = np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float64) / 255.0
            acc += mask > 0.5
            n += 1
    if n == 0:
        raise RuntimeError(f"{path} holds no lung masks; reinstall torchxrayvision")
    return (acc / n).astype(np.float32)


@register_method("prior-lung", paper="Sanity reference: the average lung field (no learning)")
class PriorLung(_Prior):
    """Average lung field: the training split's lung masks (SynthCXR) or the real-mask atlas (NIH)."""

    def _default_map(self) -> np.ndarray:
        return lung_atlas(self.map_size)

    def fit(self, train, val, ctx: FitContext) -> None:
        masks = _split_lung_masks(train, self.map_size)
        if masks is not None:
            self.prior_map = masks
        super().fit(train, val, ctx)


def _split_lung_masks(split, size: int) -> np.ndarray | None:
    """Mean lung mask of a split whose items carry "lung_mask" (SynthCXR), at size x size; else None."""
    if len(split) == 0:
        return None
    if hasattr(split, "load_lung_masks"):  # batched access (SynthCXR)
        total = torch.zeros(size, size, dtype=torch.float64)
        for start in range(0, len(split), 256):
            m = split.load_lung_masks(np.arange(start, min(start + 256, len(split)))).float()
            total += torch.nn.functional.interpolate(m, size=(size, size), mode="area").sum(dim=(0, 1)).double()
        return (total / len(split)).float().numpy()
    first = split[0]
    if "lung_mask" not in first:
        return None
    total = torch.zeros(size, size, dtype=torch.float64)
    for i in range(len(split)):  # fit-time only, once per run
        mask = split[i]["lung_mask"]
        m = mask.float().reshape(1, 1, *mask.shape[-2:])
        total += torch.nn.functional.interpolate(m, size=(size, size), mode="area")[0, 0].double()
    return (total / len(split)).float().numpy()


@register_method("random", paper="Sanity reference: seeded uniform noise (no learning)")
class RandomMaps(_Prior):
    """Seeded noise maps and probabilities; each image's noise depends only on the image and the seed."""

    config_keys = {**_Prior.config_keys, "grid": 8}

    def _default_map(self) -> np.ndarray:
        return np.zeros((1, 1), dtype=np.float32)

    def _noise(self, images: torch.Tensor, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform [0,1) noise from an integer hash of (8-bit pixels, seed, position): exact on any
        hardware and thread count, since it uses only int64 arithmetic (wrapping) and no float sums."""
        x = (images.detach().to("cpu", torch.float64).flatten(1) * 255).round().to(torch.int64)
        w = (torch.arange(1, x.shape[1] + 1, dtype=torch.int64) * 2654435761) % 2147483647
        key = (x * w).sum(1) % 2147483647 + self.seed * 1000003  # one integer per image
        idx = torch.arange(1, int(np.prod(shape)) * n + 1, dtype=torch.int64)
        h = key[:, None] * 6364136223846793005 + idx[None, :] * 1442695040888963407
        for mult in (-49064778989728563, -4265267296055464877):  # murmur3 fmix64 constants as signed int64
            h = h ^ ((h >> 33) & 0x7FFFFFFF)
            h = h * mult
        h = h ^ ((h >> 33) & 0x7FFFFFFF)
        u = (h & 0xFFFFFF).to(torch.float32) / float(1 << 24)
        return u.reshape(images.shape[0], n, *shape)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self._noise(images, NUM_FINDINGS, ())

    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        g = int(self.config.get("grid", 8))
        return self._noise(images + 1.0, len(classes), (g, g))
