"""Heatmap bundle contract: keys, atomic round trip, lazy validated reads."""

import numpy as np
import pytest

from wsl_bench.heatmaps import bundle_key, read_bundle, split_key, write_bundle


def test_bundle_key_uses_box_spelling_and_round_trips():
    assert bundle_key("00000001_000.png", "Infiltration") == "00000001_000.png::Infiltrate"
    assert bundle_key("a.png", "Hernia") == "a.png::Hernia"
    assert split_key(bundle_key("a.png", "Mass")) == ("a.png", "Mass")
    with pytest.raises(ValueError, match="must not contain"):
        bundle_key("a::b", "Mass")
    with pytest.raises(ValueError, match="not of the form"):
        split_key("no-separator")


def test_write_read_round_trip_with_sizes(tmp_path):
    rng = np.random.default_rng(0)
    maps = {bundle_key(f"{i}.png", "Mass"): rng.random((7, 9)) for i in range(3)}
    sizes = {f"{i}.png": (1024, 900 + i) for i in range(3)}
    path = write_bundle(tmp_path / "m.npz", maps, sizes)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temp file left behind
    with read_bundle(path) as b:
        assert sorted(b) == sorted(maps) and len(b) == 3
        for k, v in maps.items():
            assert b[k].dtype == np.float32 and b[k].shape == (7, 9)
            np.testing.assert_allclose(b[k], v.astype(np.float32))
        assert b.image_sizes == sizes
        assert "0.png::Mass" in b and "__image_sizes__" not in b
        b.validate()


def test_write_rejects_bad_maps_naming_the_key(tmp_path):
    bad = np.ones((4, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x\.png::Mass.*NaN/inf"):
        write_bundle(tmp_path / "m.npz", {"x.png::Mass": bad})
    with pytest.raises(ValueError, match=r"x\.png::Nodule.*2-D"):
        write_bundle(tmp_path / "m.npz", {"x.png::Nodule": np.ones((2, 3, 4))})
    assert not (tmp_path / "m.npz").exists()


def test_read_checks_maps_written_by_other_tools(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, **{"a.png::Mass": np.full((3, 3), np.inf), "b.png::Mass": np.ones(5), "c.png::Mass": np.ones((2, 2))})
    b = read_bundle(path)
    with pytest.raises(ValueError, match=r"a\.png::Mass.*NaN/inf"):
        b["a.png::Mass"]
    with pytest.raises(ValueError, match=r"b\.png::Mass.*2-D"):
        b["b.png::Mass"]
    assert b["c.png::Mass"].sum() == 4
    with pytest.raises(ValueError, match="a.png::Mass"):
        b.validate()


def test_read_rejects_missing_and_non_npz(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_bundle(tmp_path / "nope.npz")
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_bundle(tmp_path / "t.npz")
    np.savez(tmp_path / "k.npz", badkey=np.ones((2, 2)))
    with pytest.raises(ValueError, match="badkey"):
        read_bundle(tmp_path / "k.npz")
