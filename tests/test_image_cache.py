"""The resized NIH image cache: identical pixels to the uncached loader, checksummed, rebuilt on change,
refused when the disk lacks room, and reachable from the run's data settings."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image

from wsl_bench.data import image_cache as IC
from wsl_bench.data import nih as N
from wsl_bench.data.export import export_nih_layout
from wsl_bench.data.nih import NIHDataError, load_nih


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 48-image NIH-layout folder at 96 px; one image stored as 16-bit and one as RGBA (both go through
    the one reader's conversions, so the cache must hold their converted pixels)."""
    root = tmp_path_factory.mktemp("nihsrc") / "nih"
    export_nih_layout(root, n=48, size=96, seed=3)
    pngs = sorted((root / "images_001" / "images").iterdir())
    g = np.asarray(Image.open(pngs[0]).convert("L"))
    Image.fromarray((g.astype(np.uint16) * 12).astype(np.uint16)).save(pngs[0])  # 16-bit, max ~3060
    g = np.asarray(Image.open(pngs[1]).convert("L"))
    Image.fromarray(np.dstack([g, g // 2, g, np.full_like(g, 255)]), mode="RGBA").save(pngs[1])
    return root


@pytest.fixture
def root(source, tmp_path):
    dst = tmp_path / "nih"
    shutil.copytree(source, dst)
    return dst


SPLITS = ("train", "val", "test")


def all_images(split) -> torch.Tensor:
    return split.load_images(list(range(len(split))))


def test_cached_tensors_equal_uncached_tensors(root, tmp_path):
    plain = load_nih(root, image_size=40, preload=False, cache=False)
    cached = load_nih(root, image_size=40, cache=True, cache_dir=tmp_path / "c", preload=False)
    for s in SPLITS:
        a, b = getattr(plain, s), getattr(cached, s)
        assert isinstance(b.images, np.memmap) and a.images is None
        assert len(a) == len(b) > 0
        assert torch.equal(all_images(a), all_images(b)), s
        for i in (0, len(a) - 1):  # the per-item path the training DataLoader uses
            assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["labels"], b[i]["labels"])
        assert b.image_ids == a.image_ids
    assert cached.fingerprint == plain.fingerprint  # the cache changes where pixels come from, not what they are
    assert cached.info["image_cache"]["train"] == str(tmp_path / "c" / "nih-train-40px.npy")
    assert plain.info["image_cache"] == {"train": None, "val": None, "test": None}
    # the 16-bit and RGBA images are in there, converted by the one reader
    from wsl_bench.images import read_grey

    first = sorted((root / "images_001" / "images").iterdir())[:2]
    for p in first:
        split = next(getattr(cached, s) for s in SPLITS if p.name in getattr(cached, s).image_ids)
        got = split.load_images([split.index_of(p.name)])[0, 0]
        assert torch.equal(got, torch.from_numpy(np.array(read_grey(p, 40))).float() / 255)


def test_in_memory_preload_equals_the_cache_and_the_plain_preload(root, tmp_path):
    plain = load_nih(root, image_size=24, preload=True, cache=False)
    cached = load_nih(root, image_size=24, preload=True, cache=True, cache_dir=tmp_path / "c")
    for s in SPLITS:
        a, b = getattr(plain, s), getattr(cached, s)
        assert not isinstance(b.images, np.memmap) and b.cache_file is not None  # copied into memory
        assert np.array_equal(a.images, b.images)


def test_subsets_and_pickles_keep_the_map_not_a_copy(root, tmp_path):
    c = load_nih(root, image_size=32, cache=True, cache_dir=tmp_path / "c")
    tr = c.train
    sub = tr.subset([5, 2, 7, 2])
    assert isinstance(sub.images, np.memmap) and sub.rows.tolist() == [5, 2, 7, 2]
    assert torch.equal(sub.load_images([0, 1, 2, 3]), tr.load_images([5, 2, 7, 2]))
    subsub = sub.subset([2, 0])
    assert subsub.rows.tolist() == [7, 5] and torch.equal(subsub[0]["image"], tr[7]["image"])
    blob = pickle.dumps(sub)  # what a DataLoader worker receives under spawn
    assert len(blob) < 16_000 and sub.images.nbytes > 0
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap)
    assert torch.equal(back.load_images([0, 1, 2, 3]), sub.load_images([0, 1, 2, 3]))


def test_pool_build_equals_one_process_build_and_sidecar_describes_it(root, tmp_path):
    files = sorted((root / "images_001" / "images").iterdir())
    one = IC.open_or_build(tmp_path / "one" / "x.npy", files, 32, workers=1)
    many = IC.open_or_build(tmp_path / "many" / "x.npy", files, 32, workers=2)
    assert (tmp_path / "one" / "x.npy").read_bytes() == (tmp_path / "many" / "x.npy").read_bytes()
    assert one.shape == many.shape == (len(files), 32, 32) and one.dtype == np.uint8
    meta = json.loads((tmp_path / "many" / "x.npy.json").read_text())
    assert meta["shape"] == [len(files), 32, 32] and meta["size"] == 32 and meta["dtype"] == "uint8"
    assert meta["source"] == IC.source_fingerprint(files) and meta["source"]["n"] == len(files)
    import hashlib

    data = (tmp_path / "many" / "x.npy").read_bytes()
    assert meta["checksum"]["chunks"] == [hashlib.sha256(data).hexdigest()]  # one 64 MiB chunk here
    assert IC.problem(tmp_path / "many" / "x.npy", files, 32) is None
    assert not [p for p in (tmp_path / "many").iterdir() if p.name.endswith(".tmp")]


def _cache(root, tmp_path, size=32):
    c = load_nih(root, image_size=size, cache=True, cache_dir=tmp_path / "c")
    return c, tmp_path / "c" / f"nih-train-{size}px.npy"


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "sidecar removed", "sidecar edited", "sidecar garbage"])
def test_damaged_cache_is_rebuilt_to_the_same_bytes(root, tmp_path, damage, caplog):
    c, path = _cache(root, tmp_path)
    good, before = path.read_bytes(), all_images(c.train)  # (c.train maps the file damaged in place below)
    side = IC.sidecar_path(path)
    if damage == "flipped byte":
        _flip_byte(path, len(good) - 100)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "sidecar removed":
        side.unlink()
    elif damage == "sidecar edited":
        meta = json.loads(side.read_text())
        meta["checksum"]["chunks"] = ["0" * 64]
        side.write_text(json.dumps(meta))
    else:
        side.write_text("[1, 2")
    files = c.train.paths
    assert IC.problem(path, files, 32) is not None
    with caplog.at_level("WARNING", logger="wsl_bench.data.image_cache"):
        again = load_nih(root, image_size=32, cache=True, cache_dir=tmp_path / "c")
    assert "rebuilt" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() == good and IC.problem(path, files, 32) is None
    assert torch.equal(all_images(again.train), before)


