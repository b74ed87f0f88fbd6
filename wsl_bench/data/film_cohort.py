"""Films joined with their annotations, as a Cohort: the cohort side of the Kaggle-layout datasets (RSNA
Pneumonia, SIIM-ACR Pneumothorax, VinDr-CXR).

A dataset's `scan(root)` finds its films (`wsl_bench.data.films`) and joins them with its annotations in the
suite's vocabulary (`Scan`, `suite_labels`, `suite_boxes`); `load_cohort` splits a scan patient-disjoint into
train/val/test. `FilmLayoutDataset` is the registered datasets' shared base: loading, `info` and the split
settings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from wsl_bench.data.films import FilmDataset, split_column
from wsl_bench.data.registry import Dataset, DatasetError
from wsl_bench.data.schema import BOX_COLUMNS, Cohort
from wsl_bench.labels import BOX_FINDINGS, FINDINGS


@dataclass
class Scan:
    """A dataset's annotations joined with its films on disk, already in the suite's vocabulary.

    `images`: one row per annotated film found on disk (image_id, path, patient_id, height, width, view,
    then the 14 FINDINGS as 0/1); `boxes`: BOX_COLUMNS over those films. Over every listed image:
    `source_counts`, the annotations per own finding; `dropped`, those of findings mapped onto no suite
    finding; `unscored_boxes`, the boxes of findings mapped onto suite image labels only."""

    name: str
    root: Path
    images: pd.DataFrame
    boxes: pd.DataFrame
    listed: int
    missing_images: list[str]
    source_counts: dict[str, int]
    dropped: dict[str, int]
    digest: str
    missing_files: list[str] = field(default_factory=list)
    reader_boxes: dict[str, pd.DataFrame] | None = None  # several readers: each reader's boxes, BOX_COLUMNS
    extra: dict[str, Any] = field(default_factory=dict)  # what a dataset's splits need beyond the tables
    unscored_boxes: dict[str, int] = field(default_factory=dict)  # boxes of findings mapped onto image labels only


def suite_labels(findings_per_image: dict[str, set[str]], image_ids: list[str]) -> np.ndarray:
    """[N,14] 0/1 over FINDINGS from each image's set of suite findings."""
    out = np.zeros((len(image_ids), len(FINDINGS)), dtype=np.float32)
    col = {f: j for j, f in enumerate(FINDINGS)}
    for i, iid in enumerate(image_ids):
        for f in findings_per_image.get(iid, ()):
            if f in col:
                out[i, col[f]] = 1.0
    return out


