"""NIH table readers: the real box file, row-numbered errors, Data_Entry patients and labels."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from wsl_bench.metrics import read_bbox_csv, read_labels_csv, read_probs_csv

NIH_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


def test_reads_the_real_nih_box_file():
    spec = importlib.util.find_spec("torchxrayvision")  # locate the wheel's data without importing it
    path = Path(spec.origin).parent / "data" / "BBox_List_2017.csv.gz" if spec else None
    if path is None or not path.is_file():
        pytest.skip("torchxrayvision's BBox_List_2017.csv.gz is not installed")
    boxes = read_bbox_csv(path)
    assert list(boxes.columns) == ["image_id", "label", "x", "y", "w", "h"] and len(boxes) == 984
    counts = boxes["label"].value_counts().to_dict()
    assert counts == {"Atelectasis": 180, "Effusion": 153, "Cardiomegaly": 146, "Infiltrate": 123,
                      "Pneumonia": 120, "Pneumothorax": 98, "Mass": 85, "Nodule": 79}
    assert boxes["image_id"].nunique() == 880


def test_bad_rows_are_named_by_csv_line(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text(NIH_HEADER + "a.png,Mass,1,2,3,4\nb.png,Fracture,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"line 3: unknown finding label 'Fracture'"):
        read_bbox_csv(p)
    p.write_text(NIH_HEADER + "a.png,Mass,1,2,3,4\nb.png,Mass,1,nan,3,4\n")
    with pytest.raises(ValueError, match=r"line 3: box y=.* not a finite number"):
        read_bbox_csv(p)
    p.write_text(NIH_HEADER + "a.png,Mass,1,2,0,4\n")
    with pytest.raises(ValueError, match=r"line 2: box width/height must be positive"):
        read_bbox_csv(p)
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="unrecognised box header"):
        read_bbox_csv(p)


def test_box_columns_csv_and_infiltration_spelling(tmp_path):
    p = tmp_path / "b.csv"
    pd.DataFrame([dict(image_id="a", label="Infiltration", x=1, y=2, w=3, h=4)]).to_csv(p, index=False)
    assert read_bbox_csv(p)["label"].tolist() == ["Infiltrate"]


def test_data_entry_and_images_csv(tmp_path):
    p = tmp_path / "de.csv"
    p.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age\n"
        "a.png,Mass|Nodule,0,7,50\nb.png,No Finding,1,7,51\nc.png,Infiltration,0,9,30\n"
    )
    t = read_labels_csv(p)
    assert t.loc["a.png", "patient_id"] == "7" and t.loc["a.png", "Mass"] == 1 and t.loc["a.png", "Nodule"] == 1
    assert t.loc["b.png"].drop("patient_id").sum() == 0 and t.loc["c.png", "Infiltration"] == 1
    q = tmp_path / "images.csv"
    pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["p1", "p2"], "Mass": [1, 0]}).to_csv(q, index=False)
    assert read_labels_csv(q).loc["b", "patient_id"] == "p2"
    p.write_text("Image Index,Finding Labels,Patient ID\na.png,Mass,1\na.png,Mass,1\n")
    with pytest.raises(ValueError, match="line 3: duplicate image id"):
        read_labels_csv(p)


def test_probs_csv(tmp_path):
    p = tmp_path / "probs.csv"
    pd.DataFrame({"image_id": ["a", "b"], "Mass": [0.1, 0.9], "Infiltrate": [0.3, 0.2]}).to_csv(p, index=False)
    t = read_probs_csv(p)
    assert list(t.columns) == ["Mass", "Infiltration"] and t.loc["b", "Mass"] == 0.9
    pd.DataFrame({"image_id": ["a"], "Mass": ["x"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="line 2: column 'Mass'"):
        read_probs_csv(p)