def test_an_intact_cache_is_opened_not_rebuilt(root, tmp_path, monkeypatch):
    _, path = _cache(root, tmp_path)
    monkeypatch.setattr(IC, "build", lambda *a, **k: pytest.fail("rebuilt an intact cache"))
    c2 = load_nih(root, image_size=32, cache=True, cache_dir=tmp_path / "c")
    assert isinstance(c2.train.images, np.memmap)


def test_a_changed_source_image_or_size_rebuilds(root, tmp_path):
    c, path = _cache(root, tmp_path)
    victim = c.train.paths[3]
    img = np.asarray(Image.open(victim))
    Image.fromarray(255 - img).save(victim)  # new pixels (new bytes and mtime)
    fresh = load_nih(root, image_size=32, cache=True, cache_dir=tmp_path / "c")
    plain = load_nih(root, image_size=32, cache=False, preload=False)
    assert torch.equal(fresh.train[3]["image"], plain.train[3]["image"])
    assert not torch.equal(fresh.train[3]["image"], c.train[3]["image"])
    # another size is another file; the first stays valid
    other = load_nih(root, image_size=16, cache=True, cache_dir=tmp_path / "c")
    assert other.train.images.shape[1:] == (16, 16) and (tmp_path / "c" / "nih-train-16px.npy.json").is_file()
    assert IC.problem(path, fresh.train.paths, 32) is None


def test_a_changed_image_list_rebuilds_the_split(root, tmp_path):
    c, _ = _cache(root, tmp_path, size=24)
    n = len(c.train) + len(c.val)
    # drop one train_val image from the list: the split's file list changes
    tv = (root / "train_val_list.txt").read_text().split()
    (root / "train_val_list.txt").write_text("\n".join(tv[1:]) + "\n")
    c2 = load_nih(root, image_size=24, cache=True, cache_dir=tmp_path / "c")
    assert len(c2.train) + len(c2.val) == n - 1
    plain = load_nih(root, image_size=24, cache=False)
    for s in SPLITS:
        assert torch.equal(all_images(getattr(c2, s)), all_images(getattr(plain, s)))


