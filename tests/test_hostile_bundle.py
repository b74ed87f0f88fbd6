"""Hostile heatmap bundles: property-based fuzzing of `wsl_bench.heatmaps.read_bundle`.

"Clear error" here means: a ValueError (or FileNotFoundError) whose message names the bundle's path,
and, for a problem inside one entry, the entry's key. Anything else (KeyError, AttributeError,
zlib.error, MemoryError, an unpickled object, ...) is a failure. Maps that do load are 2-D, finite
float32 arrays.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wsl_bench.heatmaps import MAX_MAP_PIXELS, read_bundle, write_bundle

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MARKER = "wsl_bench_pwned"


def read_everything(path: Path) -> dict[str, np.ndarray]:
    """Open the bundle and read every map; return the good ones, assert every error is a clear one."""
    try:
        bundle = read_bundle(path)
    except (ValueError, FileNotFoundError) as exc:
        assert str(path) in str(exc), f"error does not name the file: {exc}"
        return {}
    good = {}
    with bundle:
        for key in list(bundle):
            assert key in bundle
            try:
                arr = bundle[key]
            except ValueError as exc:
                assert str(path) in str(exc) and repr(key) in str(exc), f"error does not name file+key: {exc}"
                continue
            assert arr.ndim == 2 and arr.dtype == np.float32 and np.isfinite(arr).all()
            good[key] = arr
        for iid, (h, w) in bundle.image_sizes.items():
            assert isinstance(iid, str) and h >= 1 and w >= 1
    return good


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compress: bool = True) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)


class Boom:
    """Unpickling this object would create a marker file: the proof that pickled code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.fixture
def bundle_path(tmp_path):
    return tmp_path / "maps.npz"


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_clearly(bundle_path, data):
    bundle_path.write_bytes(data)
    read_everything(bundle_path)


KEYS = st.one_of(
    st.sampled_from(["a.png::Mass", "b.png::Infiltration", "c.png::Infiltrate", "__image_sizes__", "x", "::",
                     "a.png::", "::Mass", "a::b::Nodule", "dir/../a.png::Mass", "", "__other__"]),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=20),
)
DTYPES = st.sampled_from(
    ["float16", "float32", "float64", "int8", "uint16", "int64", "bool", "complex64", "U3", "S4",
     "datetime64[s]", "timedelta64[ms]", [("a", "f4"), ("b", "i2")]]
)


@st.composite
def hostile_arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=8 * min(dtype.itemsize, 4))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@FUZZ
@given(entries=st.dictionaries(KEYS, hostile_arrays(), max_size=4), compress=st.booleans())
def test_npz_with_hostile_keys_dtypes_and_shapes(bundle_path, entries, compress):
    write_zip(bundle_path, {f"{k}.npy": npy_bytes(v) for k, v in entries.items()}, compress)
    good = read_everything(bundle_path)
    for key, arr in good.items():
        src = entries[key]
        assert src.ndim == 2 and src.dtype.kind in "biuf"
        np.testing.assert_array_equal(arr, src.astype(np.float32))


@FUZZ
@given(sizes=st.one_of(st.text(max_size=30), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)))
def test_hostile_image_size_tables(bundle_path, sizes):
    raw = sizes if isinstance(sizes, str) else json.dumps(sizes)
    write_zip(bundle_path, {"a.png::Mass.npy": npy_bytes(np.ones((2, 2))), "__image_sizes__.npy": npy_bytes(np.array(raw))})
    read_everything(bundle_path)


@FUZZ
@given(cut=st.integers(0, 10_000), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4))
def test_truncated_and_bit_flipped_bundles(tmp_path, cut, flips):
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    write_bundle(good, {"a.png::Mass": rng.random((16, 16)), "b.png::Nodule": np.zeros((4, 8))}, {"a.png": (32, 32)})
    data = bytearray(good.read_bytes())
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data[: max(1, len(data) - cut % len(data))]))
    read_everything(bad)


