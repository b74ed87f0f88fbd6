"""Readers for the NIH ChestX-ray14 tables (Data_Entry_2017*.csv, BBox_List_2017.csv, split lists)."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.labels import FINDINGS, box_to_finding

DATA_ENTRY_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")


def read_data_entry(path: str | os.PathLike) -> pd.DataFrame:
    """Data_Entry_2017*.csv -> one row per image with image_id, patient_id, view, orig_w/h and
    the 14 FINDINGS as 0/1 columns. Unknown labels are an error naming the row."""
    path = Path(path)
    try:
        # index_col=False: a row with an extra trailing field must not turn the ids into the index and
        # shift every column left; pandas drops the extra field and warns, and we check what it dropped
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            raw = pd.read_csv(path, dtype={"Patient ID": str}, index_col=False)
    except Exception as exc:  # pandas raises many types for broken CSVs
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        _check_extra_fields(path, len(raw.columns))
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
    for name, col in (("orig_w", wcol), ("orig_h", hcol)):
        if col is None:
            out[name] = 1024
            continue
        vals = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(vals) & (vals >= 1) & (vals == np.round(vals))))
        if bad.size:
            raise ValueError(f"{path} row {int(bad[0]) + 2}: column {col!r} is {raw[col].iloc[bad[0]]!r}, not a positive whole number of pixels")
        out[name] = vals.astype(np.int64)
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


def _check_extra_fields(path: Path, n_columns: int) -> None:
    """Empty extra trailing fields (a trailing comma) are harmless; a row with data past the header is an error."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if len(row) > n_columns and any(field.strip() for field in row[n_columns:]):
                raise ValueError(
                    f"{path} line {line}: {len(row)} fields but the header names {n_columns}; "
                    "remove the extra field(s) or fix the header"
                )


def read_bbox_list(path: str | os.PathLike) -> pd.DataFrame:
    """BBox_List_2017.csv -> validated BOX_COLUMNS DataFrame (box-file labels, original pixels).

    One parser for the whole project: the scorer's `wsl_bench.metrics.readers.read_bbox_csv`."""
    from wsl_bench.metrics.readers import read_bbox_csv

    return read_bbox_csv(path)


def read_id_list(path: str | os.PathLike) -> list[str]:
    """train_val_list.txt / test_list.txt -> image ids (blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]