def test_no_room_is_one_line_naming_folder_bytes_and_the_option(root, tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(IC.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    folder = tmp_path / "small-disk"
    with pytest.raises(IC.ImageCacheError) as e:
        load_nih(root, image_size=64, cache=True, cache_dir=folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg
    n_train = len(load_nih(root, image_size=8, cache=False).train)
    needed = IC.nbytes_needed(n_train, 64)
    assert f"{needed:,} bytes" in msg and "1,000 bytes" in msg and "are free" in msg
    assert "data.cache_dir" in msg and "data.cache=false" in msg
    assert not [p for p in folder.iterdir() if not p.name.startswith(".") or p.name.endswith(".tmp")]
    assert isinstance(e.value, ValueError)  # the CLI prints ValueErrors as one error line


def test_an_unwritable_cache_folder_is_one_line(root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(IC.ImageCacheError, match="cannot be written") as e:
        load_nih(root, image_size=16, cache=True, cache_dir=blocker / "cache")
    assert "\n" not in str(e.value) and "data.cache_dir" in str(e.value)


def test_a_corrupt_image_in_the_pool_is_an_error_naming_it(root, tmp_path):
    files = sorted((root / "images_001" / "images").iterdir())
    trunc = files[9].read_bytes()
    files[9].write_bytes(trunc[: len(trunc) // 2])
    from wsl_bench.images import ImageError

    with pytest.raises(ImageError, match=files[9].name):
        IC.open_or_build(tmp_path / "x" / "x.npy", files[8:], 16, workers=2)
    assert not (tmp_path / "x" / "x.npy").exists() and not list((tmp_path / "x").glob("*.tmp"))
    with pytest.raises(NIHDataError, match=files[9].name) as e:  # header fine, pixels cut: caught in the pool
        load_nih(root, image_size=16, cache=True, cache_dir=tmp_path / "c")
    assert "--set data.skip_bad=true" in str(e.value) and "\n" not in str(e.value)
    c = load_nih(root, image_size=16, cache=True, cache_dir=tmp_path / "c", skip_bad=True)
    assert c.info["skipped_bad_images"] == 1 and isinstance(c.train.images, np.memmap)


def test_default_cache_is_automatic_only_over_the_preload_budget(root, tmp_path, monkeypatch):
    monkeypatch.setenv("WSL_BENCH_CACHE", str(tmp_path / "wb"))
    small = load_nih(root, image_size=16)  # fits in memory: preloaded as before, nothing written
    assert not (tmp_path / "wb").exists() and not isinstance(small.train.images, np.memmap)
    monkeypatch.setattr(N, "MAX_PRELOAD_BYTES", 0)  # as at paper scale: no split fits
    big = load_nih(root, image_size=16)
    made = sorted((tmp_path / "wb" / "images").glob("nih-*/nih-*-16px.npy"))
    assert [p.name for p in made] == ["nih-test-16px.npy", "nih-train-16px.npy", "nih-val-16px.npy"]
    assert isinstance(big.train.images, np.memmap)
    assert torch.equal(all_images(big.test), all_images(small.test))
    off = load_nih(root, image_size=16, cache=False)  # and the old per-batch reading stays reachable
    assert off.train.images is None and off.info["image_cache"]["train"] is None
    no_preload = load_nih(root, image_size=16, preload=False)  # explicit preload=False: read per batch
    assert no_preload.train.images is None


def test_run_settings_accept_and_check_the_cache_keys(root, tmp_path):
    from wsl_bench import run as R
    from wsl_bench.data.nih_registered import NIH_KEYS
    from wsl_bench.settings import data_problems

    ok = {"name": "nih", "root": str(root), "image_size": 32, "cache": True, "cache_dir": str(tmp_path / "c")}
    assert data_problems(ok, NIH_KEYS) == []
    assert data_problems({**ok, "cache": None, "cache_dir": None}, NIH_KEYS) == []
    bad = data_problems({**ok, "cache": "yes", "cache_dir": 5}, NIH_KEYS)
    assert any("data.cache='yes'" in p for p in bad) and any("data.cache_dir=5" in p for p in bad)
    cohort = R.load_cohort({**ok, "val_fraction": 0.1, "skip_bad": False}, seed=0)
    assert isinstance(cohort.train.images, np.memmap)
    assert cohort.info["image_cache"]["test"] == str(tmp_path / "c" / "nih-test-32px.npy")
    assert os.stat(cohort.info["image_cache"]["test"]).st_mode & 0o044 == 0o044  # readable by the group/others


def test_getitem_converts_every_grey_level_like_load_image(root, tmp_path):
    """__getitem__ converts in torch (one pass); every uint8 level gives the float32 `_load_image` gives."""
    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(torch.from_numpy(levels).float().div_(255.0).numpy(), levels.astype(np.float32) / 255.0)
    for cohort in (load_nih(root, image_size=24, cache=False, preload=False),
                   load_nih(root, image_size=24, cache=True, cache_dir=tmp_path / "c")):
        ds = cohort.train
        for i in (0, 3, len(ds) - 1):
            item = ds[i]
            assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 24, 24)
            assert np.array_equal(item["image"][0].numpy(), ds._load_image(i)) and item["index"] == i
            assert torch.equal(item["labels"], torch.from_numpy(ds.labels[i]))
