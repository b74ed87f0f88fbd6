"""Write a SynthCXR cohort in exactly the NIH ChestX-ray14 layout, so the NIH path (`load_nih`,
`datasets info`, `run --data nih`) can be exercised end to end without the real images.

`mirror_nih=True` renders the 880 real box images: their real ids, patients, labels and views,
with lesions drawn at the real BBox_List_2017 coordinates (scaled to the export size).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsl_bench.data import assets
from wsl_bench.data.schema import BOX_COLUMNS
from wsl_bench.io import write_text
from wsl_bench.labels import FINDINGS

IMAGES_PER_FOLDER = 10000
MIRROR_PATIENT_OFFSET = 40000  # synthetic train_val patients never collide with real NIH ids (<= 30805)


def _finding_string(row: np.ndarray) -> str:
    names = [FINDINGS[j] for j in np.flatnonzero(row)]
    return "|".join(names) if names else "No Finding"


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_bbox_csv(path: Path, boxes: pd.DataFrame) -> None:
    lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for r in boxes.itertuples(index=False):
        lines.append(f"{r.image_id},{r.label},{r.x:.6f},{r.y:.6f},{r.w:.6f},{r.h:.6f}")
    write_text(path, "\n".join(lines) + "\n")


def _rename(image_id: str, offset: int) -> str:
    p, f = image_id.split("_")
    return f"{int(p) + offset:08d}_{f}"


def export_nih_layout(
    out: str | os.PathLike,
    n: int = 1000,
    size: int = 1024,
    seed: int = 0,
    mirror_nih: bool = False,
    test_fraction: float = 0.2,
    progress: bool = False,
) -> dict[str, Any]:
    """Write images_001/images/*.png, Data_Entry_2017_v2020.csv, BBox_List_2017.csv,
    train_val_list.txt and test_list.txt under `out`. With `mirror_nih`, the test list is the 880
    real box images and `n` synthetic images form train_val; otherwise `n` synthetic images are
    split train_val/test (`test_fraction`) and every test lesion gets its box."""
    from wsl_bench.data.synth import SynthConfig, anatomy_bank, load_synth, render_specs
    from wsl_bench.data.synth.geometry import BoxSampler
    from wsl_bench.data.synth.sample import _image_spec

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_test = 0 if mirror_nih else int(round(test_fraction * n))
    cfg = SynthConfig(n_train=n - n_test, n_val=0, n_test=n_test, generate_size=size, image_size=min(size, 64), seed=seed)
    synth = load_synth(cfg, cache_dir=False, progress=progress) if n > 0 else None
    offset = MIRROR_PATIENT_OFFSET if mirror_nih else 0
    ids, images, labels, pids, views, genders, ages = [], [], [], [], [], [], []
    boxes = [pd.DataFrame(columns=list(BOX_COLUMNS))]
    tv, te = [], []
    rng = np.random.default_rng([seed, 99])
    if synth is not None:
        for split, dest in ((synth.train, tv), (synth.test, te)):
            for i, iid in enumerate(split.image_ids):
                new = _rename(iid, offset)
                ids.append(new), dest.append(new)
                images.append(split.images_orig[i]), labels.append(split.labels[i])
                pids.append(int(split.patient_ids[i]) + offset), views.append(split.views[i])
                genders.append("F" if rng.random() < 0.44 else "M"), ages.append(int(rng.integers(18, 90)))
            if not split.boxes.empty:
                b = split.boxes.copy()
                b["image_id"] = [_rename(x, offset) for x in b["image_id"]]
                boxes.append(b)
    if mirror_nih:
        de = assets.real_data_entry().set_index("image_id")
        real = assets.real_boxes().copy()
        scale = size / 1024.0
        for c in ("x", "y", "w", "h"):
            real[c] = real[c].astype(float) * scale
        bank = anatomy_bank(size, seed)
        sampler = BoxSampler(seed)
        female = np.flatnonzero(bank.params["female"] > 0.5)
        male = np.flatnonzero(bank.params["female"] <= 0.5)
        specs = []
        box_ids = sorted(real["image_id"].unique())
        for iid in box_ids:
            row = de.loc[iid]
            lab = row[list(FINDINGS)].to_numpy(np.float32)
            fixed: dict[str, list] = {}
            for r in real[real["image_id"] == iid].itertuples(index=False):
                fixed.setdefault(str(r.label), []).append((r.x, r.y, r.w, r.h))
            pool = female if row["gender"] == "F" else male
            specs.append(_image_spec(cfg, rng, lab, str(row["view"]), int(rng.choice(pool)), rng.normal(0, 0.015, 2),
                                     rng.uniform(0.92, 1.06, 2), sampler, size, fixed=fixed))
            ids.append(iid), te.append(iid), labels.append(lab), pids.append(int(row["patient_id"]))
            views.append(str(row["view"])), genders.append(str(row["gender"])), ages.append(int(rng.integers(18, 90)))
        for res in render_specs(bank, specs):
            images.extend(list(res.images))
        boxes.append(real[list(BOX_COLUMNS)])
    # images in folders of IMAGES_PER_FOLDER, as in the public download
    for k, (iid, img) in enumerate(zip(ids, images)):
        folder = out / f"images_{k // IMAGES_PER_FOLDER + 1:03d}" / "images"
        if k % IMAGES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        _write_png(folder / iid, img)
    entry = pd.DataFrame({
        "Image Index": ids,
        "Finding Labels": [_finding_string(y) for y in labels],
        "Follow-up #": [int(i.split("_")[1].split(".")[0]) for i in ids],
        "Patient ID": pids,
        "Patient Age": ages,
        "Patient Gender": genders,
        "View Position": views,
        "OriginalImage[Width": size,
        "Height]": size,
        "OriginalImagePixelSpacing[x": 0.143 * 1024 / size,
        "y]": 0.143 * 1024 / size,
    })
    write_text(out / "Data_Entry_2017_v2020.csv", entry.to_csv(index=False))
    all_boxes = pd.concat(boxes, ignore_index=True)
    _write_bbox_csv(out / "BBox_List_2017.csv", all_boxes)
    write_text(out / "train_val_list.txt", "".join(f"{i}\n" for i in tv))
    write_text(out / "test_list.txt", "".join(f"{i}\n" for i in te))
    return {
        "out": str(out),
        "images": len(ids),
        "train_val": len(tv),
        "test": len(te),
        "boxes": int(len(all_boxes)),
        "box_images": int(all_boxes["image_id"].nunique()),
        "boxes_per_label": {str(k): int(v) for k, v in all_boxes.groupby("label").size().items()},
        "size": size,
        "mirror_nih": mirror_nih,
    }
