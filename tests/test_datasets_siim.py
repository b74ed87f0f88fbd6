"""SIIM-ACR Pneumothorax: the run-length codec, the loader with masks, the mirror's exact instance counts,
and clear errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsl_bench.data import assets, registry, rle
from wsl_bench.data.mirror import scale_mask, write_dicom
from wsl_bench.data.siim import IMAGE_DIR, RLE_CSV, SIIMPneumothorax, read_rle_table

MIRROR_FILMS = 80


def _wheel_rles() -> list[str]:
    table = pd.read_csv(assets.wheel_file(assets.SIIM_RLE))
    codes = [str(v).strip() for v in table.iloc[:, 1]]
    return [c for c in codes if c != "-1"]


def _reference_decode(code: str, side: int) -> np.ndarray:
    """The Kaggle kernel's decoder (as in torchxrayvision), pixel by pixel."""
    flat = np.zeros(side * side, dtype=bool)
    values = [int(v) for v in code.split()]
    pos = 0
    for start, length in zip(values[0::2], values[1::2]):
        pos += start
        flat[pos : pos + length] = True
        pos += length
    return flat.reshape(side, side).T


# ------------------------------------------------------------------------------------------- codec
def test_rle_known_answers():
    # column-major: pixel (y, x) is index x * height + y; starts count from the end of the previous run
    mask = np.zeros((3, 2), dtype=bool)
    mask[1, 0] = mask[2, 0] = mask[0, 1] = True  # indices 1, 2, 3: one run
    assert rle.encode(mask) == "1 3"
    assert (rle.decode("1 3", 3, 2) == mask).all()
    two = np.zeros((3, 2), dtype=bool)
    two[0, 0] = two[1, 1] = True  # indices 0 and 4
    assert rle.encode(two) == "0 1 3 1"
    assert (rle.decode("0 1 3 1", 3, 2) == two).all()
    assert rle.encode(np.zeros((4, 4), bool)) == "-1"
    assert not rle.decode("-1", 4, 4).any()
    assert rle.decode_crop("-1", 4, 4) is None


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (16, 16), (33, 8)]:
        for p in (0.0, 0.1, 0.5, 1.0):
            m = rng.random(shape) < p
            code = rle.encode(m)
            assert (rle.decode(code, *shape) == m).all()
            assert rle.encode(rle.decode(code, *shape)) == code


