"""The data stage: the run's cohort loaded through the dataset registry, and the test split's tables written.

Outputs under data/: images.csv (ids, patients, sizes, labels), boxes.csv, gallery.npz (the box images,
small), masks.npz where the dataset knows the lesion pixels, reader_boxes.csv where each reader's boxes are
known (VinDr-CXR), and, in an external-validation run, label_mapping.csv (how the test dataset's findings map
onto the suite's).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from wsl_bench.config import config_hash
from wsl_bench.data.registry import get_dataset, mapping_rows
from wsl_bench.io import atomic_path
from wsl_bench.labels import FINDINGS
from wsl_bench.stages.base import RunFolder, files_under, is_rank_zero

MAPPING_FILE = "label_mapping.csv"
READERS_FILE = "reader_boxes.csv"


def load_cohort(data_cfg: dict[str, Any], seed: int, progress: bool = False):
    """The cohort a resolved `data` section names, loaded by its registered dataset."""
    return get_dataset(data_cfg["name"]).load(dict(data_cfg), seed, progress=progress)


def external_cohort(train, test):
    """The train/val splits of cohort `train` with the test split of cohort `test` (both in suite vocabulary)."""
    from wsl_bench.data.schema import Cohort

    return Cohort(
        name=f"{train.name}+{test.name}", train=train.train, val=train.val, test=test.test,
        fingerprint=f"{train.fingerprint}+{test.fingerprint}",
        info={"train_val": train.info, "test": test.info},
    )


def run_cohort(config: dict[str, Any], progress: bool = False):
    """The cohort of a run config: its `data`, or in an external-validation run `data` + `test_data`'s test split."""
    cohort = load_cohort(config["data"], config["seed"], progress=progress)
    if "test_data" not in config:
        return cohort
    return external_cohort(cohort, load_cohort(config["test_data"], config["seed"], progress=progress))


def data_key(config: dict[str, Any]) -> str:
    """What the cohort depends on in the config: the data section(s) and the seed."""
    extra = {"test_data": config["test_data"]} if "test_data" in config else {}
    return config_hash({"data": config["data"], "seed": config["seed"], **extra})


def gallery_image(img: torch.Tensor, max_side: int = 256) -> np.ndarray:
    """A [B,1,S,S] float batch -> [B,s,s] uint8 with s <= max_side."""
    if img.shape[-1] > max_side:
        img = torch.nn.functional.interpolate(img, size=(max_side, max_side), mode="area")
    return (img[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_data_stage(cohort, data_dir: Path, mapping: list[dict[str, str]] | None = None) -> None:
    """data/images.csv, data/boxes.csv, data/gallery.npz (and masks.npz, label_mapping.csv) for the test split."""
    from wsl_bench.data.schema import BOX_COLUMNS

    test = cohort.test
    images = pd.DataFrame(
        {
            "image_id": test.image_ids,
            "patient_id": test.patient_ids,
            "orig_h": test.orig_sizes[:, 0],
            "orig_w": test.orig_sizes[:, 1],
        }
    )
    labels = pd.DataFrame(test.labels.astype(int), columns=list(FINDINGS))
    images = pd.concat([images, labels], axis=1)
    with atomic_path(data_dir / "images.csv") as tmp:
        images.to_csv(tmp, index=False)
    with atomic_path(data_dir / "boxes.csv") as tmp:
        test.boxes[list(BOX_COLUMNS)].to_csv(tmp, index=False)
    idx = test.box_image_indices()
    gallery = {}
    for start in range(0, len(idx), 64):
        chunk = idx[start : start + 64]
        for i, arr in zip(chunk, gallery_image(test.load_images(chunk))):
            gallery[test.image_ids[int(i)]] = arr
    with atomic_path(data_dir / "gallery.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **gallery)
    if hasattr(test, "lesion_masks"):  # the dataset knows the true lesion pixels: the scorer adds PxAP
        from wsl_bench.heatmaps import bundle_key

        masks = {
            bundle_key(test.image_ids[int(i)], label): np.asarray(m, dtype=bool)
            for i in idx
            for label, m in test.lesion_masks(int(i)).items()
        }
        with atomic_path(data_dir / "masks.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **masks)
    readers = reader_table(test, [test.image_ids[int(i)] for i in idx])
    if readers is not None:
        with atomic_path(data_dir / READERS_FILE) as tmp:
            readers.to_csv(tmp, index=False)
    if mapping is not None:
        with atomic_path(data_dir / MAPPING_FILE) as tmp:
            pd.DataFrame(mapping, columns=["dataset", "finding", "suite", "localized"]).to_csv(tmp, index=False)


def reader_table(split, box_images: list[str]) -> pd.DataFrame | None:
    """Each reader's boxes on the split's box images (BOX_COLUMNS + reader), or None when the dataset has no
    per-reader boxes (`split.meta["reader_boxes"]`). Only the box images have maps, so only they are kept."""
    from wsl_bench.data.schema import BOX_COLUMNS

    readers = (getattr(split, "meta", None) or {}).get("reader_boxes")
    if not readers:
        return None
    keep = set(box_images)
    frames = [b.loc[b["image_id"].isin(keep), list(BOX_COLUMNS)].assign(reader=str(r))
              for r, b in sorted(readers.items(), key=lambda kv: str(kv[0]))]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*BOX_COLUMNS, "reader"])
    return table if len(table) else None


def jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class DataStage:
    """Loads the cohort (every process needs it) and writes the test split's tables (rank 0)."""

    name = title = "data"
    per_method = False

    def load(self, run: RunFolder):
        cfg = run.config
        what = cfg["data"]["name"] + (f" (train/val) and {cfg['test_data']['name']} (test)" if "test_data" in cfg else "")
        run.log(f"data: loading {what} (generated once, then read from the cache)")
        t0 = time.perf_counter()
        cohort = run_cohort(cfg, progress=bool(cfg.get("progress", False)))
        run.load_s = time.perf_counter() - t0
        return cohort

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str:
        return config_hash({"data": data_key(run.config), "fp": upstream.get("fingerprint")})

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return ()

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return ("data",)

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        return is_rank_zero()

    def run(self, run: RunFolder, cohort, method: str | None, key: str) -> None:
        t0 = time.perf_counter()
        run.log(f"data: writing test tables for {cohort.name} ({len(cohort.train)}/{len(cohort.val)}/{len(cohort.test)} images)")
        test_data = run.config.get("test_data")
        mapping = mapping_rows(get_dataset(test_data["name"])) if test_data else None
        write_data_stage(cohort, run.dir / "data", mapping)
        run.manifest.update({"data_fingerprint": cohort.fingerprint, "data_info": jsonable(cohort.info)})
        load_s = round(run.load_s + time.perf_counter() - t0, 3)
        run.mark_done("data", key, files_under(run.dir / "data", run.dir), load_s=load_s)


DATA = DataStage()
