"""The one image reader (`wsl_bench.images`): known answers for every format it accepts, and refusals
(pixel limit, decompression bombs, DICOM, saturated images) as one-line errors before decoding."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from wsl_bench.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    check_not_saturated,
    check_pixels,
    max_pixels,
    read_grey,
    read_header,
)


def png_header_only(path, w: int, h: int, bit_depth: int = 8, colour: int = 0) -> None:
    """A tiny PNG whose IHDR claims w x h pixels (IDAT holds one compressed row of zeros)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_8bit_grey_is_read_unchanged(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(arr, mode="L").save(tmp_path / "a.png")
    assert np.array_equal(read_grey(tmp_path / "a.png"), arr)


def test_16bit_png_is_scaled_by_its_maximum_not_clipped(tmp_path):
    # a 12-bit X-ray stored in 16 bits: values 0..4095; convert("L") would make ~all of it white
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096).astype(np.uint16)
    arr[0, 0] = 4095
    Image.fromarray(arr).save(tmp_path / "a16.png")
    with Image.open(tmp_path / "a16.png") as im:
        assert im.mode.startswith("I")
    grey = read_grey(tmp_path / "a16.png")
    expected = (255 * arr.astype(np.float64) / 4095).astype(np.uint8)
    assert np.array_equal(grey, expected)
    assert (grey == 255).mean() < 0.01 and grey.mean() == pytest.approx(127, abs=2)


def test_rgba_and_palette_use_luma_and_ignore_alpha(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    luma = (200 * 299 + 100 * 587 + 50 * 114) // 1000  # ITU-R 601-2, what PIL's convert("L") computes
    assert np.all(np.abs(read_grey(tmp_path / "c.png").astype(int) - luma) <= 1)
    Image.fromarray(rgba[..., :3], mode="RGB").convert("P", palette=Image.ADAPTIVE).save(tmp_path / "p.png")
    assert np.all(np.abs(read_grey(tmp_path / "p.png").astype(int) - luma) <= 2)


def test_jpeg_and_resizing(tmp_path):
    arr = np.full((40, 60), 90, np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    grey = read_grey(tmp_path / "a.jpg")
    assert grey.shape == (40, 60) and np.all(np.abs(grey.astype(int) - 90) <= 2)
    assert read_grey(tmp_path / "a.jpg", size=16).shape == (16, 16)


def test_the_nih_loader_reads_through_the_same_reader(tmp_path):
    from wsl_bench.data.nih import decode_png

    arr = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "n.png")
    assert np.array_equal(decode_png(tmp_path / "n.png", None), read_grey(tmp_path / "n.png"))
    assert np.array_equal(decode_png(tmp_path / "n.png", 8), read_grey(tmp_path / "n.png", 8))


def test_a_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    png_header_only(tmp_path / "huge.png", 10_000, 10_000)
    assert (tmp_path / "huge.png").stat().st_size < 200
    with pytest.raises(ImageError, match=r"huge\.png: header claims: 10000 x 10000 .* over the limit .*WSL_BENCH_MAX_PIXELS"):
        read_header(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="refused before decoding"):
        read_grey(tmp_path / "huge.png")


def test_decompression_bombs_are_one_line_errors(tmp_path, monkeypatch):
    # past our own limit (raised here), PIL's bomb check still answers with the same kind of line
    monkeypatch.setenv("WSL_BENCH_MAX_PIXELS", str(10**12))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    png_header_only(tmp_path / "bomb.png", 3000, 3000)
    with pytest.raises(ImageError, match=r"bomb\.png: refused as a decompression bomb"):
        read_grey(tmp_path / "bomb.png")


def test_the_limit_is_documented_and_can_be_raised(monkeypatch):
    assert max_pixels() == DEFAULT_MAX_PIXELS == 4096 * 4096
    with pytest.raises(ValueError, match="over the limit"):
        check_pixels(4097, 4096, "x")
    monkeypatch.setenv("WSL_BENCH_MAX_PIXELS", str(8192 * 8192))
    assert check_pixels(8192, 8192, "x") == (8192, 8192)
    monkeypatch.setenv("WSL_BENCH_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="WSL_BENCH_MAX_PIXELS='lots' must be a positive whole number"):
        max_pixels()
    with pytest.raises(ValueError, match="must be positive"):
        monkeypatch.delenv("WSL_BENCH_MAX_PIXELS")
        check_pixels(0, 5, "x")


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_unreadable_files_are_one_line_errors(tmp_path, payload):
    (tmp_path / "x.png").write_bytes(payload)
    with pytest.raises(ImageError, match=r"x\.png"):
        read_grey(tmp_path / "x.png")


def test_dicom_is_refused_with_the_fix(tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 16)
    with pytest.raises(ImageError, match="DICOM is not read yet; convert it"):
        read_grey(tmp_path / "a.dcm")


def test_saturated_images_are_not_explained(tmp_path):
    white = np.full((10, 10), 255, np.uint8)
    with pytest.raises(ImageError, match=r"100\.0 % of its pixels are saturated"):
        check_not_saturated(white, tmp_path / "w.png")
    ok = white.copy()
    ok[:2] = 0
    assert check_not_saturated(ok, "ok.png") is ok
