"""Small input-safety fixes: NIH Data_Entry rows with extra fields, and np.load never unpickling."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from wsl_bench.data.tables import read_data_entry
from wsl_bench.labels import FINDINGS

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
ROW_A = "00000001_000.png,Mass|Nodule,0,00001,58,M,PA,2682,2749,0.143,0.143"
ROW_B = "00000002_000.png,No Finding,0,00002,81,F,AP,2500,2048,0.168,0.168"
ROOT = Path(__file__).resolve().parents[1]


def _check(table):
    assert list(table["image_id"]) == ["00000001_000.png", "00000002_000.png"]
    assert list(table["patient_id"]) == ["1", "2"] and list(table["view"]) == ["PA", "AP"]
    assert list(table["orig_w"]) == [2682, 2500] and list(table["orig_h"]) == [2749, 2048]
    assert table.loc[0, list(FINDINGS)].sum() == 2 and table.loc[0, "Mass"] == 1 and table.loc[0, "Nodule"] == 1
    assert table.loc[1, list(FINDINGS)].sum() == 0


@pytest.mark.parametrize("rows", [
    [ROW_A + ",", ROW_B],  # a stray trailing comma on the first row (pandas used to make ids the index)
    [ROW_A + ",", ROW_B + ","],  # trailing commas everywhere, header without one
    [ROW_A, ROW_B],
])
def test_extra_empty_trailing_field_does_not_shift_columns(tmp_path, rows):
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    _check(read_data_entry(path))


def test_extra_field_with_data_is_a_clear_error(tmp_path):
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("\n".join([HEADER, ROW_A + ",0.5", ROW_B]) + "\n")
    with pytest.raises(ValueError, match=r"Data_Entry_2017\.csv line 2: 12 fields but the header names 11"):
        read_data_entry(path)
    path.write_text("\n".join([HEADER, ROW_A, ROW_B + ",0.5"]) + "\n")  # not on the first row: pandas refuses
    with pytest.raises(ValueError, match=r"cannot read .*Data_Entry_2017\.csv.*Expected 11 fields in line 3, saw 12"):
        read_data_entry(path)


def _np_load_calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            base = node.func.value
            if isinstance(base, ast.Name) and base.id in ("np", "numpy"):
                yield node


def test_every_np_load_refuses_pickles_explicitly():
    """numpy's default is allow_pickle=False today; the project does not rely on a default for safety."""
    files = [p for pkg in ("wsl_bench", "clarity", "baselines") for p in sorted((ROOT / pkg).rglob("*.py"))]
    calls = [(p, c) for p in files for c in _np_load_calls(p)]
    assert len(calls) >= 5  # the gallery, priors, run and bundle readers load .npy/.npz files
    lax = [
        f"{p.relative_to(ROOT)}:{c.lineno}"
        for p, c in calls
        if not any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False for k in c.keywords)
    ]
    assert lax == []


def test_clarity_user_masks_refuse_an_object_array(tmp_path):
    from clarity.priors import UserMasks

    evil = tmp_path / "atlas.npy"
    np.save(evil, np.array([{"code": "would run on unpickling"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        UserMasks(evil)