def test_rle_matches_the_reference_decoder_on_real_masks():
    codes = _wheel_rles()
    assert len(codes) == 3576
    for code in codes[:: len(codes) // 25]:
        ref = _reference_decode(code, 1024)
        assert (rle.decode(code, 1024, 1024) == ref).all()
        assert rle.encode(ref) == code  # the wheel's strings are canonical: encode gives them back
        (x0, y0, x1, y1), crop = rle.decode_crop(code, 1024, 1024)
        ys, xs = np.nonzero(ref)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert crop.sum() == ref.sum()


@pytest.mark.parametrize(
    "code, message",
    [
        ("5 3 7", "odd number of run-length values (3)"),
        ("5 3 7 x", "'x' is not a whole number"),
        ("5 0", "run 1 has length 0"),
        ("-2 3", "negative start offset -2"),
        ("10 3 0 4", "run 2 ends at pixel 17, past the 4x4 image (16 pixels)"),
        ("", "empty run-length mask"),
    ],
)
def test_rle_errors_name_where(code, message):
    with pytest.raises(rle.RLEError) as exc:
        rle.decode(code, 4, 4, where="train-rle.csv row 9")
    assert "train-rle.csv row 9" in str(exc.value) and message in str(exc.value)


def test_scaled_masks_keep_every_instance_and_their_place():
    for code in _wheel_rles()[:300]:
        (x0, y0, x1, y1), crop = rle.decode_crop(code, 1024, 1024)
        small = scale_mask(crop, (x0, y0, x1, y1), (1024, 1024), (16, 16))
        assert small.any()
        ys, xs = np.nonzero(small)
        assert (xs.min(), ys.min()) == (x0 * 16 // 1024, y0 * 16 // 1024)
        assert (xs.max(), ys.max()) == ((x1 - 1) * 16 // 1024, (y1 - 1) * 16 // 1024)
    # growing: each source pixel becomes a 2x2 block
    crop = np.array([[True, False], [False, True]])
    big = scale_mask(crop, (1, 0, 3, 2), (2, 4), (4, 8))
    expect = np.zeros((4, 8), dtype=bool)
    expect[0:2, 2:4] = True
    expect[2:4, 4:6] = True
    assert (big == expect).all()


# ------------------------------------------------------------------------------------------ mirror
@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("siim")
    summary = SIIMPneumothorax().export_mirror(out, size=64, seed=0, images=MIRROR_FILMS)
    return out, summary


def test_mirror_annotation_file_reproduces_every_real_instance(mirror):
    out, summary = mirror
    real = read_rle_table(assets.wheel_file(assets.SIIM_RLE))
    mine = read_rle_table(out / RLE_CSV)
    assert (len(mine), mine["image_id"].nunique()) == (12954, 12047)
    assert list(mine["image_id"]) == list(real["image_id"])
    real_pos, mine_pos = real["rle"] != "-1", mine["rle"] != "-1"
    assert (real_pos == mine_pos).all()
    assert int(mine_pos.sum()) == 3576 and mine.loc[mine_pos, "image_id"].nunique() == 2669
    # every instance is still there at 64 px, where the real one was
    for r_real, r_mine in zip(real[real_pos].itertuples(), mine[mine_pos].itertuples()):
        (x0, y0, x1, y1), _ = rle.decode_crop(r_real.rle, 1024, 1024)
        (a0, b0, a1, b1), crop = rle.decode_crop(r_mine.rle, 64, 64)
        assert crop.any()
        assert (a0, b0, a1, b1) == (x0 // 16, y0 // 16, (x1 - 1) // 16 + 1, (y1 - 1) // 16 + 1)
    assert summary["images"] == MIRROR_FILMS and summary["boxes"] == 3576


def test_loader_reads_the_mirror_boxes_masks_and_splits(mirror):
    out, _ = mirror
    table = read_rle_table(out / RLE_CSV)
    cohort = SIIMPneumothorax().load({"root": str(out), "image_size": 32}, seed=0)
    splits = (cohort.train, cohort.val, cohort.test)
    assert sum(len(s) for s in splits) == MIRROR_FILMS
    assert cohort.info["missing_images"] == 12047 - MIRROR_FILMS
    present = set().union(*(s.image_ids for s in splits))
    inst = table[(table["rle"] != "-1") & table["image_id"].isin(present)]
    boxes = pd.concat([s.boxes for s in splits])
    assert len(boxes) == len(inst) > 0 and set(boxes["label"]) == {"Pneumothorax"}
    for s in splits:
        assert s.image_size == 32 and (s.orig_sizes == 64).all()
        for i, iid in enumerate(s.image_ids):
            rows = inst[inst["image_id"] == iid]
            assert s.labels[i, 7] == float(len(rows) > 0) and s.labels[i].sum() == s.labels[i, 7]
            m = s.masks(i)
            if len(rows):
                union = np.zeros((64, 64), bool)
                for code in rows["rle"]:
                    union |= rle.decode(code, 64, 64)
                assert (m["Pneumothorax"] == union).all() and (s.lesion_masks(i)["Pneumothorax"] == union).all()
                b = s.boxes[s.boxes["image_id"] == iid]
                ys, xs = np.nonzero(union)
                assert b["x"].min() == xs.min() and (b["x"] + b["w"]).max() == xs.max() + 1
            else:
                assert m == {}
    # patients (the DICOM PatientID) never straddle splits; the images decode at the model size
    pids = [set(s.patient_ids) for s in splits]
    assert not (pids[0] & pids[1] or pids[0] & pids[2] or pids[1] & pids[2])
    assert cohort.test.load_images([0]).shape == (1, 1, 32, 32)
    sub = cohort.test.subset(cohort.test.box_image_indices())
    assert len(sub.boxes) == len(cohort.test.boxes) and sub.masks(0)


def test_registered_and_info(mirror):
    ds = registry.get_dataset("siim-pneumothorax")
    assert isinstance(ds, SIIMPneumothorax) and ds.has_masks
    assert ds.suite_box_findings() == ("Pneumothorax",)
    out, _ = mirror
    info = ds.info(out)
    assert sum(info["split"].values()) == info["images"] == MIRROR_FILMS
    assert info["source_counts"] == {"Pneumothorax": 3576} and info["dropped"] == {}
    assert info["listed_images"] == 12047 and info["missing_files"] == []


@pytest.mark.slow
def test_full_mirror_through_the_loader_keeps_every_instance(tmp_path):
    """Every one of the 2,669 pneumothorax films (16 px films; about 10 s of CPU)."""
    ds = SIIMPneumothorax()
    ds.export_mirror(tmp_path, size=16, images="boxed")
    cohort = ds.load({"root": str(tmp_path), "image_size": 8, "preload": False}, seed=0)
    boxes = pd.concat([cohort.train.boxes, cohort.val.boxes, cohort.test.boxes])
    assert len(boxes) == 3576 and boxes["image_id"].nunique() == 2669
    assert sum(int(s.labels[:, 7].sum()) for s in (cohort.train, cohort.val, cohort.test)) == 2669


# ------------------------------------------------------------------------------------------ errors
def _layout(root: Path, rows: list[str], films: dict[str, int]) -> Path:
    (root / RLE_CSV).write_text("ImageId, EncodedPixels\n" + "\n".join(rows) + "\n")
    for iid, side in films.items():
        write_dicom(root / IMAGE_DIR / "s" / "t" / f"{iid}.dcm", np.zeros((side, side), np.uint8), "1.2.3", PatientID=iid)
    return root


def test_bad_rle_rows_name_file_and_row(tmp_path):
    _layout(tmp_path, ["1.2.1,-1", "1.2.2,3 4 5"], {"1.2.1": 8, "1.2.2": 8})
    with pytest.raises(rle.RLEError, match=rf"{RLE_CSV} row 3: odd number of run-length values"):
        SIIMPneumothorax().load({"root": str(tmp_path)}, seed=0)


def test_run_past_the_film_is_an_error(tmp_path):
    _layout(tmp_path, ["1.2.1,-1", "1.2.2,60 10"], {"1.2.1": 8, "1.2.2": 8})
    with pytest.raises(rle.RLEError, match=r"row 3: run 1 ends at pixel 70, past the 8x8 image"):
        SIIMPneumothorax().load({"root": str(tmp_path)}, seed=0)


def test_film_listed_as_empty_and_masked_is_an_error(tmp_path):
    _layout(tmp_path, ["1.2.2,2 3", "1.2.2,-1"], {"1.2.2": 8})
    with pytest.raises(ValueError, match=r"row 3: film 1.2.2 is listed as -1"):
        SIIMPneumothorax().load({"root": str(tmp_path)}, seed=0)


def test_empty_mask_cell_is_an_error(tmp_path):
    _layout(tmp_path, ["1.2.2,"], {"1.2.2": 8})
    with pytest.raises(rle.RLEError, match=r"row 2: empty EncodedPixels; write -1"):
        SIIMPneumothorax().load({"root": str(tmp_path)}, seed=0)


def test_missing_csv_says_where_and_where_a_copy_is(tmp_path):
    with pytest.raises(registry.DatasetError) as exc:
        SIIMPneumothorax().load({"root": str(tmp_path)}, seed=0)
    msg = str(exc.value)
    assert f"{tmp_path / RLE_CSV} is missing" in msg and "siim-acr-pneumothorax-segmentation" in msg
    assert "torchxrayvision wheel ships a copy" in msg


def test_dicom_without_pixels_is_an_error(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    _layout(tmp_path, ["1.2.1,-1", "1.2.2,2 3"], {"1.2.1": 8})
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", "1.2.2"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = Dataset()
    report.file_meta, report.PatientID, report.Modality = meta, "p", "SR"
    bad = tmp_path / IMAGE_DIR / "s" / "t" / "1.2.2.dcm"
    report.save_as(bad, enforce_file_format=True)
    with pytest.raises(registry.DatasetError, match=rf"{bad}: a DICOM without pixel data"):
        SIIMPneumothorax().load({"root": str(tmp_path)}, seed=0)
