"""RSNA Pneumonia: the official layout read as a Cohort, the mirror's exact box counts, the film reader
(DICOM and PNG), the split rule, and clear errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsl_bench.data import assets, registry
from wsl_bench.data.films import read_film, read_film_header, split_patients
from wsl_bench.data.mirror import write_dicom, write_picture
from wsl_bench.data.rsna import IMAGE_DIRS, LABELS_CSV, WHEEL_HEADERS, WHEEL_LABELS, RSNAPneumonia, read_labels

MIRROR_FILMS = 60
PNEUMONIA = 6  # index of Pneumonia in FINDINGS


def test_wheel_table_known_counts():
    t = read_labels(assets.wheel_file(WHEEL_LABELS))
    assert len(t) == 30227 and t["image_id"].nunique() == 26684
    pos = t[t["target"] == 1]
    assert len(pos) == 9555 and pos["image_id"].nunique() == 6012
    assert t.loc[t["target"] == 0, ["x", "y", "w", "h"]].isna().all().all()


# ------------------------------------------------------------------------------------------ mirror
@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rsna")
    return out, RSNAPneumonia().export_mirror(out, size=64, seed=0, images=MIRROR_FILMS)


def test_mirror_annotation_file_reproduces_every_real_row(mirror):
    out, summary = mirror
    real = read_labels(assets.wheel_file(WHEEL_LABELS))
    mine = read_labels(out / LABELS_CSV)
    assert list(mine["image_id"]) == list(real["image_id"]) and list(mine["target"]) == list(real["target"])
    assert int((mine["target"] == 1).sum()) == 9555
    np.testing.assert_allclose(mine[["x", "y", "w", "h"]].to_numpy(), real[["x", "y", "w", "h"]].to_numpy() * 64 / 1024, rtol=0, atol=1e-9)
    assert summary["images"] == MIRROR_FILMS and summary["boxes"] == 9555
    assert len(list((out / IMAGE_DIRS[0]).glob("*.dcm"))) == MIRROR_FILMS


def test_loader_reads_the_mirror(mirror):
    out, _ = mirror
    table = read_labels(out / LABELS_CSV)
    cohort = RSNAPneumonia().load({"root": str(out), "image_size": 32}, seed=0)
    splits = (cohort.train, cohort.val, cohort.test)
    ids = [i for s in splits for i in s.image_ids]
    assert sorted(ids) == sorted(list(dict.fromkeys(table["image_id"]))[:MIRROR_FILMS])
    assert cohort.info["missing_images"] == 26684 - MIRROR_FILMS
    pos = table[(table["target"] == 1) & table["image_id"].isin(set(ids))]
    got = pd.concat([s.boxes for s in splits]).sort_values(["image_id", "x"]).reset_index(drop=True)
    want = pos.sort_values(["image_id", "x"]).reset_index(drop=True)
    assert len(got) == len(want) > 0 and set(got["label"]) == {"Pneumonia"}
    assert (got["image_id"] == want["image_id"]).all()
    np.testing.assert_array_equal(got[["x", "y", "w", "h"]].to_numpy(float), want[["x", "y", "w", "h"]].to_numpy(float))
    headers = pd.read_csv(assets.wheel_file(WHEEL_HEADERS)).set_index("PatientID")
    for s in splits:
        assert s.patient_ids == s.image_ids and (s.orig_sizes == 64).all()
        boxed = set(s.boxes["image_id"])
        assert [bool(v) for v in s.labels[:, PNEUMONIA]] == [i in boxed for i in s.image_ids]
        assert s.labels.sum() == s.labels[:, PNEUMONIA].sum()
        assert s.views == [headers.at[i, "ViewPosition"] for i in s.image_ids]  # real views ride in the mirror's DICOMs
    batch = cohort.train.load_images(range(len(cohort.train)))
    assert batch.shape == (len(cohort.train), 1, 32, 32) and 0 <= float(batch.min()) < float(batch.max()) <= 1
    assert cohort.fingerprint.startswith("rsna-pneumonia-")


def test_split_is_patient_disjoint_and_test_fixed_across_run_seeds(mirror):
    out, _ = mirror
    ds = RSNAPneumonia()
    a = ds.load({"root": str(out), "image_size": 16}, seed=0)
    b = ds.load({"root": str(out), "image_size": 16}, seed=1)
    c = ds.load({"root": str(out), "image_size": 16, "split_seed": 5}, seed=0)
    assert a.test.image_ids == b.test.image_ids and a.fingerprint != b.fingerprint
    assert set(a.test.image_ids) != set(c.test.image_ids)
    patients = [f"p{i}" for i in range(1000)]
    where = split_patients(patients, 0.2, 0.1, 0, 0)
    counts = pd.Series(where).value_counts()
    assert (counts["test"], counts["val"], counts["train"]) == (200, 80, 720)
    assert split_patients(list(reversed(patients)), 0.2, 0.1, 0, 0) == where  # order-independent
    assert split_patients(patients, 0.2, 0.1, 0, 3) != where and {p for p, s in split_patients(patients, 0.2, 0.1, 0, 3).items() if s == "test"} == {
        p for p, s in where.items() if s == "test"}


def test_registered_and_info(mirror):
    ds = registry.get_dataset("rsna-pneumonia")
    assert isinstance(ds, RSNAPneumonia) and ds.suite_box_findings() == ("Pneumonia",)
    assert registry.mapping_rows(ds) == [{"dataset": "rsna-pneumonia", "finding": "Lung Opacity", "suite": "Pneumonia", "localized": "True"}]
    out, _ = mirror
    info = ds.info(out)
    assert info["images"] == sum(info["split"].values()) == MIRROR_FILMS
    assert info["source_counts"] == {"Lung Opacity": 9555} and info["listed_images"] == 26684
    with pytest.raises(registry.DatasetError, match="unknown rsna-pneumonia data setting"):
        ds.resolve_config({"name": "rsna-pneumonia", "root": str(out), "folds": 3})


@pytest.mark.slow
def test_full_mirror_through_the_loader_keeps_every_box(tmp_path):
    """Every one of the 6,012 films with a box (16 px films; about 20 s of CPU)."""
    ds = RSNAPneumonia()
    ds.export_mirror(tmp_path, size=16, images="boxed")
    cohort = ds.load({"root": str(tmp_path), "image_size": 8, "preload": False}, seed=0)
    boxes = pd.concat([cohort.train.boxes, cohort.val.boxes, cohort.test.boxes])
    assert len(boxes) == 9555 and boxes["image_id"].nunique() == 6012
    assert sum(int(s.labels[:, PNEUMONIA].sum()) for s in (cohort.train, cohort.val, cohort.test)) == 6012


# -------------------------------------------------------------------------------------- film reader
def _dicom16(path: Path, pixels: np.ndarray, photometric: str, slope: float = 1.0, intercept: float = 0.0) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", "1.2.9"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_reader_stretches_inverts_and_keeps_8_bit(tmp_path):
    px = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    _dicom16(tmp_path / "m2.dcm", px, "MONOCHROME2", slope=2.0, intercept=-100)
    _dicom16(tmp_path / "m1.dcm", px, "MONOCHROME1")
    np.testing.assert_array_equal(read_film(tmp_path / "m2.dcm"), [[0, 64], [128, 255]])  # round(255 * v / 4000)
    np.testing.assert_array_equal(read_film(tmp_path / "m1.dcm"), [[255, 191], [128, 0]])  # brightest = least attenuating
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    write_dicom(tmp_path / "g.dcm", grey, "1.2.3", PatientID="x", ViewPosition="AP")
    np.testing.assert_array_equal(read_film(tmp_path / "g.dcm"), grey)  # 8-bit MONOCHROME2 is kept as is
    assert read_film(tmp_path / "g.dcm", 4).shape == (4, 4)
    h = read_film_header(tmp_path / "g.dcm")
    assert (h.height, h.width, h.patient_id, h.view) == (8, 8, "x", "AP")


def test_png_films_load_like_dicom(tmp_path):
    iid = "00436515-870c-4b36-a041-de91049b9ab4"
    (tmp_path / LABELS_CSV).write_text("patientId,x,y,width,height,Target\n" f"{iid},10,12,20,30,1\n" "other,,,,,0\n")
    img = np.full((100, 80), 90, np.uint8)
    write_picture(tmp_path / "stage_2_train_images_png" / f"{iid}.png", img)
    write_picture(tmp_path / "stage_2_train_images_png" / "other.png", img)
    cohort = RSNAPneumonia().load({"root": str(tmp_path), "image_size": 16, "test_fraction": 0.5, "val_fraction": 0.0}, seed=0)
    films = {i: s for s in (cohort.train, cohort.test) for i in s.image_ids}
    s = films[iid]
    k = s.index_of(iid)
    assert tuple(s.orig_sizes[k]) == (100, 80) and s.labels[k, PNEUMONIA] == 1
    assert s.boxes[["x", "y", "w", "h"]].to_numpy().tolist() == [[10, 12, 20, 30]]
    assert s[k]["image"].shape == (1, 16, 16)


# ------------------------------------------------------------------------------------------ errors
def _layout(root: Path, rows: list[str], side: int = 64) -> Path:
    (root / LABELS_CSV).write_text("patientId,x,y,width,height,Target\n" + "\n".join(rows) + "\n")
    for iid in dict.fromkeys(r.split(",")[0] for r in rows):
        write_dicom(root / IMAGE_DIRS[0] / f"{iid}.dcm", np.zeros((side, side), np.uint8), "1.2.3", PatientID=iid)
    return root


@pytest.mark.parametrize(
    "rows, message",
    [
        (["a,,,,,0", "b,1,2,3,4,2"], r"row 3: Target is '2'; it must be 0"),
        (["a,,,,,0", "b,1,2,,4,1"], r"row 3: Target 1 needs a box"),
        (["a,1,2,3,4,0"], r"row 2: Target 0 \(no opacity\) with box values"),
        (["a,1,2,3,4,1", "a,,,,,0"], r"row 2: film a has rows with Target 0 and Target 1"),
        (["a,one,2,3,4,1"], r"row 2: x is 'one', not a number"),
        (["../a,1,2,3,4,1"], r"row 2: image id '../a' is not a plain file name"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, rows, message):
    (tmp_path / LABELS_CSV).write_text("patientId,x,y,width,height,Target\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=rf"{LABELS_CSV}.* {message}"):
        RSNAPneumonia().load({"root": str(tmp_path)}, seed=0)


def test_box_outside_the_film_is_an_error(tmp_path):
    _layout(tmp_path, ["a,,,,,0", "b,50,10,20,10,1"])
    with pytest.raises(registry.DatasetError, match=rf"{LABELS_CSV} row 3: Lung Opacity box x=50 y=10 w=20 h=10 lies outside image b \(64x64 px\)"):
        RSNAPneumonia().load({"root": str(tmp_path)}, seed=0)


def test_missing_csv_and_missing_root(tmp_path):
    with pytest.raises(registry.DatasetError) as exc:
        RSNAPneumonia().load({"root": str(tmp_path)}, seed=0)
    assert f"{tmp_path / LABELS_CSV} is missing" in str(exc.value) and "rsna-pneumonia-detection-challenge" in str(exc.value)
    assert WHEEL_LABELS in str(exc.value)
    with pytest.raises(registry.DatasetError, match="needs --root DIR"):
        RSNAPneumonia().load({}, seed=0)
    with pytest.raises(registry.DatasetError, match="is not a folder"):
        RSNAPneumonia().load({"root": str(tmp_path / "nope")}, seed=0)


def test_no_film_on_disk_is_an_error(tmp_path):
    (tmp_path / LABELS_CSV).write_text("patientId,x,y,width,height,Target\na,,,,,0\n")
    with pytest.raises(registry.DatasetError, match="none of the 1 annotated images is on disk"):
        RSNAPneumonia().load({"root": str(tmp_path)}, seed=0)
    assert RSNAPneumonia().info(tmp_path)["missing_files"] == [f"{IMAGE_DIRS[0]}/"]


def test_dicom_without_pixels_and_not_dicom(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    _layout(tmp_path, ["a,,,,,0"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", "1.2.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = Dataset()
    report.file_meta, report.PatientID = meta, "a"
    bad = tmp_path / IMAGE_DIRS[0] / "a.dcm"
    report.save_as(bad, enforce_file_format=True)
    with pytest.raises(registry.DatasetError, match=rf"{bad}: a DICOM without pixel data"):
        RSNAPneumonia().load({"root": str(tmp_path)}, seed=0)
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(registry.DatasetError, match=rf"{bad}: .*DICOM"):
        RSNAPneumonia().load({"root": str(tmp_path)}, seed=0)
