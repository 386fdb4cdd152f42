"""What kind of file a path holds, so that gonio never writes over a file of another kind.

A step run again replaces its own output (an MTZ over the MTZ, a report over the
report), as DIALS programs do. Writing over a file of another kind is refused
instead: ``report output=scaled.mtz`` (a typo) would otherwise lose the scaled
data, and a path that names a file of the user's (a configuration file, a text
file) would lose it. The kind is read from the first bytes of a file (its
signature), not from its name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gonio.core.errors import GonioError

HEAD_BYTES = 256  # as much of a file as the signatures below look at

_NUMBERS_ROW = re.compile(rb"^[ 0-9.\-]{20,}\r?\n")  # a SHELX HKLF row: numbers only

# The kinds, as messages name them.
MTZ = "an MTZ file"
PNG = "a PNG picture"
HDF5 = "an HDF5 (NeXus) file"
CBF = "a CBF image"
SMV = "an SMV image"
REFL = "a DIALS reflection file"
NPZ = "a zip (.npz) archive"
HTML = "an HTML page"
JSON = "a JSON file"
XDS_ASCII = "an XDS_ASCII file"
MMCIF = "an mmCIF file"
SHELX_INS = "a SHELX instruction file"
SHELX_HKL = "a SHELX reflection file"

#: (kind, test of a file's first bytes), in the order they are tried.
_KINDS = (
    (MTZ, lambda h: h.startswith(b"MTZ ")),
    (PNG, lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    (HDF5, lambda h: h.startswith(b"\x89HDF\r\n\x1a\n")),
    (CBF, lambda h: h.startswith(b"###CBF")),
    (SMV, lambda h: h.startswith(b"{\nHEADER_BYTES")),
    (REFL, lambda h: b"dials::af::reflection_table" in h[:64]),
    (NPZ, lambda h: h.startswith(b"PK\x03\x04")),
    (HTML, lambda h: h.lstrip()[:14].lower() in (b"<!doctype html", )
     or h.lstrip()[:5].lower() == b"<html"),
    (JSON, lambda h: h.lstrip()[:1] in (b"{", b"[")),
    (XDS_ASCII, lambda h: h.startswith(b"!FORMAT=XDS_ASCII")),
    (MMCIF, lambda h: h.lstrip().startswith(b"data_")),
    (SHELX_INS, lambda h: h.startswith(b"TITL ")),
    (SHELX_HKL, lambda h: _NUMBERS_ROW.match(h) is not None),
)


class OverwriteError(GonioError):
    """Writing would replace a file of another kind, or a folder."""


def kind_of(head: bytes) -> str | None:
    """The kind of a file that starts with ``head`` (None: none gonio writes)."""
    for kind, test in _KINDS:
        if test(head):
            return kind
    return None


def file_kind(path: str | os.PathLike) -> str | None:
    """The kind of the file at ``path`` (None for a kind gonio does not write)."""
    with open(path, "rb") as f:
        return kind_of(f.read(HEAD_BYTES))


def check_replaceable(path: str | os.PathLike, kind: str | None) -> None:
    """Raise :class:`OverwriteError` unless writing a file of ``kind`` to ``path``
    loses nothing: ``path`` does not exist, is empty, or already holds that kind.
    (``kind`` from :func:`kind_of` of the new content; None never replaces a file.)"""
    path = Path(path)
    if path.is_dir():
        raise OverwriteError(f"{path} is a folder; give the name of a file to write.")
    try:
        if not path.exists() or path.stat().st_size == 0:
            return
        found = file_kind(path)
    except OSError:
        return  # unreadable: the write itself fails with its own clear error
    if found is None or found != kind:
        what = found or "a file gonio did not write"
        raise OverwriteError(
            f"{path} already exists and is {what}, not {kind or 'the same kind'}: gonio "
            "does not write over a file of another kind, which may be yours. Choose another "
            "name, or move that file away first.")
