"""Readers for the tables the scorer takes: BBox_List_2017.csv, labels (Data_Entry_2017.csv or images.csv), probs.

Every error names the file and the CSV line (header = line 1) and says what to fix. The box file and the
Data_Entry file are parsed by `wsl_bench.data.tables` (one parser per format).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from wsl_bench.data.tables import (
    KNOWN_BOX_LABELS,
    check_boxes,
    data_entry_table,
    id_column,
    is_data_entry,
    normalize_box_label,
    read_bbox_list,
    read_label_table,
    read_plain_csv,
)
from wsl_bench.labels import FINDINGS, box_to_finding

__all__ = ["KNOWN_BOX_LABELS", "check_boxes", "normalize_box_label", "read_bbox_csv", "read_labels_csv", "read_probs_csv"]


def read_bbox_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read NIH ``BBox_List_2017.csv`` (or a BOX_COLUMNS csv) into a validated BOX_COLUMNS DataFrame.

    The project's one box-file parser, `wsl_bench.data.tables.read_bbox_list`: errors name the CSV line, labels
    come back in box-file spelling ("Infiltrate").
    """
    return read_bbox_list(path)


def read_labels_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Patient ids and the 14 finding labels per image, indexed by image_id.

    Accepts NIH ``Data_Entry_2017*.csv`` (Image Index, Finding Labels, optional Patient ID; parsed by the
    project's one Data_Entry parser, `wsl_bench.data.tables.data_entry_table`) or a run folder's
    ``data/images.csv`` (image_id, patient_id, one 0/1 column per finding).
    Returns columns ``patient_id`` + FINDINGS (float 0/1).
    """
    raw = read_label_table(path, "labels")
    cols = {str(c).strip(): c for c in raw.columns}

    if is_data_entry(raw):
        entries = data_entry_table(raw, path, patient_required=False)
        out = entries[["image_id", "patient_id"]].copy()
        for f in FINDINGS:
            out[f] = entries[f].to_numpy(dtype=np.float64)
    elif "image_id" in cols:
        out = pd.DataFrame({"image_id": id_column(raw, cols["image_id"], path).to_numpy()})
        out["patient_id"] = id_column(raw, cols["patient_id"], path).to_numpy() if "patient_id" in cols else out["image_id"]
        for f in FINDINGS:
            if f in cols:
                vals = pd.to_numeric(raw[cols[f]], errors="coerce").to_numpy(dtype=np.float64)
                bad = np.flatnonzero(~np.isin(vals, (0.0, 1.0)))
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(f"{path} line {i + 2}: column {f!r} is {raw[cols[f]].iloc[i]!r}; labels must be 0 or 1")
                out[f] = vals
    else:
        raise ValueError(
            f"{path}: expected NIH Data_Entry columns 'Image Index,Finding Labels,...,Patient ID' "
            f"or a run-folder images.csv with 'image_id,patient_id,<findings>'"
        )
    dup = out["image_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{path} line {i + 2}: duplicate image id {out['image_id'].iloc[i]!r}")
    return out.set_index("image_id")


def read_probs_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Predicted probabilities: image_id + one column per finding (any subset of FINDINGS)."""
    raw = read_plain_csv(path, "probabilities")
    if "image_id" not in raw.columns:
        raise ValueError(f"{path}: expected a column 'image_id' and one column per finding")
    df = raw.set_index(raw["image_id"].astype(str)).drop(columns=["image_id"])
    cols = [c for c in df.columns if box_to_finding(str(c)) in FINDINGS]
    if not cols:
        raise ValueError(f"{path}: no finding columns; expected some of {', '.join(FINDINGS)}")
    df = df[cols].rename(columns=lambda c: box_to_finding(str(c))).apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(df.to_numpy(dtype=np.float64))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path} line {r + 2}: column {df.columns[c]!r} is not a finite number")
    return df
