"""VinDr-CXR (the VinBigData Kaggle training set) as a Cohort: three radiologists per film, each box kept
per reader and fused into one consensus.

Layout under the root, as in https://www.kaggle.com/c/vinbigdata-chest-xray-abnormalities-detection:
  train.csv    image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max ("No finding" rows have no box)
  train/<image_id>.dicom
PNG/JPEG conversions at the original size in `train/` are read too (the DICOM wins when both exist).

Image labels and the consensus are by majority of the readers of a film (2 of its 3):
- a film is labelled with a finding when a majority of its readers marked that finding;
- consensus boxes (`fuse_readers`): boxes of one finding on one film from different readers are linked when
  their IoU is at least FUSE_IOU; each linked group marked by a majority of the film's readers becomes one
  box whose corners are the mean over its readers of each reader's mean corners; other groups are dropped
  from the consensus (they stay in the per-reader tables).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsl_bench.data.film_cohort import FilmLayoutDataset, Scan, suite_boxes, suite_labels
from wsl_bench.data.films import (
    annotation_digest, check_id, check_inside, film_rows, index_films, patient_or_id, read_csv, wheel_hint,
)
from wsl_bench.data.mirror import draw_box_lesion, format_number, image_order, wheel_path, write_mirror_films
from wsl_bench.data.registry import DatasetError, register_dataset
from wsl_bench.io import write_text
from wsl_bench.labels import FINDINGS

CSV = "train.csv"
IMAGE_DIR = "train"
WHEEL_CSV = "vinbigdata-train.csv.gz"
NO_FINDING = "No finding"
# The 14 local findings with their class_id, in class_id order; "No finding" is class 14.
CLASSES: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis",
)
FUSE_IOU = 0.5
# VinDr films vary in size and the csv does not say; a mirror frames each film as a square of this side
# (about the real films' extent: the median heart centre sits at x = 1410), grown to the next multiple of
# MIRROR_STEP when the film's boxes reach further (23 of the 15,000 films).
MIRROR_SIDE = 3072
MIRROR_STEP = 64
SOURCE = ("the VinDr-CXR files come from https://www.kaggle.com/c/vinbigdata-chest-xray-abnormalities-detection "
          f"({IMAGE_DIR}/*.dicom and {CSV}); the full release is at https://physionet.org/content/vindr-cxr/")
COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
CORNERS = ("x_min", "y_min", "x_max", "y_max")


def read_annotations(path: str | os.PathLike) -> pd.DataFrame:
    """train.csv -> row (csv line), image_id, finding, reader, x_min, y_min, x_max, y_max.

    Class names must be the 15 of the release; "No finding" rows carry no box and every other row a
    box with x_max > x_min and y_max > y_min. Errors name the csv line."""
    path = Path(path)
    raw = read_csv(path, COLUMNS, SOURCE + wheel_hint(WHEEL_CSV), dtype={"image_id": str, "class_name": str, "rad_id": str})
    out = pd.DataFrame({"row": np.arange(len(raw)) + 2})
    out["image_id"] = [check_id(i, f"{path} row {r}") for i, r in zip(raw["image_id"].fillna(""), out["row"])]
    names = raw["class_name"].fillna("").str.strip()
    known = set(CLASSES) | {NO_FINDING}
    bad = np.flatnonzero(~names.isin(known).to_numpy())
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: unknown class_name {names.iloc[bad[0]]!r}; expected one of {', '.join(sorted(known))}")
    out["finding"] = names.to_numpy()
    readers = raw["rad_id"].fillna("").str.strip()
    bad = np.flatnonzero((readers == "").to_numpy())
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: empty rad_id; every row names the radiologist who read the film")
    out["reader"] = readers.to_numpy()
    for c in CORNERS:
        vals = pd.to_numeric(raw[c], errors="coerce").to_numpy(np.float64)
        nonnum = np.flatnonzero(np.isnan(vals) & raw[c].notna().to_numpy())
        if nonnum.size:
            raise DatasetError(f"{path} row {nonnum[0] + 2}: {c} is {raw[c].iloc[nonnum[0]]!r}, not a number")
        out[c] = vals
    xy = out[list(CORNERS)].to_numpy()
    none = out["finding"].to_numpy() == NO_FINDING
    bad = np.flatnonzero(none & ~np.isnan(xy).all(1))
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: a '{NO_FINDING}' row with box values; clear x_min, y_min, x_max, y_max or name the finding")
    ok = np.isfinite(xy).all(1) & (xy[:, 2] > xy[:, 0]) & (xy[:, 3] > xy[:, 1])
    bad = np.flatnonzero(~none & ~ok)
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: {out['finding'].iloc[bad[0]]} needs a box with x_max > x_min and y_max > y_min; fix or remove the row")
    return out


def majority(n_readers: int) -> int:
    """How many of a film's readers make a majority: more than half."""
    return n_readers // 2 + 1


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes [N,4] x [M,4]."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _groups(corners: np.ndarray, readers: np.ndarray, iou: float) -> list[np.ndarray]:
    """Connected groups of boxes linked by IoU >= iou between different readers (union-find)."""
    n = len(corners)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked = (_iou(corners, corners) >= iou) & (readers[:, None] != readers[None, :])
    for i, j in zip(*np.nonzero(np.triu(linked, 1))):
        parent[find(int(i))] = find(int(j))
    roots = np.array([find(i) for i in range(n)])
    return [np.flatnonzero(roots == r) for r in dict.fromkeys(roots.tolist())]


