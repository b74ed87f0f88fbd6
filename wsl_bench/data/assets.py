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

from wsl_bench.data.tables import read_bbox_list, read_data_entry

LUNG_ZIP = "semantic_masks_v7labs_lungs.zip"
DATA_ENTRY = "Data_Entry_2017_v2020.csv.gz"
BBOX_LIST = "BBox_List_2017.csv.gz"
REPORTS_TGZ = "NLMCXR_reports.tgz"
TEMPLATE_SIZE = 96


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


def _canonical_lungs(mask: np.ndarray, size: int) -> np.ndarray | None:
    """Crop a binary lung mask to its two lungs and resize each into a [2,size,size] frame.

    Channel 0 is the image-left lung (the patient's right), channel 1 the image-right lung.
    Masks that do not show two side-by-side lungs of similar size are rejected (None).
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
    return out


def _build_lung_templates(size: int) -> np.ndarray:
    from PIL import Image

    out = []
    with zipfile.ZipFile(wheel_file(LUNG_ZIP)) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith("/"):
                continue
            im = Image.open(io.BytesIO(zf.read(name)))
            im.draft("L", (256, 256))
            im = im.convert("L")
            im.thumbnail((256, 256))
            t = _canonical_lungs(np.asarray(im) > 127, size)
            if t is not None:
                out.append(t)
    if not out:
        raise RuntimeError(f"no usable lung masks found in {wheel_file(LUNG_ZIP)}")
    return (np.stack(out) * 255).round().astype(np.uint8)


def lung_templates(cache_dir: str | os.PathLike | None = None, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Real lung-field shapes [K,2,size,size] uint8 (0..255), one per usable mask of the 517.

    Built once from the wheel's zip (a few seconds) and cached as .npy under the cache dir.
    """
    return _lung_templates_cached(str(Path(cache_dir) if cache_dir else default_cache_dir()), size)


@functools.lru_cache(maxsize=4)
def _lung_templates_cached(cache_dir: str, size: int) -> np.ndarray:
    from wsl_bench.io import atomic_path

    path = Path(cache_dir) / f"lung_templates_v1_{size}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 4 and arr.shape[1:] == (2, size, size):
                return arr
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    arr = _build_lung_templates(size)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
    except OSError:
        pass  # a read-only cache only costs the rebuild next time
    return arr
