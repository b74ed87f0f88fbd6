"""Readers for the NIH tables the scorer takes: BBox_List_2017.csv, Data_Entry_2017.csv, probs.

Every error names the file and the CSV line (header = line 1) and says what to fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.data.schema import BOX_COLUMNS
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding, finding_to_box

# The NIH header: "Image Index,Finding Label,Bbox [x,y,w,h],,," (pandas names the split columns).
_NIH_BOX_HEADER = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
KNOWN_BOX_LABELS = tuple(dict.fromkeys(list(BOX_FINDINGS) + [finding_to_box(f) for f in FINDINGS]))


def _read_csv(path: str | os.PathLike, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        # A row with more fields than the header is an error, never a silent shift into the index.
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


def read_bbox_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read NIH ``BBox_List_2017.csv`` (or a BOX_COLUMNS csv) into a validated BOX_COLUMNS DataFrame.

    Errors name the CSV line. Labels come back in box-file spelling ("Infiltrate").
    """
    raw = _read_csv(path, "box")
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


def read_labels_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Patient ids and the 14 finding labels per image, indexed by image_id.

    Accepts NIH ``Data_Entry_2017*.csv`` (Image Index, Finding Labels, Patient ID) or a run folder's
    ``data/images.csv`` (image_id, patient_id, one 0/1 column per finding).
    Returns columns ``patient_id`` + FINDINGS (float 0/1).
    """
    raw = _read_csv(path, "labels").reset_index(drop=True)
    cols = {str(c).strip(): c for c in raw.columns}

    def id_column(col) -> np.ndarray:
        vals = raw[col]
        empty = vals.isna().to_numpy() | (vals.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise ValueError(f"{path} line {int(np.flatnonzero(empty)[0]) + 2}: empty {str(col).strip()!r}")
        return vals.astype(str).str.strip().to_numpy()

    if "Image Index" in cols and "Finding Labels" in cols:
        ids = id_column(cols["Image Index"])
        pid = id_column(cols["Patient ID"]) if "Patient ID" in cols else ids
        out = pd.DataFrame({"image_id": ids, "patient_id": pid})
        sets = raw[cols["Finding Labels"]].fillna("").astype(str).str.split("|")
        for f in FINDINGS:
            out[f] = sets.map(lambda s, f=f: float(f in s)).to_numpy()
    elif "image_id" in cols:
        out = pd.DataFrame({"image_id": id_column(cols["image_id"])})
        out["patient_id"] = id_column(cols["patient_id"]) if "patient_id" in cols else out["image_id"]
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
    raw = _read_csv(path, "probabilities")
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
