"""NIH adapter on exported NIH-layout folders: layout, split, boxes, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from wsl_bench.data.export import export_nih_layout
from wsl_bench.data.nih import NIHDataError, dataset_info, find_layout, load_nih
from wsl_bench.labels import FINDINGS

MIRROR_COUNTS = {
    "Atelectasis": 180, "Cardiomegaly": 146, "Effusion": 153, "Infiltrate": 123,
    "Mass": 85, "Nodule": 79, "Pneumonia": 120, "Pneumothorax": 98,
}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The 880 real box images rendered at 64 px plus 60 synthetic train_val images."""
    out = tmp_path_factory.mktemp("mirror")
    summary = export_nih_layout(out, n=60, size=64, seed=0, mirror_nih=True)
    return out, summary


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    export_nih_layout(out, n=50, size=48, seed=1)
    return out


def copy(src, tmp_path):
    dst = tmp_path / "nih"
    shutil.copytree(src, dst)
    return dst


def test_mirror_counts(mirror):
    root, summary = mirror
    assert summary["box_images"] == 880 and summary["boxes"] == 984
    assert summary["boxes_per_label"] == MIRROR_COUNTS
    info = dataset_info(root)
    assert info["images"] == 940 and info["box_images"] == 880 and info["boxes"] == 984
    assert info["boxes_per_label"] == MIRROR_COUNTS
    assert info["split"] == {"train_val": 60, "test": 880}
    assert info["missing_files"] == []


def test_mirror_loads_all_box_images_with_scaled_real_boxes(mirror):
    root, _ = mirror
    c = load_nih(root, image_size=32, seed=0, val_fraction=0.2)
    assert len(c.test) == 880 and len(c.test.boxes) == 984
    assert c.info["boxes_per_label"] == MIRROR_COUNTS
    assert c.test.orig_sizes.tolist()[0] == [64, 64]
    from wsl_bench.data import assets

    real = assets.real_boxes()
    r = real.iloc[0]
    mine = c.test.boxes[(c.test.boxes["image_id"] == r["image_id"]) & (c.test.boxes["label"] == r["label"])]
    assert np.isclose(mine["x"], r["x"] * 64 / 1024, atol=1e-4).any()
    # real labels: Infiltration in the label table for an Infiltrate box
    iid = real.loc[real["label"] == "Infiltrate", "image_id"].iloc[0]
    assert c.test.labels[c.test.index_of(iid), FINDINGS.index("Infiltration")] in (0.0, 1.0)
    x = c.test.load_images([0, 1])
    assert x.shape == (2, 1, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_mirror_lesions_drawn_at_real_boxes(mirror):
    """Opacities sit at the real box coordinates: brighter inside the box than in a ring around it."""
    root, _ = mirror
    c = load_nih(root, image_size=64)
    test = c.test
    diffs = []
    for r in test.boxes[test.boxes["label"].isin(["Mass", "Nodule", "Pneumonia"])].itertuples(index=False):
        img = test.load_images([test.index_of(r.image_id)])[0, 0].numpy() * 255
        x0, y0 = int(np.floor(r.x)), int(np.floor(r.y))
        x1, y1 = int(np.ceil(r.x + r.w)), int(np.ceil(r.y + r.h))
        m = max(2, int(0.3 * max(r.w, r.h)))
        outer = np.zeros(img.shape, bool)
        outer[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m] = True
        inner = np.zeros(img.shape, bool)
        inner[y0:y1, x0:x1] = True
        ring = outer & ~inner
        if inner.sum() >= 4 and ring.sum() >= 4:
            diffs.append(img[inner].mean() - img[ring].mean())
    assert len(diffs) > 200
    assert np.mean(np.array(diffs) > 0) > 0.75 and np.median(diffs) > 3


def test_split_is_official_and_val_patient_disjoint(small):
    c = load_nih(small, image_size=32, seed=0, val_fraction=0.25)
    tv = (small / "train_val_list.txt").read_text().split()
    te = (small / "test_list.txt").read_text().split()
    assert set(c.train.image_ids) | set(c.val.image_ids) == set(tv)
    assert set(c.test.image_ids) == set(te)
    assert not set(c.train.patient_ids) & set(c.val.patient_ids)
    assert len(c.val) > 0
    again = load_nih(small, image_size=32, seed=0, val_fraction=0.25)
    assert again.val.image_ids == c.val.image_ids and again.fingerprint == c.fingerprint


def test_images_directory_layout_and_rgba(small, tmp_path):
    root = copy(small, tmp_path)
    # flatten into images/ as some mirrors ship it, and make one image RGBA
    flat = root / "images"
    flat.mkdir()
    for p in (root / "images_001" / "images").iterdir():
        p.rename(flat / p.name)
    shutil.rmtree(root / "images_001")
    name = sorted(flat.iterdir())[0]
    g = np.asarray(Image.open(name))
    Image.fromarray(np.dstack([g, g, g, np.full_like(g, 255)]), mode="RGBA").save(name)
    c = load_nih(root, image_size=16)
    i = (c.train.image_ids + c.val.image_ids + c.test.image_ids).index(name.name)
    split = [c.train, c.val, c.test][[name.name in s.image_ids for s in (c.train, c.val, c.test)].index(True)]
    img = split.load_images([split.index_of(name.name)])
    assert img.shape == (1, 1, 16, 16)
    assert find_layout(root).image_dirs == [flat]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NIHDataError, match="images_001") as e:
        load_nih(tmp_path, image_size=32)
    assert "nihcc.app.box.com" in str(e.value)
    assert "Data_Entry_2017" in str(e.value) and "test_list.txt" in str(e.value)


