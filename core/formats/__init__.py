"""Image formats, recognised by content (magic bytes, header keys), not file name.

>>> fmt = identify("/data/th_8_2_0001.cbf.gz")          # doctest: +SKIP
>>> beam, detector, goniometer, scan = fmt.read_models(path)   # headers only
>>> (pixels,) = fmt.read_pixels(path)                  # one (slow, fast) array per panel

gzip and bzip2 compressed files are read transparently (recognised by their
magic bytes too). :class:`ImageSequenceReader` reads the images of an
experiment lazily, from any process.
"""

from __future__ import annotations

import os

from .base import ImageFormat, ImageFormatError, read_head
from .fullcbf import FullCBF
from .minicbf import MiniCBF
from .nexus import NXmx
from .reader import ImageSequenceReader
from .smv import SMV

#: every format gonio reads, tried in this order
FORMATS: tuple[type[ImageFormat], ...] = (FullCBF, MiniCBF, SMV, NXmx)
FORMATS_BY_NAME = {f.name: f for f in FORMATS}


class UnknownImageFormatError(ImageFormatError):
    """The file exists but is not an image in a format gonio reads."""


def supported_formats() -> str:
    return ", ".join(f.description for f in FORMATS)


def identify(path: str | os.PathLike) -> type[ImageFormat]:
    """The format class that reads ``path``, judged from its content."""
    path = os.fspath(path)
    head = read_head(path)
    for fmt in FORMATS:
        if fmt.understand(head):
            return fmt
    raise UnknownImageFormatError(
        f"{path} is not an image gonio can read. gonio recognises images by their content "
        f"and reads: {supported_formats()} (optionally gzip or bzip2 compressed). Check that "
        "the file is a diffraction image and not, e.g., a log or a processing result."
    )


def format_by_name(name: str) -> type[ImageFormat]:
    try:
        return FORMATS_BY_NAME[name]
    except KeyError:
        raise ImageFormatError(
            f"Unknown image format name {name!r}; gonio knows {', '.join(FORMATS_BY_NAME)}."
        ) from None


def read_models(path: str | os.PathLike):
    """(Beam, Detector, Goniometer | None, Scan | None) from the header of ``path``."""
    return identify(path).read_models(os.fspath(path))


def read_pixels(path: str | os.PathLike, index_in_file: int = 0):
    """One (slow, fast) array per panel of image ``index_in_file`` of ``path``."""
    return identify(path).read_pixels(os.fspath(path), index_in_file)


__all__ = [
    "FORMATS",
    "FullCBF",
    "ImageFormat",
    "ImageFormatError",
    "ImageSequenceReader",
    "MiniCBF",
    "NXmx",
    "SMV",
    "UnknownImageFormatError",
    "format_by_name",
    "identify",
    "read_models",
    "read_pixels",
    "supported_formats",
]
