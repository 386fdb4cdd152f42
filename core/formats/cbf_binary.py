"""The binary section of a CBF file: MIME header and byte-offset pixel data.

A CBF (Bernstein & Hammersley, imgCIF/CBF, International Tables G, 2005)
keeps its pixels after the text header, behind a MIME block
(``X-Binary-Size``, ``X-Binary-Size-Fastest-Dimension``, ...) and the
four start bytes 0x0C 0x1A 0x04 0xD5. Dectris detectors write them with
the "byte offset" compression, decoded by :mod:`.byte_offset`.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .base import (
    BZIP2_MAGIC,
    GZIP_MAGIC,
    ImageFormatError,
    compression_of,
    read_all,
    read_head,
    truncated,
)

START_TAG = b"\x0c\x1a\x04\xd5"
_MAX_HEADER = 1 << 20


def read_cbf_header(path: str) -> tuple[str, int]:
    """(header text, offset of the binary data) from the start of the file."""
    n = 1 << 14
    while True:
        head = read_head(path, n)
        i = head.find(START_TAG)
        if i >= 0:
            return head[:i].decode("latin-1"), i + len(START_TAG)
        if len(head) < n or n >= _MAX_HEADER:
            raise truncated(path, "no binary data section (the CBF start bytes are missing)")
        n *= 4


def mime_fields(header: str) -> dict[str, str]:
    """The ``X-Binary-*`` and ``Content-*`` fields of the last MIME block."""
    block = header.rsplit("--CIF-BINARY-FORMAT-SECTION--", 1)[-1]
    out = {}
    for m in re.finditer(r"^\s*([A-Za-z-]+)\s*:\s*(.*?)\s*;?\s*$", block, re.M):
        out[m.group(1)] = m.group(2)
    if "conversions" not in block:
        return out
    m = re.search(r'conversions\s*=\s*"([^"]+)"', block)
    if m:
        out["conversions"] = m.group(1)
    return out


def binary_layout(path: str, header: str) -> dict:
    """Size, dimensions and compression of the binary section, checked."""
    f = mime_fields(header)
    try:
        layout = {
            "size": int(f["X-Binary-Size"]),
            "fast": int(f["X-Binary-Size-Fastest-Dimension"]),
            "slow": int(f["X-Binary-Size-Second-Dimension"]),
            "n": int(f.get("X-Binary-Number-of-Elements", "0")),
            "compression": f.get("conversions", ""),
            "element": f.get("X-Binary-Element-Type", "").strip('"'),
        }
    except (KeyError, ValueError) as e:
        raise ImageFormatError(
            f"The CBF binary header of {path} lacks {e}; the file is damaged or not a "
            "standard CBF image."
        ) from None
    if not layout["n"]:
        layout["n"] = layout["fast"] * layout["slow"]
    return layout


def _layout_and_start(path: str, data: bytes) -> tuple[dict, int] | None:
    """(layout, index of the first packed byte) from ``data``, the file's bytes from its
    start on; None when they hold no binary-section start tag."""
    i = data.find(START_TAG)
    if i < 0:
        return None
    return binary_layout(path, data[:i].decode("latin-1")), i + len(START_TAG)


def _binary_section(path: str) -> tuple[dict, bytes] | None:
    """(layout, packed bytes) of an uncompressed CBF, the packed bytes read on their
    own (slicing them from the whole file's bytes is a copy: 0.15 ms per 1M-pixel
    image); None for a compressed file, or one whose start tag is not in its first
    64 kB."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            if head[:2] == GZIP_MAGIC or head[:3] == BZIP2_MAGIC:
                return None
            found = _layout_and_start(path, head)
            if found is None:
                return None
            lay, start = found
            if start + lay["size"] <= len(head):
                return lay, head[start : start + lay["size"]]
            f.seek(start)
            return lay, f.read(lay["size"])
    except OSError:
        return None  # read_all says what is wrong


def decode_pixels(path: str) -> np.ndarray:
    """The pixel array (slow, fast) as int32 of a byte-offset (or plain int32) CBF."""
    section = _binary_section(path)
    if section is None:
        raw = read_all(path)
        found = _layout_and_start(path, raw)
        if found is None:
            raise truncated(path, "no binary data section")
        lay, start = found
        section = lay, raw[start : start + lay["size"]]
    lay, packed = section
    if len(packed) < lay["size"]:
        raise truncated(path, f"{len(packed)} of {lay['size']} bytes of pixel data present")
    if "BYTE_OFFSET" in lay["compression"].upper():
        from .byte_offset import decode_byte_offset  # numba: imported on first use

        data, n_decoded = decode_byte_offset(packed, lay["n"])
        if n_decoded != lay["n"]:
            raise truncated(path, f"{n_decoded} of {lay['n']} pixels decoded")
    elif lay["compression"] in ("", "x-CBF_NONE") and "32-bit" in lay["element"]:
        data = np.frombuffer(packed, dtype="<i4", count=lay["n"]).copy()
    else:
        raise ImageFormatError(
            f"{path} uses the CBF compression '{lay['compression']}', which gonio does not "
            "read (it reads byte-offset and uncompressed 32-bit CBF data)."
        )
    return data.reshape(lay["slow"], lay["fast"])


def check_binary_complete(path: str, header: str, data_offset: int) -> None:
    """For an uncompressed file on disk: is the whole binary section there?"""
    if compression_of(path):
        return
    lay = binary_layout(path, header)
    have = os.path.getsize(path) - data_offset
    if have < lay["size"]:
        raise truncated(path, f"{have} of {lay['size']} bytes of pixel data present")
