"""Whole-file decompression of images (one call into zlib / bz2, which release the GIL)."""

from __future__ import annotations

import bz2
import gzip
import os

import pytest

from gonio.core.formats.base import ImageFormatError, read_all

DATA = os.urandom(3000) + b"CBF pixels " * 20000


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lambda b: b],
                         ids=["gzip", "bzip2", "plain"])
def test_content_is_exact(tmp_path, compress):
    path = tmp_path / "image.cbf.x"
    path.write_bytes(compress(DATA))
    assert read_all(str(path)) == DATA


def test_gzip_of_several_members_is_read_whole(tmp_path):
    path = tmp_path / "image.cbf.gz"
    path.write_bytes(gzip.compress(DATA[:5000]) + gzip.compress(DATA[5000:]))
    assert read_all(str(path)) == DATA


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gzip", "bzip2"])
def test_truncated_archive_is_a_clear_error(tmp_path, compress):
    path = tmp_path / "image.cbf.z"
    path.write_bytes(compress(DATA)[:-50])
    with pytest.raises(ImageFormatError, match="truncated or its compression is damaged"):
        read_all(str(path))
