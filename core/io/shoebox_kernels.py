"""Numba kernels that parse and pack DIALS shoebox columns (imported on first use).

Two units of kernels (``gonio.core.jit.UNITS``): writing a shoebox column (this module's,
which ``findspots`` needs when it records the strong table) and reading one back
(:data:`READ`, which only loading a table from a file needs).
"""

import numpy as np

from gonio.core.jit import INTERNAL, njit

#: The unit of the kernels that read a shoebox column (:func:`warm_up_read`).
READ = "gonio.core.io.shoebox_kernels.read"


@njit(unit=READ, **INTERNAL)
def _le_uint32(buf, p):
    return (np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)
            | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 3]) << 24))


@njit(unit=READ)
def _scan_shoeboxes(buf, n, panel, bbox, marker, npix):
    """Walk n serialised shoeboxes, filling headers and pixel counts.

    Returns (status, row, end): status 0 ok, 1 truncated, 2 bad bbox,
    3 unknown marker, with the failing row and the end position in bytes.
    """
    pos = np.int64(0)  # not the literal 0: _le_uint32 gets one signature
    size = buf.size
    for i in range(n):
        if pos + 29 > size:
            return 1, i, pos
        panel[i] = _le_uint32(buf, pos)
        for k in range(6):
            v = _le_uint32(buf, pos + 4 + 4 * k)
            if v >= 2147483648:
                v -= 4294967296
            bbox[i, k] = v
        m = buf[pos + 28]
        marker[i] = m
        pos += 29
        nx = np.int64(bbox[i, 1]) - bbox[i, 0]
        ny = np.int64(bbox[i, 3]) - bbox[i, 2]
        nz = np.int64(bbox[i, 5]) - bbox[i, 4]
        if nx < 0 or ny < 0 or nz < 0:
            return 2, i, pos
        if m == 0:
            npix[i] = 0
            continue
        if m > 2:
            return 3, i, pos
        npix[i] = nx * ny * nz
        pos += npix[i] * (8 + (4 if m == 1 else 1))
        if pos > size:
            return 1, i, pos
    return 0, n, pos


@njit(**INTERNAL)
def _copy_bytes(dst, d0, src, s0, n):
    """dst[d0:d0 + n] = src[s0:s0 + n], as a loop: numba's slice assignment
    compiles to several times more code (broadcasting, overlap checks)."""
    for k in range(n):
        dst[d0 + k] = src[s0 + k]


@njit(unit=READ)
def _copy_shoebox_pixels(buf, marker, npix, offset, data_b, mask, mask_b, bg_b):
    """Copy the pixel arrays of scanned shoeboxes into flat data/mask/background."""
    pos = np.int64(0)
    for i in range(marker.size):
        pos += 29
        if marker[i] == 0:
            continue
        v = npix[i]
        o = offset[i]
        _copy_bytes(data_b, 4 * o, buf, pos, 4 * v)
        pos += 4 * v
        if marker[i] == 1:
            _copy_bytes(mask_b, 4 * o, buf, pos, 4 * v)
            pos += 4 * v
        else:
            for k in range(v):
                mask[o + k] = buf[pos + k]
            pos += v
        _copy_bytes(bg_b, 4 * o, buf, pos, 4 * v)
        pos += 4 * v


@njit
def _pack_shoeboxes(header, npix, offset, data_b, mask_b, bg_b, out):
    """Lay out header + data + mask + background of each shoebox in ``out``."""
    pos = np.int64(0)
    for i in range(npix.size):
        for k in range(29):
            out[pos + k] = header[i, k]
        pos += 29
        v4 = 4 * npix[i]
        if v4 == 0:
            continue
        o4 = 4 * offset[i]
        _copy_bytes(out, pos, data_b, o4, v4)
        _copy_bytes(out, pos + v4, mask_b, o4, v4)
        _copy_bytes(out, pos + 2 * v4, bg_b, o4, v4)
        pos += 3 * v4


def _two_shoeboxes():
    """A two-row shoebox column (one shoebox with pixels, one never allocated) as a table."""
    from gonio.core.reflection_table import ReflectionTable, Shoeboxes

    shoeboxes = Shoeboxes(panel=[0, 0], bbox=[[0, 2, 0, 2, 0, 1], [3, 5, 3, 4, 1, 2]],
                          data=np.arange(4, dtype=np.float32), background=np.zeros(4, np.float32),
                          mask=np.full(4, 5, np.int32), offset=[0, 4, 4], allocated=[True, False])
    return ReflectionTable({"shoebox": shoeboxes})


def warm_up() -> None:
    """Compile (or load) the kernels that write a shoebox column: a two-row column written
    as a DIALS .refl table."""
    from gonio.core.io.dials_refl import refl_to_bytes

    refl_to_bytes(_two_shoeboxes())


def warm_up_read() -> None:
    """Compile (or load) the kernels that read a shoebox column (:data:`READ`): the
    two-row column written and read back."""
    from gonio.core.io.dials_refl import refl_from_bytes, refl_to_bytes

    refl_from_bytes(refl_to_bytes(_two_shoeboxes()))
