"""VinDr-CXR: the label mapping, majority labels, the reader-fusion rule (known answers), per-reader boxes,
the mirror's exact counts per finding and per reader, and clear errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsl_bench.data import assets, registry
from wsl_bench.data.film_cohort import suite_boxes
from wsl_bench.data.mirror import write_dicom
from wsl_bench.data.vindr import CSV, IMAGE_DIR, WHEEL_CSV, VinDrCXR, fuse_readers, majority, read_annotations
from wsl_bench.labels import FINDINGS

MIRROR_FILMS = 60
REAL_COUNTS = {
    "Aortic enlargement": 7162, "Cardiomegaly": 5427, "Pleural thickening": 4842, "Pulmonary fibrosis": 4655,
    "Nodule/Mass": 2580, "Lung Opacity": 2483, "Pleural effusion": 2476, "Other lesion": 2203, "Infiltration": 1247,
    "ILD": 1000, "Calcification": 960, "Consolidation": 556, "Atelectasis": 279, "Pneumothorax": 226, "No finding": 31818,
}
HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"


def _boxes(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "finding", "reader", "x_min", "y_min", "x_max", "y_max"])


# -------------------------------------------------------------------------------------------- fusion
def test_fusion_known_answers():
    b = _boxes([
        # f1: R1 drew two boxes, R2 one that overlaps both -> one box, each reader weighing the same
        ("f1", "Cardiomegaly", "R1", 0, 0, 10, 10), ("f1", "Cardiomegaly", "R1", 0, 1, 10, 11), ("f1", "Cardiomegaly", "R2", 0, 0, 10, 11),
        # f2: three readers agree -> the plain mean, 3 readers
        ("f2", "Pneumothorax", "R1", 0, 0, 10, 10), ("f2", "Pneumothorax", "R2", 1, 0, 11, 10), ("f2", "Pneumothorax", "R3", 2, 0, 12, 10),
        # f3: IoU 1/3 < 0.5 -> two single-reader groups, both dropped; same box, other finding: not fused across findings
        ("f3", "Atelectasis", "R1", 0, 0, 10, 10), ("f3", "Atelectasis", "R2", 5, 0, 15, 10), ("f3", "Pleural effusion", "R3", 0, 0, 10, 10),
        # f4: IoU exactly 0.5 links
        ("f4", "Nodule/Mass", "R1", 0, 0, 10, 10), ("f4", "Nodule/Mass", "R2", 0, 0, 10, 20),
        # f5: one reader overlapping himself is still one reader
        ("f5", "Infiltration", "R1", 0, 0, 10, 10), ("f5", "Infiltration", "R1", 0, 0, 10, 10),
        # f6: a film read by one reader: its majority is 1
        ("f6", "Cardiomegaly", "R7", 3, 4, 5, 6),
    ])
    fused = fuse_readers(b, {"f1": 3, "f2": 3, "f3": 3, "f4": 3, "f5": 3, "f6": 1})
    got = {(r.image_id, r.finding): (r.x_min, r.y_min, r.x_max, r.y_max, r.n_readers) for r in fused.itertuples()}
    assert got == {
        ("f1", "Cardiomegaly"): (0.0, 0.25, 10.0, 10.75, 2),
        ("f2", "Pneumothorax"): (1.0, 0.0, 11.0, 10.0, 3),
        ("f4", "Nodule/Mass"): (0.0, 0.0, 10.0, 15.0, 2),
        ("f6", "Cardiomegaly"): (3.0, 4.0, 5.0, 6.0, 1),
    }
    assert (majority(1), majority(2), majority(3), majority(4)) == (1, 2, 2, 3)


def test_fusion_does_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    rows = []
    for k in range(40):
        x, y = rng.uniform(0, 100, 2)
        for r in ("R1", "R2", "R3"):
            if rng.random() < 0.7:
                j = rng.normal(0, 3, 2)
                rows.append((f"f{k % 7}", "Cardiomegaly", r, x + j[0], y + j[1], x + 20 + j[0], y + 20 + j[1]))
    b = _boxes(rows)
    key = ["image_id", "finding", "x_min", "y_min"]
    a = fuse_readers(b, {f"f{k}": 3 for k in range(7)}).sort_values(key).reset_index(drop=True)
    c = fuse_readers(b.sample(frac=1, random_state=1), {f"f{k}": 3 for k in range(7)}).sort_values(key).reset_index(drop=True)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, c)


# ------------------------------------------------------------------------------ a hand-made layout
def _layout(root: Path, rows: list[str], side: int = 48) -> Path:
    (root / CSV).write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    for iid in dict.fromkeys(r.split(",")[0] for r in rows):
        write_dicom(root / IMAGE_DIR / f"{iid}.dicom", np.zeros((side, side), np.uint8), "1.2.3", PatientID=iid)
    return root


def test_labels_consensus_and_reader_tables_in_the_suite_vocabulary(tmp_path):
    _layout(tmp_path, [
        "A,Cardiomegaly,3,R1,10,10,30,30", "A,Cardiomegaly,3,R2,11,11,31,31",
        "A,Nodule/Mass,8,R3,40,40,45,45",
        "A,Consolidation,4,R1,5,5,20,20", "A,Consolidation,4,R2,5,5,20,20",
        "A,Aortic enlargement,0,R3,1,1,5,5",
        "B,Nodule/Mass,8,R1,10,10,20,20", "B,Nodule/Mass,8,R2,10,10,20,22", "B,No finding,14,R4,,,,",
        "C,No finding,14,R1,,,,", "C,No finding,14,R2,,,,", "C,No finding,14,R4,,,,",
    ])
    cohort = VinDrCXR().load({"root": str(tmp_path), "image_size": 16, "test_fraction": 0.34, "val_fraction": 0.0}, seed=0)
    splits = [s for s in (cohort.train, cohort.val, cohort.test) if len(s)]
    labels = {iid: {FINDINGS[j] for j in np.flatnonzero(s.labels[i])} for s in splits for i, iid in enumerate(s.image_ids)}
    assert labels == {"A": {"Cardiomegaly", "Consolidation"}, "B": {"Mass", "Nodule"}, "C": set()}
    boxes = pd.concat([s.boxes for s in splits]).sort_values(["image_id", "label"]).reset_index(drop=True)
    assert boxes.to_dict("records") == [
        {"image_id": "A", "label": "Cardiomegaly", "x": 10.5, "y": 10.5, "w": 20.0, "h": 20.0},
        {"image_id": "B", "label": "Mass", "x": 10.0, "y": 10.0, "w": 10.0, "h": 11.0},
        {"image_id": "B", "label": "Nodule", "x": 10.0, "y": 10.0, "w": 10.0, "h": 11.0},
    ]
    readers: dict[str, list] = {}
    for s in splits:
        for r, t in s.meta["reader_boxes"].items():
            readers.setdefault(r, []).extend(sorted((row.image_id, row.label) for row in t.itertuples()))
    assert {r: sorted(v) for r, v in readers.items()} == {
        "R1": [("A", "Cardiomegaly"), ("B", "Mass"), ("B", "Nodule")],
        "R2": [("A", "Cardiomegaly"), ("B", "Mass"), ("B", "Nodule")],
        "R3": [("A", "Mass"), ("A", "Nodule")],
    }
    info = cohort.info
    assert info["dropped"] == {"Aortic enlargement": 1} and info["unscored_boxes"] == {"Consolidation": 2}
    assert info["source_counts"] == {"Aortic enlargement": 1, "Cardiomegaly": 2, "Consolidation": 2, "Nodule/Mass": 3}
    sub = cohort.test.subset([0])
    assert set().union(*(set(t["image_id"]) for t in sub.meta["reader_boxes"].values())) <= set(sub.image_ids)


def test_label_mapping_and_registration():
    ds = registry.get_dataset("vindr-cxr")
    assert isinstance(ds, VinDrCXR) and ds.readers
    assert ds.suite_box_findings() == ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumothorax")
    rows = {(r["finding"], r["suite"]) for r in registry.mapping_rows(ds)}
    assert ("Infiltration", "Infiltration") in rows and ("Infiltration", "Infiltrate") in rows
    assert ("Nodule/Mass", "Mass") in rows and ("Nodule/Mass", "Nodule") in rows
    for unmapped in ("Aortic enlargement", "Calcification", "ILD", "Lung Opacity", "Other lesion"):
        assert (unmapped, "") in rows


# ------------------------------------------------------------------------------------------ mirror
@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("vindr")
    return out, VinDrCXR().export_mirror(out, size=64, seed=0, images=MIRROR_FILMS)


def test_mirror_annotation_file_reproduces_every_row_per_finding_and_reader(mirror):
    out, summary = mirror
    real = read_annotations(assets.wheel_file(WHEEL_CSV))
    mine = read_annotations(out / CSV)
    assert len(mine) == 67914 and mine["image_id"].nunique() == 15000
    assert mine.groupby("finding").size().to_dict() == REAL_COUNTS
    assert mine.groupby(["reader", "finding"]).size().to_dict() == real.groupby(["reader", "finding"]).size().to_dict()
    assert (mine.groupby("image_id")["reader"].nunique() == 3).all()
    # each box kept its place: the same fraction of its film's frame, whatever the scale
    boxed = real["x_min"].notna()
    ratio = mine.loc[boxed, "x_max"].to_numpy() / real.loc[boxed, "x_max"].to_numpy()
    ratio_y = mine.loc[boxed, "y_min"].to_numpy() / np.maximum(real.loc[boxed, "y_min"].to_numpy(), 1e-9)
    assert ratio.max() <= 64 / 3072 + 1e-12 and ratio.min() >= 64 / 3392 - 1e-12
    assert np.allclose(ratio_y[real.loc[boxed, "y_min"].to_numpy() > 0], ratio[real.loc[boxed, "y_min"].to_numpy() > 0])
    assert summary["images"] == MIRROR_FILMS and summary["boxes"] == 36096 and summary["box_images"] == 4394


def test_loader_reads_the_mirror_per_reader(mirror):
    out, _ = mirror
    ds = VinDrCXR()
    table = read_annotations(out / CSV)
    cohort = ds.load({"root": str(out), "image_size": 32}, seed=0)
    splits = (cohort.train, cohort.val, cohort.test)
    present = {i for s in splits for i in s.image_ids}
    assert len(present) == MIRROR_FILMS and cohort.info["missing_images"] == 15000 - MIRROR_FILMS
    marked = table[(table["finding"] != "No finding") & table["image_id"].isin(present)]
    marked = marked.assign(x=marked["x_min"], y=marked["y_min"], w=marked["x_max"] - marked["x_min"], h=marked["y_max"] - marked["y_min"])
    got: dict[tuple[str, str], int] = {}
    for s in splits:
        for r, t in s.meta["reader_boxes"].items():
            for label, n in t.groupby("label").size().items():
                got[(r, label)] = got.get((r, label), 0) + int(n)
    want = {}
    for r, g in marked.groupby("reader"):
        for label, n in suite_boxes(g, ds.to_suite)[0].groupby("label").size().items():
            want[(r, label)] = int(n)
    assert got == want and sum(want.values()) > 0
    fused = fuse_readers(marked, table.groupby("image_id")["reader"].nunique().to_dict())
    fused_suite = suite_boxes(fused.assign(x=fused["x_min"], y=fused["y_min"], w=fused["x_max"] - fused["x_min"],
                                           h=fused["y_max"] - fused["y_min"]), ds.to_suite)[0]
    boxes = pd.concat([s.boxes for s in splits])
    assert boxes.groupby("label").size().to_dict() == fused_suite.groupby("label").size().to_dict()
    info = ds.info(out)
    assert sum(info["split"].values()) == MIRROR_FILMS
    assert info["source_counts"] == {k: v for k, v in REAL_COUNTS.items() if k != "No finding"}
    assert info["dropped"] == {k: REAL_COUNTS[k] for k in ("Aortic enlargement", "Calcification", "ILD", "Lung Opacity", "Other lesion")}
    assert info["unscored_boxes"] == {k: REAL_COUNTS[k] for k in ("Consolidation", "Pleural thickening", "Pulmonary fibrosis")}


@pytest.mark.slow
def test_full_mirror_through_the_loader_keeps_every_reader_box(tmp_path):
    """All 4,394 films with a box (16 px films; about 20 s of CPU): per-reader boxes exactly, and the consensus
    as fused from the real coordinates."""
    ds = VinDrCXR()
    ds.export_mirror(tmp_path, size=16, images="boxed")
    cohort = ds.load({"root": str(tmp_path), "image_size": 8, "preload": False}, seed=0)
    splits = (cohort.train, cohort.val, cohort.test)
    real = read_annotations(assets.wheel_file(WHEEL_CSV))
    marked = real[real["finding"] != "No finding"]
    marked = marked.assign(x=marked["x_min"], y=marked["y_min"], w=marked["x_max"] - marked["x_min"], h=marked["y_max"] - marked["y_min"])
    for r, g in marked.groupby("reader"):
        want = suite_boxes(g, ds.to_suite)[0].groupby("label").size()
        got = pd.concat([s.meta["reader_boxes"][r] for s in splits if r in s.meta["reader_boxes"]]).groupby("label").size()
        assert got.to_dict() == want.to_dict(), r
    # the consensus of the real coordinates: each film is scaled as a whole, so the same groups form
    fused = fuse_readers(marked, real.groupby("image_id")["reader"].nunique().to_dict())
    want = suite_boxes(fused.assign(x=fused["x_min"], y=fused["y_min"], w=fused["x_max"] - fused["x_min"],
                                    h=fused["y_max"] - fused["y_min"]), ds.to_suite)[0]
    boxes = pd.concat([s.boxes for s in splits])
    assert len(want) > 0 and boxes.groupby("label").size().to_dict() == want.groupby("label").size().to_dict()


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "row, message",
    [
        ("A,Rib fracture,15,R1,1,1,5,5", r"row 2: unknown class_name 'Rib fracture'; expected one of"),
        ("A,No finding,14,R1,1,1,5,5", r"row 2: a 'No finding' row with box values"),
        ("A,Cardiomegaly,3,R1,5,1,5,5", r"row 2: Cardiomegaly needs a box with x_max > x_min"),
        ("A,Cardiomegaly,3,R1,,,,", r"row 2: Cardiomegaly needs a box"),
        ("A,Cardiomegaly,3,,1,1,5,5", r"row 2: empty rad_id"),
        ("A,Cardiomegaly,3,R1,1,one,5,5", r"row 2: y_min is 'one', not a number"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, row, message):
    _layout(tmp_path, [row])
    with pytest.raises(registry.DatasetError, match=rf"{CSV} {message}"):
        VinDrCXR().load({"root": str(tmp_path)}, seed=0)


def test_box_outside_the_film_is_an_error(tmp_path):
    _layout(tmp_path, ["A,No finding,14,R1,,,,", "A,Cardiomegaly,3,R2,10,10,60,20"])
    with pytest.raises(registry.DatasetError, match=rf"{CSV} row 3: Cardiomegaly box x=10 y=10 w=50 h=10 lies outside image A \(48x48 px\)"):
        VinDrCXR().load({"root": str(tmp_path)}, seed=0)


def test_missing_csv(tmp_path):
    with pytest.raises(registry.DatasetError) as exc:
        VinDrCXR().info(tmp_path)
    assert f"{tmp_path / CSV} is missing" in str(exc.value) and WHEEL_CSV in str(exc.value)
