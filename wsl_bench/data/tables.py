"""Readers for the NIH ChestX-ray14 tables (Data_Entry_2017*.csv, BBox_List_2017.csv, split lists).

One parser per format for the whole project: the scorer's readers (`wsl_bench.metrics.readers`) call these,
`read_labels_csv` for a Data_Entry file through `data_entry_table` and `read_bbox_csv` through
`read_bbox_list`; `check_boxes` validates every box table the scorer is given.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.data.schema import BOX_COLUMNS
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding, finding_to_box

DATA_ENTRY_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
# The NIH header: "Image Index,Finding Label,Bbox [x,y,w,h],,," (pandas names the split columns).
_NIH_BOX_HEADER = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
KNOWN_BOX_LABELS = tuple(dict.fromkeys(list(BOX_FINDINGS) + [finding_to_box(f) for f in FINDINGS]))


def read_label_table(path: str | os.PathLike, what: str = "labels") -> pd.DataFrame:
    """A label table as read from disk: the first column and `Patient ID` as text, the rest as pandas infers.

    A row with empty extra trailing fields (a trailing comma) is read as if they were absent; a row with data
    past the header is an error naming its line. A missing file is a FileNotFoundError, an unreadable one a
    ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        # index_col=False: a row with an extra trailing field must not turn the ids into the index and
        # shift every column left; pandas drops the extra field and warns, and we check what it dropped
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            raw = pd.read_csv(path, dtype={0: str, "Patient ID": str}, index_col=False)
    except Exception as exc:  # pandas raises many types for broken CSVs
        raise ValueError(f"cannot read {path} as CSV: {exc}") from None
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        _check_extra_fields(path, len(raw.columns))
    return raw.reset_index(drop=True)


def _check_extra_fields(path: Path, n_columns: int) -> None:
    """Empty extra trailing fields (a trailing comma) are harmless; a row with data past the header is an error."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            for line, row in enumerate(csv.reader(fh), start=1):
                if len(row) > n_columns and any(field.strip() for field in row[n_columns:]):
                    raise ValueError(
                        f"{path} line {line}: {len(row)} fields but the header names {n_columns}; "
                        "remove the extra field(s) or fix the header"
                    )
    except csv.Error as exc:
        raise ValueError(f"cannot read {path} as CSV: {exc}") from None


def is_data_entry(raw: pd.DataFrame) -> bool:
    """Whether a table read by `read_label_table` has the Data_Entry_2017 label columns."""
    cols = {str(c).strip() for c in raw.columns}
    return "Image Index" in cols and "Finding Labels" in cols


def id_column(raw: pd.DataFrame, col, path: str | os.PathLike) -> pd.Series:
    """A column of ids, stripped; an empty cell is an error naming its line."""
    vals = raw[col]
    empty = vals.isna().to_numpy() | (vals.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise ValueError(f"{path} line {int(np.flatnonzero(empty)[0]) + 2}: empty {str(col).strip()!r}")
    return vals.astype(str).str.strip()


def data_entry_table(raw: pd.DataFrame, path: str | os.PathLike, *, patient_required: bool = True) -> pd.DataFrame:
    """The Data_Entry_2017 rules applied to a table read by `read_label_table`.

    One row per image: image_id, patient_id (leading zeros dropped: the official ids are integers), view,
    gender, orig_w/h and the 14 FINDINGS as 0/1 float32 columns. Empty ids, duplicate image ids, unknown
    findings and sizes that are not whole positive pixel counts are errors naming the line. Without a
    `Patient ID` column (allowed when not `patient_required`) each image is its own patient.
    """
    path = Path(path)
    cols = {str(c).strip(): c for c in raw.columns}
    required = DATA_ENTRY_REQUIRED if patient_required else DATA_ENTRY_REQUIRED[:2]
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; is it the official Data_Entry_2017 file?")
    ids = id_column(raw, cols["Image Index"], path)
    if "Patient ID" in cols:
        patients = id_column(raw, cols["Patient ID"], path).str.lstrip("0").replace("", "0")
    else:
        patients = ids
    out = pd.DataFrame({"image_id": ids, "patient_id": patients})
    dup = out["image_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{path} line {i + 2}: duplicate image id {out['image_id'].iloc[i]!r}")
    out["view"] = raw[cols["View Position"]].astype(str) if "View Position" in cols else "PA"
    out["gender"] = raw[cols["Patient Gender"]].astype(str) if "Patient Gender" in cols else "U"
    wcol = next((cols[c] for c in cols if c.startswith("OriginalImage[Width")), None)
    hcol = cols.get("Height]")
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
    for r, s in enumerate(raw[cols["Finding Labels"]].fillna("").astype(str)):
        for lab in s.split("|"):
            lab = lab.strip()
            if lab in ("No Finding", ""):
                continue
            j = index.get(box_to_finding(lab))
            if j is None:
                raise ValueError(f"{path} line {r + 2}: unknown finding {lab!r}; expected one of {', '.join(FINDINGS)} or 'No Finding'")
            labels[r, j] = 1.0
    for j, f in enumerate(FINDINGS):
        out[f] = labels[:, j]
    return out


def read_data_entry(path: str | os.PathLike) -> pd.DataFrame:
    """Data_Entry_2017*.csv -> one row per image with image_id, patient_id, view, gender, orig_w/h and
    the 14 FINDINGS as 0/1 columns (`data_entry_table`). Errors name the file and the line."""
    return data_entry_table(read_label_table(path, "Data_Entry"), path)


def read_plain_csv(path: str | os.PathLike, what: str) -> pd.DataFrame:
    """A CSV with its first column as text; a row with more fields than the header is an error (never a silent
    shift into the index). A missing file is a FileNotFoundError, an unreadable one a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype={0: str}, index_col=False)
    except pd.errors.ParserWarning:
        raise ValueError(f"{path}: a row has more fields than the header; check the delimiters and quoting") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read as CSV ({exc})") from None


