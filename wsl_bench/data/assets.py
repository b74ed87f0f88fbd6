"""Real assets shipped in the torchxrayvision wheel: NIH label/box tables, lung masks, OpenI reports.

Nothing is downloaded: the files are read from the installed wheel, found without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.data.rle import decode_crop
from wsl_bench.data.tables import read_bbox_list, read_data_entry

LUNG_ZIP = "semantic_masks_v7labs_lungs.zip"
DATA_ENTRY = "Data_Entry_2017_v2020.csv.gz"
BBOX_LIST = "BBox_List_2017.csv.gz"
REPORTS_TGZ = "NLMCXR_reports.tgz"
SIIM_RLE = "siim-pneumothorax-train-rle.csv.gz"
TEMPLATE_SIZE = 96
SHAPE_SIZE = 48
SIIM_SIDE = 1024  # the SIIM-ACR masks are run-length encoded on 1024 x 1024 images
SIIM_MIN_AREA = 5e-4  # instances smaller than this fraction of the image are dropped (specks)


def wheel_data_dir() -> Path:
    """The `data/` folder of the installed torchxrayvision wheel (clear error if it is absent)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "torchxrayvision is not installed; it ships the real NIH tables and lung masks "
            "SynthCXR needs (pip install torchxrayvision)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"torchxrayvision has no data folder at {path}; reinstall torchxrayvision")
    return path


def wheel_file(name: str) -> Path:
    path = wheel_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing from the torchxrayvision wheel at {path}; reinstall it")
    return path


@functools.lru_cache(maxsize=1)
def real_data_entry() -> pd.DataFrame:
    """The real Data_Entry_2017_v2020 table (112,120 rows) as read by `read_data_entry`."""
    return read_data_entry(wheel_file(DATA_ENTRY))


@functools.lru_cache(maxsize=1)
def real_boxes() -> pd.DataFrame:
    """The real BBox_List_2017 table (984 boxes on 880 images, 1024-px coordinates), BOX_COLUMNS."""
    return read_bbox_list(wheel_file(BBOX_LIST))


