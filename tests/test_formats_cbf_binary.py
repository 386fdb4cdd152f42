"""The byte-offset data of a CBF read on their own (plain files) or from the whole file
(compressed files, headers longer than the first read): the same pixels either way."""

import gzip

import numpy as np
import pytest

from gonio.core.formats.cbf_binary import _binary_section, decode_pixels

fabio = pytest.importorskip("fabio")


@pytest.fixture(scope="module")
def cbf(tmp_path_factory):
    rng = np.random.default_rng(2)
    data = rng.poisson(3.0, (97, 131)).astype(np.int32)
    data[5, 7], data[50, 60], data[3, 100] = 40_000, 2_000_000, -1  # 2- and 4-byte deltas
    folder = tmp_path_factory.mktemp("cbf_binary")
    path = folder / "plain_0001.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    return folder, path.read_bytes(), data


def test_plain_file_reads_its_data_section_alone(cbf):
    folder, raw, data = cbf
    section = _binary_section(str(folder / "plain_0001.cbf"))
    assert section is not None
    lay, packed = section
    start = raw.find(b"\x0c\x1a\x04\xd5") + 4
    assert packed == raw[start:start + lay["size"]]
    assert np.array_equal(decode_pixels(str(folder / "plain_0001.cbf")), data)


def test_long_header_and_compressed_file_read_the_whole_file(cbf):
    folder, raw, data = cbf
    first_line = raw.index(b"\n") + 1
    long_header = raw[:first_line] + b"# " + b"x" * 70_000 + b"\n" + raw[first_line:]
    (folder / "long_0001.cbf").write_bytes(long_header)
    (folder / "packed_0001.cbf.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    for name in ("long_0001.cbf", "packed_0001.cbf.gz"):
        path = str(folder / name)
        assert _binary_section(path) is None
        assert np.array_equal(decode_pixels(path), data)