def suite_boxes(own: pd.DataFrame, to_suite: dict[str, tuple[str, ...]]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Own-vocabulary boxes (image_id, finding, x, y, w, h, ...) -> BOX_COLUMNS rows, one per suite box
    finding each maps onto (a box mapped onto two findings is scored once as each); boxes of findings with
    no suite box finding are dropped and counted per finding."""
    parts, dropped = [], {}
    for finding, rows in own.groupby("finding", sort=True):
        targets = [t for t in to_suite.get(str(finding), ()) if t in BOX_FINDINGS]
        if not targets:
            dropped[str(finding)] = int(len(rows))
        for t in targets:
            parts.append(rows.assign(label=t))
    if not parts:
        return empty_boxes(), dropped
    out = pd.concat(parts).sort_index(kind="stable")
    return out[list(BOX_COLUMNS)].reset_index(drop=True), dropped


def empty_boxes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("image_id", "label") else np.float64) for c in BOX_COLUMNS})


def load_cohort(scan: Scan, cfg: dict[str, Any], seed: int, progress: bool = False,
                split_cls: type[FilmDataset] = FilmDataset, split_kwargs: Callable[[list[str]], dict] | None = None) -> Cohort:
    """The Cohort of a scan: patient-disjoint train/val/test (`split_patients`), boxes in every split that
    holds their films, and a fingerprint over the config, the films found and the annotation file."""
    if scan.images.empty:
        raise DatasetError(f"{scan.name} data root {scan.root}: none of the {scan.listed} annotated images is on disk; "
                           "put the image folder of the official layout under the root")
    table = scan.images
    split_of = split_column(table["patient_id"], cfg, seed)
    size = int(cfg["image_size"])

    def make(split: str) -> FilmDataset:
        rows = table[split_of == split]
        ids = rows["image_id"].tolist()
        keep = set(ids)
        meta: dict[str, Any] = {"split": split, "dataset": scan.name}
        if scan.reader_boxes is not None:
            meta["reader_boxes"] = {r: b[b["image_id"].isin(keep)].reset_index(drop=True) for r, b in scan.reader_boxes.items()}
        return split_cls(
            rows["path"].tolist(), ids, rows["patient_id"].tolist(), rows[list(FINDINGS)].to_numpy(np.float32).copy(),
            rows[["height", "width"]].to_numpy(np.int64), size,
            scan.boxes[scan.boxes["image_id"].isin(keep)].reset_index(drop=True),
            meta=meta, views=rows["view"].tolist(), preload=cfg.get("preload"), progress=progress,
            **(split_kwargs(ids) if split_kwargs else {}),
        )

    train, val, test = make("train"), make("val"), make("test")
    settings = [scan.name, size, seed, cfg["test_fraction"], cfg["val_fraction"], cfg["split_seed"], scan.digest]
    fp_src = "|".join([str(v) for v in settings] + sorted(table["image_id"]))
    info = cohort_info(scan)
    info.update({
        "image_size": size,
        "n_images": {"train": len(train), "val": len(val), "test": len(test)},
        "split_rule": f"patient-disjoint: test {cfg['test_fraction']} of patients (split_seed {cfg['split_seed']}), "
                      f"val {cfg['val_fraction']} of the rest (seed {seed})",
        "warnings": [] if len(test.box_image_indices()) else ["no test image has a box: localization cannot be scored"],
    })
    return Cohort(name=scan.name, train=train, val=val, test=test,
                  fingerprint=f"{scan.name}-" + hashlib.sha256(fp_src.encode()).hexdigest()[:16], info=info)


def cohort_info(scan: Scan) -> dict[str, Any]:
    """Counts over the films found: images, labels and boxes per suite finding, what was missing or dropped."""
    b = scan.boxes
    out: dict[str, Any] = {
        "dataset": scan.name,
        "root": str(scan.root),
        "listed_images": scan.listed,
        "images": int(len(scan.images)),
        "missing_images": len(scan.missing_images),
        "missing_image_ids": scan.missing_images[:20],
        "missing_files": scan.missing_files,
        "labels_per_finding": {f: int(scan.images[f].sum()) for f in FINDINGS if len(scan.images) and scan.images[f].sum()},
        "n_boxes": int(len(b)),
        "boxes_per_label": {str(k): int(v) for k, v in b.groupby("label").size().items()} if len(b) else {},
        "box_images": int(b["image_id"].nunique()) if len(b) else 0,
        "source_counts": dict(scan.source_counts),
        "dropped": dict(scan.dropped),
        "unscored_boxes": dict(scan.unscored_boxes),
    }
    if scan.reader_boxes is not None:
        out["boxes_per_reader"] = {r: int(len(v)) for r, v in sorted(scan.reader_boxes.items())}
    return out


def scan_info(scan: Scan, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """`cohort_info` plus the split sizes the loader would make, without decoding any pixel."""
    out = cohort_info(scan)
    if len(scan.images):
        counts = pd.Series(split_column(scan.images["patient_id"], cfg, seed)).value_counts()
        out["split"] = {s: int(counts.get(s, 0)) for s in ("train", "val", "test")}
    else:
        out["split"] = {"train": 0, "val": 0, "test": 0}
    return out


class FilmLayoutDataset(Dataset):
    """A dataset read from an official folder layout of films plus an annotation csv. Subclasses
    implement `scan(root)`; loading, `info` and the split settings are shared."""

    config_keys = frozenset({"name", "image_size", "val_fraction", "test_fraction", "split_seed", "preload"})
    defaults = {"image_size": 224, "val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0, "preload": None}
    split_cls: type[FilmDataset] = FilmDataset

    def scan(self, root: str | os.PathLike, progress: bool = False) -> Scan:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_kwargs(self, scan: Scan) -> Callable[[list[str]], dict] | None:
        """Extra keyword arguments of each split (given its image ids); None for none."""
        return None

    def root_of(self, root: str | os.PathLike | None) -> Path:
        if root is None:
            raise DatasetError(f"dataset {self.name!r} needs a data root ({self.source})")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DatasetError(f"{self.name} data root {path} is not a folder; {self.source}")
        return path

    def load(self, data_cfg: dict[str, Any], seed: int, progress: bool = False) -> Cohort:
        cfg = self.resolve_config(data_cfg)
        scan = self.scan(cfg["root"], progress=progress)
        return load_cohort(scan, cfg, seed, progress, split_cls=self.split_cls, split_kwargs=self.split_kwargs(scan))

    def info(self, root: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Any]:
        return scan_info(self.scan(self.root_of(root)), {**self.defaults}, seed)