def normalize_box_label(label, where: str) -> str:
    """Box-file spelling of a finding label; a ValueError naming `where` for an unknown one."""
    name = finding_to_box(str(label).strip())
    if name not in KNOWN_BOX_LABELS:
        raise ValueError(
            f"{where}: unknown finding label {label!r}; expected one of {', '.join(BOX_FINDINGS)} "
            f"(or another ChestX-ray14 finding)"
        )
    return name


def check_boxes(boxes: pd.DataFrame, source: str = "boxes", line_offset: int | None = None) -> pd.DataFrame:
    """Validate a BOX_COLUMNS table; return a clean copy (str ids, box-file labels, float x/y/w/h).

    Rows are named as ``{source} row i`` (0-based), or as CSV lines when `line_offset` is given.
    """
    missing = [c for c in BOX_COLUMNS if c not in boxes.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {list(BOX_COLUMNS)}")
    df = boxes.loc[:, list(BOX_COLUMNS)].reset_index(drop=True).copy()

    def where(i: int) -> str:
        return f"{source} line {i + line_offset}" if line_offset is not None else f"{source} row {i}"

    ids = df["image_id"]
    for i in np.flatnonzero(ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy()):
        raise ValueError(f"{where(i)}: empty image id")
    df["image_id"] = ids.astype(str).str.strip()
    df["label"] = [normalize_box_label(v, where(i)) for i, v in enumerate(df["label"])]
    for col in ("x", "y", "w", "h"):
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            i = bad[0]
            raise ValueError(f"{where(i)}: box {col}={boxes[col].iloc[i]!r} is not a finite number")
        df[col] = vals
    bad = np.flatnonzero((df["w"].to_numpy() <= 0) | (df["h"].to_numpy() <= 0))
    if bad.size:
        i = bad[0]
        raise ValueError(f"{where(i)}: box width/height must be positive, got w={df['w'][i]}, h={df['h'][i]}")
    return df


def read_bbox_list(path: str | os.PathLike) -> pd.DataFrame:
    """NIH ``BBox_List_2017.csv`` (or a BOX_COLUMNS csv) -> validated BOX_COLUMNS DataFrame (original pixels).

    Errors name the CSV line. Labels come back in box-file spelling ("Infiltrate").
    """
    raw = read_plain_csv(path, "box")
    cols = [str(c).strip() for c in raw.columns]
    if all(c in cols for c in BOX_COLUMNS):
        df = raw.rename(columns=dict(zip(raw.columns, cols)))
    elif tuple(cols[:6]) == _NIH_BOX_HEADER:
        df = raw.iloc[:, :6].copy()
        df.columns = list(BOX_COLUMNS)
    else:
        raise ValueError(
            f"{path}: unrecognised box header {cols[:6]}; expected the NIH BBox_List_2017.csv header "
            f"'Image Index,Finding Label,Bbox [x,y,w,h]' or the columns {','.join(BOX_COLUMNS)}"
        )
    return check_boxes(df, source=str(path), line_offset=2)


def read_id_list(path: str | os.PathLike) -> list[str]:
    """train_val_list.txt / test_list.txt -> image ids (blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]
