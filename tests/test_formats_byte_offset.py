"""gonio's byte-offset decoder against fabio's: the same int32 pixels on real detector
images and on streams with every escape width; damaged streams are reported."""

import bz2
import gzip

import numpy as np
import pytest
from conftest import data_path

from gonio.core.formats.base import ImageFormatError
from gonio.core.formats.byte_offset import decode_byte_offset
from gonio.core.formats.cbf_binary import _layout_and_start, decode_pixels

fabio = pytest.importorskip("fabio")
from fabio import compression  # noqa: E402


def _section(raw: bytes) -> tuple[bytes, int]:
    lay, start = _layout_and_start("image", raw)
    return raw[start:start + lay["size"]], lay["n"]


@pytest.mark.parametrize("name", ["thau_3_2_0001.cbf.bz2", "DLS_I03_smargon_0001.cbf.gz",
                                  "DLS_I23_P12M_thau_00001.cbf.gz"])
def test_real_images_decode_to_fabios_pixels(name):
    path = data_path("images", name)
    raw = (bz2.decompress if name.endswith(".bz2") else gzip.decompress)(path.read_bytes())
    packed, n = _section(raw)
    ours, n_decoded = decode_byte_offset(packed, n)
    theirs = np.asarray(compression.decByteOffset(packed, n, dtype="int32"))
    assert n_decoded == n and ours.dtype == np.int32
    assert np.array_equal(ours, theirs)
    assert b"\x80" in packed and ours.min() < 0  # wide deltas met, module gaps


def test_one_two_and_four_byte_deltas_decode_exactly():
    rng = np.random.default_rng(5)
    x = rng.integers(-5, 5, 200_000).astype(np.int64)
    x[rng.integers(0, len(x), 4000)] = rng.integers(-40_000, 40_000, 4000)  # int16 deltas
    x[rng.integers(0, len(x), 4000)] = rng.integers(-2**30, 2**30, 4000)  # int32 deltas
    x[:3] = [2**31 - 1, 0, -2**31 + 1]  # the widest steps of four-byte deltas
    x = x.astype(np.int32)
    packed = compression.compByteOffset(x)
    assert packed.count(b"\x80") > 8000
    ours, n_decoded = decode_byte_offset(packed, len(x))
    assert n_decoded == len(x)
    assert np.array_equal(ours, x)
    assert np.array_equal(ours, np.asarray(compression.decByteOffset(packed, len(x),
                                                                     dtype="int32")))


def _escape64(delta: int) -> bytes:
    return (b"\x80" + (-32768).to_bytes(2, "little", signed=True)
            + (-2**31).to_bytes(4, "little", signed=True) + delta.to_bytes(8, "little",
                                                                          signed=True))


def test_eight_byte_deltas_add_modulo_two_to_the_32():
    packed = b"\x01" + _escape64(2**40 + 5) + _escape64(-2**40 - 2**31) + b"\x02"
    sums = np.cumsum([1, 2**40 + 5, -2**40 - 2**31, 2], dtype=np.int64)
    ours, n_decoded = decode_byte_offset(packed, 4)
    assert n_decoded == 4
    assert ours.tolist() == [int(v) for v in sums.astype(np.int32)]  # two's complement


@pytest.mark.parametrize("cut", [1, 2, 3, 6, 13])
def test_a_stream_cut_short_decodes_fewer_pixels(cut):
    x = np.array([0, 3, 40_000, 41, 2_000_000_000, 7, 8], np.int32)
    packed = compression.compByteOffset(x)
    _, n_decoded = decode_byte_offset(packed[:-cut], len(x))
    assert n_decoded < len(x)


def test_a_damaged_file_says_how_many_pixels_it_holds(tmp_path):
    data = np.arange(64, dtype=np.int32).reshape(8, 8) * 1000
    path = tmp_path / "image_0001.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    assert np.array_equal(decode_pixels(str(path)), data)
    raw = path.read_bytes()
    packed, n = _section(raw)
    assert packed.endswith(b"\x80" + (63_000 - 62_000).to_bytes(2, "little"))
    # the last delta's escape turned into the start of a four-byte one, which the
    # declared size of the data section does not hold
    start = raw.index(packed)
    end = start + len(packed)
    path.write_bytes(raw[:end - 2] + b"\x00\x80" + raw[end:])
    with pytest.raises(ImageFormatError, match="63 of 64 pixels decoded"):
        decode_pixels(str(path))