@FUZZ
@given(header=st.binary(max_size=200), version=st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\xff\x00"]))
def test_fuzzed_npy_headers(bundle_path, header, version):
    hlen = len(header).to_bytes(2 if version != b"\x02\x00" else 4, "little")
    write_zip(bundle_path, {"a.png::Mass.npy": b"\x93NUMPY" + version + hlen + header + b"\x00" * 64})
    read_everything(bundle_path)


def test_header_claiming_a_huge_shape_is_refused_before_allocation(bundle_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header = header.ljust(118) + "\n"
    write_zip(bundle_path, {"a.png::Mass.npy": b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()})
    b = read_bundle(bundle_path)
    with pytest.raises(ValueError, match=r"maps\.npz.*'a\.png::Mass'.*(larger than|fewer bytes)"):
        b["a.png::Mass"]
    # A real (zip-bomb style, highly compressible) map over the pixel limit is refused too.
    side = int(np.sqrt(MAX_MAP_PIXELS)) + 1
    header = f"{{'descr': '|b1', 'fortran_order': False, 'shape': ({side}, {side}), }}".ljust(118) + "\n"
    with zipfile.ZipFile(bundle_path, "w", zipfile.ZIP_DEFLATED) as z, z.open("a.png::Mass.npy", "w", force_zip64=True) as fh:
        fh.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
        chunk = b"\x00" * (1 << 20)
        for _ in range(side * side // len(chunk) + 1):
            fh.write(chunk)
    with pytest.raises(ValueError, match=r"'a\.png::Mass'.*limit"):
        read_bundle(bundle_path)["a.png::Mass"]


def test_pickled_object_arrays_never_run(bundle_path, tmp_path):
    marker = tmp_path / MARKER
    obj = np.empty((2, 2), dtype=object)
    obj[0, 0] = Boom(str(marker))
    write_zip(bundle_path, {"a.png::Mass.npy": npy_bytes(obj), "__image_sizes__.npy": npy_bytes(np.array([Boom(str(marker))], dtype=object))})
    with pytest.raises(ValueError, match=r"maps\.npz.*__image_sizes__.*pickled"):
        read_bundle(bundle_path)
    write_zip(bundle_path, {"a.png::Mass.npy": npy_bytes(obj)})
    with pytest.raises(ValueError, match=r"maps\.npz.*'a\.png::Mass'.*pickled"):
        read_bundle(bundle_path)["a.png::Mass"]
    # A bare pickle (not a zip at all) is refused as "not an .npz".
    bundle_path.write_bytes(pickle.dumps(Boom(str(marker))))
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_bundle(bundle_path)
    assert not marker.exists()


def test_non_array_members_and_bad_keys_name_the_file(bundle_path):
    write_zip(bundle_path, {"a.png::Mass.npy": npy_bytes(np.ones((2, 2))), "notes.txt": b"hi"})
    with pytest.raises(ValueError, match=r"maps\.npz.*'notes\.txt' is not a \.npy array"):
        read_bundle(bundle_path)
    write_zip(bundle_path, {"nokey.npy": npy_bytes(np.ones((2, 2)))})
    with pytest.raises(ValueError, match=r"maps\.npz.*'nokey'"):
        read_bundle(bundle_path)


def test_round_trip_still_exact(bundle_path):
    rng = np.random.default_rng(1)
    maps = {"a.png::Mass": rng.random((7, 5)).astype(np.float32), "b.png::Infiltrate": np.eye(3, dtype=np.float32)}
    write_bundle(bundle_path, maps, {"a.png": (1024, 1024), "b.png": (10, 20)})
    with read_bundle(bundle_path) as b:
        assert sorted(b) == sorted(maps) and b.image_sizes == {"a.png": (1024, 1024), "b.png": (10, 20)}
        for k, v in maps.items():
            np.testing.assert_array_equal(b[k], v)
