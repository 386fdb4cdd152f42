"""Shared pieces of the image format readers: errors, file opening, the format protocol.

Every format is a class with class methods only (no per-file state), so a
format is named by a string, pickles by reference and is safe to use from
worker processes:

- ``understand(head: bytes) -> bool``: does the start of the (decompressed)
  file look like this format? Formats are recognised by content, never by
  file name.
- ``read_models(path) -> (Beam, Detector, Goniometer | None, Scan | None)``:
  geometry from the header only, no pixel data read.
- ``read_pixels(path, index_in_file=0) -> tuple[np.ndarray, ...]``: one
  (slow, fast) array per panel.
- ``num_images(path) -> int``: images held in the file (1 except HDF5).
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import zlib

from gonio.core.errors import GonioError

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
HEAD_BYTES = 8192


class ImageFormatError(GonioError):
    """An image file gonio cannot read (unknown format, corrupt, truncated, missing)."""


def compression_of(path: str) -> str:
    """'gzip', 'bzip2' or '' from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    if magic[:3] == BZIP2_MAGIC:
        return "bzip2"
    return ""


def open_image(path: str) -> io.BufferedIOBase:
    """Open ``path`` for binary reading, decompressing gzip / bzip2 transparently."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bzip2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def read_head(path: str, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of the decompressed file content."""
    check_exists(path)
    try:
        with open_image(path) as f:
            return f.read(n)
    except (OSError, EOFError) as e:
        raise ImageFormatError(
            f"Could not read the start of {path}: {e}. The file may be truncated or not a "
            "valid gzip/bzip2 archive; check the copy of the file, or leave it out of the import."
        ) from e


def read_all(path: str) -> bytes:
    """The whole decompressed file content, with a clear error on a damaged archive.

    The file is read in one piece and decompressed in one call into zlib or
    bz2, which release the GIL while they work: threads reading images
    decompress them in parallel (a streamed read holds the GIL between its
    many small blocks). Unusual gzip files (several members) and damaged ones
    go through the streamed read, which reports the damage.
    """
    check_exists(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == GZIP_MAGIC:
            try:
                d = zlib.decompressobj(wbits=31)
                out = d.decompress(raw)
                if d.eof and not d.unused_data:  # one member, all of it
                    return out
            except zlib.error:
                pass
        elif raw[:3] == BZIP2_MAGIC:
            try:
                return bz2.decompress(raw)
            except (OSError, ValueError):
                pass
        else:
            return raw
        with open_image(path) as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise ImageFormatError(
            f"Could not read {path}: {e}. The file is truncated or its compression is "
            "damaged; copy it again from the source or leave it out."
        ) from e


def check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise ImageFormatError(
            f"The image file {path} does not exist. Check the path and the file name "
            "(and that the disk holding the images is mounted)."
        )
    if os.path.isdir(path):
        raise ImageFormatError(f"{path} is a folder, not an image file.")


def truncated(path: str, what: str) -> ImageFormatError:
    return ImageFormatError(
        f"The image {path} is truncated or corrupt: {what}. Copy the file again from its "
        "source, or leave it out of the import (image_range)."
    )


def header_error(path: str, fmt: str, what: str) -> ImageFormatError:
    return ImageFormatError(
        f"The {fmt} header of {path} could not be understood: {what}. The file may be "
        "damaged, or written by a program gonio does not know; set the geometry with the "
        "import overrides if the header is incomplete."
    )


class ImageFormat:
    """Base class of a format: class methods only (see module docstring)."""

    name = ""
    description = ""

    @classmethod
    def understand(cls, head: bytes) -> bool:
        raise NotImplementedError

    @classmethod
    def read_models(cls, path: str):
        raise NotImplementedError

    @classmethod
    def read_pixels(cls, path: str, index_in_file: int = 0):
        raise NotImplementedError

    @classmethod
    def num_images(cls, path: str) -> int:
        return 1
