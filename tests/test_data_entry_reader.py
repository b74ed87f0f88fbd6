"""One Data_Entry_2017 parser: the data package's `read_data_entry` and the scorer's `read_labels_csv` read a label
file by the same rules, so they agree on every file either accepts and refuse the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from wsl_bench.data.tables import read_data_entry
from wsl_bench.labels import FINDINGS
from wsl_bench.metrics.readers import read_labels_csv

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
ROWS = [
    "00000001_000.png,Mass|Nodule,0,00001,58,M,PA,2682,2749,0.143,0.143",
    "00000002_000.png,No Finding,0,00002,81,F,AP,2500,2048,0.168,0.168",
    "00000003_000.png, Infiltrate | Effusion ,0,3,60,F,PA,2048,2048,0.168,0.168",  # box spelling, spaces
    "00000004_000.png,,0,3,61,F,PA,2048,2048,0.168,0.168",  # an empty label cell: no finding
]


def write(tmp_path, rows, header=HEADER):
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def both(path):
    return read_data_entry(path), read_labels_csv(path)


@pytest.mark.parametrize("trailing", ["", ","])
def test_both_readers_agree(tmp_path, trailing):
    entries, labels = both(write(tmp_path, [r + trailing for r in ROWS]))
    assert list(entries["image_id"]) == list(labels.index) == [r.split(",")[0] for r in ROWS]
    assert list(entries["patient_id"]) == list(labels["patient_id"]) == ["1", "2", "3", "3"]
    assert np.array_equal(entries[list(FINDINGS)].to_numpy(np.float64), labels[list(FINDINGS)].to_numpy())
    j = {f: i for i, f in enumerate(FINDINGS)}
    got = entries[list(FINDINGS)].to_numpy()
    assert got[0].sum() == 2 and got[0, j["Mass"]] == 1 and got[0, j["Nodule"]] == 1
    assert got[1].sum() == 0 and got[3].sum() == 0
    assert got[2].sum() == 2 and got[2, j["Infiltration"]] == 1 and got[2, j["Effusion"]] == 1


@pytest.mark.parametrize("rows, message", [
    ([ROWS[0], ROWS[1].replace("No Finding", "Fracture")], r"Data_Entry_2017\.csv line 3: unknown finding 'Fracture'"),
    ([ROWS[0], ROWS[0]], r"Data_Entry_2017\.csv line 3: duplicate image id '00000001_000\.png'"),
    ([" " + ROWS[0][len("00000001_000.png"):], ROWS[1]], r"Data_Entry_2017\.csv line 2: empty 'Image Index'"),
    ([ROWS[0], ROWS[1].replace(",00002,", ",,")], r"Data_Entry_2017\.csv line 3: empty 'Patient ID'"),
    ([ROWS[0] + ",0.5", ROWS[1]], r"Data_Entry_2017\.csv line 2: 12 fields but the header names 11"),
])
def test_both_readers_refuse_the_same_rows(tmp_path, rows, message):
    path = write(tmp_path, rows)
    for reader in (read_data_entry, read_labels_csv):
        with pytest.raises(ValueError, match=message):
            reader(path)


def test_patient_ids_are_required_by_the_loader_only(tmp_path):
    path = write(tmp_path, ["a.png,Mass", "b.png,No Finding"], header="Image Index,Finding Labels")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['Patient ID'\]"):
        read_data_entry(path)
    labels = read_labels_csv(path)  # the scorer: each image is its own bootstrap unit
    assert list(labels["patient_id"]) == ["a.png", "b.png"] and labels.loc["a.png", "Mass"] == 1


def test_a_missing_file(tmp_path):
    for reader in (read_data_entry, read_labels_csv):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            reader(tmp_path / "absent.csv")


def test_the_real_data_entry_file_reads_the_same_both_ways():
    from wsl_bench.data import assets

    try:
        path = assets.wheel_file(assets.DATA_ENTRY)
    except FileNotFoundError:
        pytest.skip("torchxrayvision's Data_Entry_2017_v2020.csv.gz is not installed")
    entries, labels = both(path)
    assert len(entries) == len(labels) == 112_120 and labels.index.is_unique
    assert list(entries["patient_id"]) == list(labels["patient_id"])
    assert np.array_equal(entries[list(FINDINGS)].to_numpy(np.float64), labels[list(FINDINGS)].to_numpy())
    assert int(entries["Hernia"].sum()) == 227 and int(entries["Infiltration"].sum()) == 19_894
