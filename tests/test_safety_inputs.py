"""Hostile NIH inputs (data package API `wsl_bench.data.nih`), fuzzed: image ids can never name a file
outside the image folder, and a PNG header claiming absurd dimensions is refused before decoding.
The data package's own example-based tests are in tests/test_nih.py; these add properties."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsl_bench.data.nih import MAX_SIDE, NIHDataError, check_image_id, read_png_header

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PATHY = st.lists(st.sampled_from(list("ab./\\~:%$0_- \x00\n") + ["..", "/etc/passwd", "C:\\", "\u2215"]),
                 max_size=8).map("".join)


@FUZZ
@given(image_id=st.one_of(PATHY, st.text(max_size=16)))
def test_accepted_ids_stay_inside_the_root(image_id):
    root = Path("/data/nih/images")
    try:
        safe = check_image_id(image_id, "fuzz")
    except NIHDataError as exc:
        assert "fuzz" in str(exc)
        return
    resolved = Path(os.path.normpath(root / safe))
    assert resolved.parent == root and resolved.name == safe and safe not in (".", "..")


def png_with_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@FUZZ
@given(w=st.integers(0, 2**32 - 1), h=st.integers(0, 2**32 - 1))
def test_absurd_png_dimensions_are_refused_before_decoding(tmp_path, w, h):
    path = tmp_path / "x.png"
    path.write_bytes(png_with_header(w, h))  # header only: decoding would fail, so refusal must come first
    with pytest.raises(NIHDataError, match="x.png") as info:
        read_png_header(path)
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        assert "refused before decoding" in str(info.value)