def test_falls_back_to_wheel_tables_when_only_images(mirror, tmp_path):
    root, _ = mirror
    only = tmp_path / "only"
    shutil.copytree(root / "images_001", only / "images_001")
    # keep only the box images, as someone who extracted them would
    info = dataset_info(only)
    assert set(info["missing_files"]) == {"Data_Entry_2017*.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"}
    assert any("torchxrayvision" in f for f in info["fallbacks"])
    assert info["boxes"] == 984 and info["box_images"] == 880
    c = load_nih(only, image_size=16, preload=False)
    assert len(c.test.boxes) == 984
    assert any("not the official split" in f for f in c.info["fallbacks"])
    assert len(c.train) == 0 and c.info["warnings"]  # only box images: all their patients are test


def test_corrupt_image_named_or_skipped(small, tmp_path):
    root = copy(small, tmp_path)
    bad = sorted((root / "images_001" / "images").iterdir())[3]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(NIHDataError, match=bad.name):
        load_nih(root, image_size=16)
    c = load_nih(root, image_size=16, skip_bad=True)
    assert c.info["skipped_bad_images"] == 1 and c.info["skipped_bad_image_ids"] == [bad.name]
    assert bad.name not in c.train.image_ids + c.val.image_ids + c.test.image_ids


def test_truncated_png_is_caught_with_skip_bad(small, tmp_path):
    root = copy(small, tmp_path)
    bad = sorted((root / "images_001" / "images").iterdir())[5]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    c = load_nih(root, image_size=16, skip_bad=True)
    assert c.info["skipped_bad_images"] == 1


def test_absurd_header_refused_before_decoding(small, tmp_path):
    import struct
    import zlib

    root = copy(small, tmp_path)
    bad = sorted((root / "images_001" / "images").iterdir())[0]
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    bad.write_bytes(png + b"\x00" * 16)
    with pytest.raises(NIHDataError, match="100000x100000"):
        load_nih(root, image_size=16)


@pytest.mark.parametrize("evil", ["../etc/passwd", "..", "a/b.png", "/abs.png"])
def test_ids_escaping_the_root_are_refused(small, tmp_path, evil):
    root = copy(small, tmp_path)
    lines = (root / "test_list.txt").read_text().splitlines()
    lines[0] = evil
    (root / "test_list.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(NIHDataError, match="escape"):
        load_nih(root, image_size=16)


def test_datasets_info_cli_json(mirror):
    from typer.testing import CliRunner

    from wsl_bench.cli import app

    root, _ = mirror
    res = CliRunner().invoke(app, ["datasets", "info", "--data", "nih", "--root", str(root), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    for key in ("images", "box_images", "boxes", "boxes_per_label", "split", "missing_files"):
        assert key in d
    assert d["boxes"] == 984 and d["split"]["test"] == 880


def test_datasets_info_cli_missing_root(tmp_path):
    from typer.testing import CliRunner

    from wsl_bench.cli import app

    res = CliRunner().invoke(app, ["datasets", "info", "--data", "nih", "--root", str(tmp_path / "none")])
    assert res.exit_code == 2
    assert "nihcc.app.box.com" in res.output
