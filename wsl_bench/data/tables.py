"""Readers for the NIH ChestX-ray14 tables (Data_Entry_2017*.csv, BBox_List_2017.csv, split lists)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.data.schema import BOX_COLUMNS
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding

DATA_ENTRY_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")


def read_data_entry(path: str | os.PathLike) -> pd.DataFrame:
    """Data_Entry_2017*.csv -> one row per image with image_id, patient_id, view, orig_w/h and
    the 14 FINDINGS as 0/1 columns. Unknown labels are an error naming the row."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype={"Patient ID": str})
    except Exception as exc:  # pandas raises many types for broken CSVs
        raise ValueError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in DATA_ENTRY_REQUIRED if c not in raw.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; is it the official Data_Entry_2017 file?")
    out = pd.DataFrame(
        {
            "image_id": raw["Image Index"].astype(str),
            "patient_id": raw["Patient ID"].astype(str).str.lstrip("0").replace("", "0"),
        }
    )
    out["view"] = raw["View Position"].astype(str) if "View Position" in raw.columns else "PA"
    out["gender"] = raw["Patient Gender"].astype(str) if "Patient Gender" in raw.columns else "U"
    wcol = next((c for c in raw.columns if c.startswith("OriginalImage[Width")), None)
    hcol = "Height]" if "Height]" in raw.columns else None
    out["orig_w"] = raw[wcol].astype(int) if wcol else 1024
    out["orig_h"] = raw[hcol].astype(int) if hcol else 1024
    labels = np.zeros((len(raw), len(FINDINGS)), dtype=np.float32)
    index = {f: i for i, f in enumerate(FINDINGS)}
    for r, s in enumerate(raw["Finding Labels"].astype(str)):
        for lab in s.split("|"):
            lab = lab.strip()
            if lab in ("No Finding", ""):
                continue
            j = index.get(box_to_finding(lab))
            if j is None:
                raise ValueError(f"{path} row {r + 2}: unknown finding {lab!r}; expected one of {', '.join(FINDINGS)}")
            labels[r, j] = 1.0
    for j, f in enumerate(FINDINGS):
        out[f] = labels[:, j]
    return out


def read_bbox_list(path: str | os.PathLike) -> pd.DataFrame:
    """BBox_List_2017.csv -> BOX_COLUMNS DataFrame (label in box-file spelling, 1024-px coords).

    Accepts the official header (`Image Index,Finding Label,Bbox [x,y,w,h]`) or BOX_COLUMNS names.
    Bad rows are an error naming the row."""
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except Exception as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if set(BOX_COLUMNS) <= set(raw.columns):
        df = raw[list(BOX_COLUMNS)].copy()
    else:
        if raw.shape[1] < 6 or "Image Index" not in raw.columns:
            raise ValueError(f"{path} is not a BBox_List_2017 file (expected columns Image Index, Finding Label, Bbox [x,y,w,h])")
        df = raw.iloc[:, :6].copy()
        df.columns = list(BOX_COLUMNS)
    df["image_id"] = df["image_id"].astype(str)
    df["label"] = df["label"].astype(str).str.strip().replace({"Infiltration": "Infiltrate"})
    bad = ~df["label"].isin(BOX_FINDINGS)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path} row {r + 2}: unknown box label {df['label'].iloc[r]!r}; expected one of {', '.join(BOX_FINDINGS)}")
    for c in ("x", "y", "w", "h"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = df[["x", "y", "w", "h"]].isna().any(axis=1) | (df["w"] <= 0) | (df["h"] <= 0)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path} row {r + 2}: box coordinates must be numbers with w, h > 0")
    return df.reset_index(drop=True)


def read_id_list(path: str | os.PathLike) -> list[str]:
    """train_val_list.txt / test_list.txt -> image ids (blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]
