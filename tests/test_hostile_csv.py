"""Hostile CSV tables: property-based fuzzing of the box and label readers.

Readers: `wsl_bench.metrics.readers.read_bbox_csv / read_labels_csv / read_probs_csv` (scorer) and
`wsl_bench.data.tables.read_data_entry` (the data package). "Clear error" means a ValueError (or
FileNotFoundError) whose message names the CSV file; whatever a reader returns instead is clean
(valid ids, known labels, finite numbers).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsl_bench.data.schema import BOX_COLUMNS
from wsl_bench.data.tables import read_data_entry
from wsl_bench.labels import FINDINGS
from wsl_bench.metrics.readers import KNOWN_BOX_LABELS, read_bbox_csv, read_labels_csv, read_probs_csv

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NIH_BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                     "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
CELLS = st.one_of(
    st.sampled_from(["Mass", "Infiltrate", "Infiltration", "Effusion|Mass", "No Finding", "Fracture", "", " ",
                     "nan", "inf", "-inf", "-1", "0", "1e309", "00000001_000.png", "a.png", "../etc/passwd",
                     '"', '"a,b"', "1,2", "\x00", "\u00e9", "NaN", "1024", "2.5", "-0"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=8),
)


def rows(n_cols: int):
    return st.lists(st.lists(CELLS, min_size=0, max_size=n_cols + 2), max_size=5)


def csv_text(header: str, body: list[list[str]]) -> str:
    return "\n".join([header] + [",".join(r) for r in body]) + "\n"


def clear(call, path):
    """Run a reader; a raised error must be a known type naming the file. Returns the result or None."""
    try:
        return call(path)
    except (ValueError, FileNotFoundError) as exc:
        assert str(path) in str(exc), f"error does not name the file: {exc!r}"
        return None


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))


@pytest.fixture
def csv_path(tmp_path):
    return tmp_path / "table.csv"


def check_boxes_clean(df):
    assert list(df.columns) == list(BOX_COLUMNS)
    assert df["image_id"].map(lambda s: isinstance(s, str) and s.strip() != "").all()
    assert df["label"].isin(KNOWN_BOX_LABELS).all()
    xywh = df[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    assert np.isfinite(xywh).all() and (xywh[:, 2:] > 0).all()


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_box_reader_on_arbitrary_bytes(csv_path, content):
    write(csv_path, content)
    out = clear(read_bbox_csv, csv_path)
    if out is not None:
        check_boxes_clean(out)


@FUZZ
@given(header=st.sampled_from([NIH_BOX_HEADER, ",".join(BOX_COLUMNS), "image_id,label,x,y,w", "x,y"]), body=rows(6))
def test_box_reader_on_structured_rows(csv_path, header, body):
    write(csv_path, csv_text(header, body))
    out = clear(read_bbox_csv, csv_path)
    if out is not None:
        check_boxes_clean(out)


def check_labels_clean(df):
    assert df.index.is_unique and df.index.map(lambda s: isinstance(s, str) and s != "").all()
    assert "patient_id" in df.columns
    vals = df[[f for f in FINDINGS if f in df.columns]].to_numpy(dtype=np.float64)
    assert np.isin(vals, (0.0, 1.0)).all()


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300)),
       header=st.sampled_from([DATA_ENTRY_HEADER, "image_id,patient_id," + ",".join(FINDINGS), ""]), body=rows(11))
def test_label_readers(csv_path, content, header, body):
    for text in (content, csv_text(header, body)):
        write(csv_path, text)
        out = clear(read_labels_csv, csv_path)
        if out is not None:
            check_labels_clean(out)
        entries = clear(read_data_entry, csv_path)
        if entries is not None:
            assert entries["orig_w"].dtype.kind in "iu" and entries["orig_h"].dtype.kind in "iu"
            assert np.isin(entries[list(FINDINGS)].to_numpy(), (0.0, 1.0)).all()


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200)),
       body=rows(4), cols=st.lists(st.sampled_from(["image_id", "Mass", "Infiltrate", "Nodule", "x", ""]), max_size=4))
def test_probs_reader(csv_path, content, body, cols):
    for text in (content, csv_text(",".join(cols), body)):
        write(csv_path, text)
        out = clear(read_probs_csv, csv_path)
        if out is not None:
            assert np.isfinite(out.to_numpy(dtype=np.float64)).all() and set(out.columns) <= set(FINDINGS)


def test_known_hostile_rows_give_row_numbered_errors(csv_path):
    write(csv_path, NIH_BOX_HEADER + "\n" + "a.png,Mass,1,2,3,4\n,Mass,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"table\.csv line 3: empty image id"):
        read_bbox_csv(csv_path)
    write(csv_path, "image_id,patient_id,Mass\na.png,1,1\nb.png,2,maybe\n")
    with pytest.raises(ValueError, match=r"table\.csv line 3: column 'Mass'"):
        read_labels_csv(csv_path)
    write(csv_path, DATA_ENTRY_HEADER + "\na.png,Mass,0,1,50,M,PA,big,1024,0.1,0.1\n")
    with pytest.raises(ValueError, match=r"table\.csv row 2: .*OriginalImage\[Width"):
        read_data_entry(csv_path)