def fuse_readers(boxes: pd.DataFrame, readers_per_film: dict[str, int], iou: float = FUSE_IOU) -> pd.DataFrame:
    """The consensus of several readers' boxes (columns image_id, finding, reader, x_min, y_min, x_max, y_max):
    image_id, finding, x_min, y_min, x_max, y_max, n_readers. See the module docstring for the rule."""
    cols = ["image_id", "finding", *CORNERS, "n_readers"]
    if boxes.empty:
        return pd.DataFrame(columns=cols)
    b = boxes.sort_values(["image_id", "finding"], kind="stable")
    ids, findings = b["image_id"].to_numpy(object), b["finding"].to_numpy(object)
    who, corners = b["reader"].to_numpy(object), b[list(CORNERS)].to_numpy(np.float64)
    new_group = np.ones(len(b), dtype=bool)
    new_group[1:] = (ids[1:] != ids[:-1]) | (findings[1:] != findings[:-1])
    starts = np.flatnonzero(new_group)
    out = []
    for s, e in zip(starts, [*starts[1:], len(b)]):
        need = majority(readers_per_film[ids[s]])
        if e - s == 1:
            if need <= 1:
                out.append((ids[s], findings[s], *corners[s].tolist(), 1))
            continue
        c, w = corners[s:e], who[s:e]
        for members in _groups(c, w, iou):
            names = list(dict.fromkeys(w[members].tolist()))
            if len(names) >= need:
                per_reader = np.stack([c[members][w[members] == r].mean(0) for r in names])
                out.append((ids[s], findings[s], *per_reader.mean(0).tolist(), len(names)))
    return pd.DataFrame(out, columns=cols)