def default_cache_dir() -> Path:
    """`$WSL_BENCH_CACHE` or `~/.cache/wsl-bench`."""
    env = os.environ.get("WSL_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wsl-bench"


def _canonical_lungs(mask: np.ndarray, size: int, with_box: bool = False):
    """Crop a binary lung mask to its two lungs and resize each into a [2,size,size] frame.

    Channel 0 is the image-left lung (the patient's right), channel 1 the image-right lung.
    Masks that do not show two side-by-side lungs of similar size are rejected (None).
    `with_box`: also return where the two lungs sat in their own film, (x0, y0, x1, y1) as
    fractions of its width and height.
    """
    from PIL import Image
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n < 2:
        return None
    areas = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    order = np.argsort(areas)[::-1][:2]
    a1, a2 = areas[order[0]], areas[order[1]]
    if a2 < 0.3 * a1:
        return None
    comps = [lab == (k + 1) for k in order]
    cx = [np.nonzero(c)[1].mean() for c in comps]
    comps = [comps[i] for i in np.argsort(cx)]
    union = comps[0] | comps[1]
    ys, xs = np.nonzero(union)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    if not 0.6 < h / max(w, 1) < 1.6:
        return None
    out = np.empty((2, size, size), dtype=np.float32)
    for c in range(2):
        crop = comps[c][y0:y1, x0:x1].astype(np.uint8) * 255
        out[c] = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
    # Each lung must stay on its own side of the midline of the crop.
    if out[0][:, size // 2 + size // 8 :].mean() > 0.02 or out[1][:, : size // 2 - size // 8].mean() > 0.02:
        return None
    if with_box:
        H, W = mask.shape
        return out, np.array([x0 / W, y0 / H, x1 / W, y1 / H], dtype=np.float32)
    return out


def _build_lung_templates(size: int, with_boxes: bool = False):
    from PIL import Image

    out, boxes = [], []
    with zipfile.ZipFile(wheel_file(LUNG_ZIP)) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith("/"):
                continue
            im = Image.open(io.BytesIO(zf.read(name)))
            im.draft("L", (256, 256))
            im = im.convert("L")
            im.thumbnail((256, 256))
            t = _canonical_lungs(np.asarray(im) > 127, size, with_box=True)
            if t is not None:
                out.append(t[0])
                boxes.append(t[1])
    if not out:
        raise RuntimeError(f"no usable lung masks found in {wheel_file(LUNG_ZIP)}")
    templates = (np.stack(out) * 255).round().astype(np.uint8)
    return (templates, np.stack(boxes)) if with_boxes else templates


def lung_templates(cache_dir: str | os.PathLike | None = None, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Real lung-field shapes [K,2,size,size] uint8 (0..255), one per usable mask of the 517.

    Built once from the wheel's zip (a few seconds) and cached as .npy under the cache dir.
    """
    return _lung_templates_cached(str(Path(cache_dir) if cache_dir else default_cache_dir()), size)


@functools.lru_cache(maxsize=4)
def _lung_templates_cached(cache_dir: str, size: int) -> np.ndarray:
    path = Path(cache_dir) / f"lung_templates_v1_{size}.npy"
    arr = _load_npy(path, 4, (2, size, size))
    if arr is None:
        arr = _build_lung_templates(size)
        _save_npy(path, arr)
    return arr


def _save_npy(path: Path, arr: np.ndarray) -> None:
    from wsl_bench.io import atomic_path

    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
    except OSError:
        pass  # a read-only cache only costs the rebuild next time


def _load_npy(path: Path, ndim: int, tail: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged cache file is rebuilt by the caller
    return arr if arr.ndim == ndim and arr.shape[1:] == tail else None


def lung_template_boxes(cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Where each lung template's two lungs sat in their own film: [K,4] float32 (x0, y0, x1, y1) as
    fractions of that film's width and height, in the order of `lung_templates` (same masks, same filter).

    Their mean is the frame of the real-mask lung atlas (the `prior-lung` map on NIH)."""
    return _lung_boxes_cached(str(Path(cache_dir) if cache_dir else default_cache_dir()))


@functools.lru_cache(maxsize=4)
def _lung_boxes_cached(cache_dir: str) -> np.ndarray:
    path = Path(cache_dir) / "lung_template_boxes_v1.npy"
    arr = _load_npy(path, 2, (4,))
    if arr is None:
        arr = _build_lung_templates(8, with_boxes=True)[1]
        _save_npy(path, arr)
    return arr


def _build_ptx_shapes(size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    table = pd.read_csv(wheel_file(SIIM_RLE))
    codes = [str(v).strip() for v in table.iloc[:, 1]]
    rows = []
    for code in codes:
        if code in ("-1", "", "nan"):
            continue
        (x0, y0, x1, y1), crop = decode_crop(code, SIIM_SIDE, SIIM_SIDE)
        if crop.sum() < SIIM_MIN_AREA * SIIM_SIDE**2:
            continue
        t = torch.from_numpy(crop.astype(np.float32))[None, None]
        small = F.interpolate(t, size=(size, size), mode="area")[0, 0].numpy()
        box = np.array([x0, y0, x1, y1], dtype=np.float64) / SIIM_SIDE
        rows.append(np.concatenate([box * 65535, np.clip(small, 0, 1).ravel() * 255]))
    if not rows:
        raise RuntimeError(f"no pneumothorax masks found in {wheel_file(SIIM_RLE)}")
    return np.stack(rows).round().astype(np.uint16)


def pneumothorax_shapes(cache_dir: str | os.PathLike | None = None, size: int = SHAPE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Real pneumothorax shapes: the SIIM-ACR training masks shipped in the torchxrayvision wheel
    (`siim-pneumothorax-train-rle.csv.gz`, 1024-px run-length encoded), one per annotated instance
    covering at least SIIM_MIN_AREA of the film.

    Returns (shapes [N,size,size] uint8 0..255: each instance's bounding-box crop resized to size x size,
    boxes [N,4] float32: that box (x0, y0, x1, y1) as fractions of the 1024-px film). Built once (about a
    second) and cached as .npy under the cache dir."""
    arr = _ptx_cached(str(Path(cache_dir) if cache_dir else default_cache_dir()), int(size))
    return arr[:, 4:].reshape(-1, size, size).astype(np.uint8), arr[:, :4].astype(np.float32) / 65535


@functools.lru_cache(maxsize=4)
def _ptx_cached(cache_dir: str, size: int) -> np.ndarray:
    path = Path(cache_dir) / f"ptx_shapes_v1_{size}.npy"
    arr = _load_npy(path, 2, (4 + size * size,))
    if arr is None:
        arr = _build_ptx_shapes(size)
        _save_npy(path, arr)
    return arr