def _xywh(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(x=df["x_min"], y=df["y_min"], w=df["x_max"] - df["x_min"], h=df["y_max"] - df["y_min"])


@register_dataset
class VinDrCXR(FilmLayoutDataset):
    """VinDr-CXR: 15,000 films, each read by 3 of 17 radiologists; 36,096 boxes over 14 local findings."""

    name = "vindr-cxr"
    description = "VinDr-CXR (VinBigData training set): 15,000 films, 3 readers each, boxes of 14 findings fused by majority"
    source = SOURCE
    root_hint = f"a folder with {CSV} and {IMAGE_DIR}/"
    labels = CLASSES
    localizes = CLASSES
    to_suite = {
        "Atelectasis": ("Atelectasis",),
        "Cardiomegaly": ("Cardiomegaly",),
        "Pleural effusion": ("Effusion",),
        "Infiltration": ("Infiltration", "Infiltrate"),
        "Nodule/Mass": ("Mass", "Nodule"),
        "Pneumothorax": ("Pneumothorax",),
        "Consolidation": ("Consolidation",),
        "Pleural thickening": ("Pleural_Thickening",),
        "Pulmonary fibrosis": ("Fibrosis",),
    }
    readers = True

    def scan(self, root: str | os.PathLike, progress: bool = False) -> Scan:
        root = self.root_of(root)
        csv = root / CSV
        table = read_annotations(csv)
        folder = root / IMAGE_DIR
        listed = list(dict.fromkeys(table["image_id"]))
        films, missing = film_rows(listed, index_films([folder]) if folder.is_dir() else {}, self.name, patient_or_id, progress)
        sizes = dict(zip(films["image_id"], zip(films["height"], films["width"])))
        marked = table[table["finding"] != NO_FINDING]
        present = _xywh(marked[marked["image_id"].isin(sizes)])
        check_inside(present, sizes, str(csv))
        n_readers = table.groupby("image_id")["reader"].nunique().to_dict()
        votes = marked.groupby(["image_id", "finding"])["reader"].nunique()
        findings: dict[str, set[str]] = {}
        for (iid, finding), n in votes.items():
            if n >= majority(n_readers[iid]):
                findings.setdefault(iid, set()).update(self.to_suite.get(finding, ()))
        labels = suite_labels(findings, films["image_id"].tolist())
        images = pd.concat([films, pd.DataFrame(labels, columns=list(FINDINGS), index=films.index)], axis=1)
        boxes, _ = suite_boxes(_xywh(fuse_readers(present, n_readers)), self.to_suite)
        reader_boxes = {str(r): suite_boxes(g, self.to_suite)[0] for r, g in present.groupby("reader", sort=True)}
        _, no_box = suite_boxes(_xywh(marked), self.to_suite)
        counts = marked.groupby("finding").size()
        return Scan(self.name, root, images, boxes, len(listed), missing, {str(k): int(v) for k, v in counts.items()},
                    {f: n for f, n in no_box.items() if f not in self.to_suite}, annotation_digest(csv),
                    missing_files=[] if folder.is_dir() else [f"{IMAGE_DIR}/"], reader_boxes=reader_boxes,
                    unscored_boxes={f: n for f, n in no_box.items() if f in self.to_suite})

    def export_mirror(self, out: str | os.PathLike, *, size: int = 256, seed: int = 0, progress: bool = False,
                      images: str | int = "boxed") -> dict[str, Any]:
        """The VinDr layout with every row of the wheel's vinbigdata-train.csv (each film framed as a square,
        see MIRROR_SIDE, and scaled to `size`) and synthetic DICOM films for `images`: "all" (15,000),
        "boxed" (the 4,394 with a box) or the first n films. Each reader's box adds a faint opacity, so
        boxes the readers agree on are brighter. The mirror's PatientID is the film's image_id."""
        out = Path(out)
        table = read_annotations(wheel_path(WHEEL_CSV))
        reach = table.groupby("image_id")[["x_max", "y_max"]].max().max(axis=1).to_dict()
        scale = {iid: size / max(MIRROR_SIDE, MIRROR_STEP * math.ceil(v / MIRROR_STEP) if np.isfinite(v) else 0)
                 for iid, v in reach.items()}
        class_id = {c: i for i, c in enumerate(CLASSES)} | {NO_FINDING: len(CLASSES)}
        lines, by_id = [",".join(COLUMNS)], {}
        for r in table.itertuples(index=False):
            s = scale[r.image_id]
            corners = [r.x_min * s, r.y_min * s, r.x_max * s, r.y_max * s]
            lines.append(",".join([r.image_id, r.finding, str(class_id[r.finding]), r.reader, *map(format_number, corners)]))
            if r.finding != NO_FINDING:
                by_id.setdefault(r.image_id, []).append(corners)
        write_text(out / CSV, "\n".join(lines) + "\n")
        listed = list(dict.fromkeys(table["image_id"]))
        ids = image_order(listed, set(by_id), images)

        def draw(iid: str, img: np.ndarray) -> None:
            for x0, y0, x1, y1 in by_id.get(iid, ()):
                draw_box_lesion(img, x0, y0, x1 - x0, y1 - y0, strength=0.1)

        written = write_mirror_films(ids, size, seed, lambda iid: out / IMAGE_DIR / f"{iid}.dicom", draw,
                                     lambda iid: {"PatientID": iid}, progress, desc="writing VinDr mirror films")
        return {"out": str(out), "dataset": self.name, "size": size, "listed_images": len(listed), "images": written,
                "rows": int(len(table)), "boxes": int(sum(map(len, by_id.values()))), "box_images": len(by_id)}

