"""Numba kernels that parse and pack DIALS shoebox columns (imported on first use)."""

import numba
import numpy as np


@numba.njit(cache=True)
def _le_uint32(buf, p):
    return (np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)
            | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 3]) << 24))


@numba.njit(cache=True)
def _scan_shoeboxes(buf, n, panel, bbox, marker, npix):
    """Walk n serialised shoeboxes, filling headers and pixel counts.

    Returns (status, row, end): status 0 ok, 1 truncated, 2 bad bbox,
    3 unknown marker, with the failing row and the end position in bytes.
    """
    pos = 0
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


@numba.njit(cache=True)
def _copy_shoebox_pixels(buf, marker, npix, offset, data_b, mask, mask_b, bg_b):
    """Copy the pixel arrays of scanned shoeboxes into flat data/mask/background."""
    pos = 0
    for i in range(marker.size):
        pos += 29
        if marker[i] == 0:
            continue
        v = npix[i]
        o = offset[i]
        data_b[4 * o:4 * (o + v)] = buf[pos:pos + 4 * v]
        pos += 4 * v
        if marker[i] == 1:
            mask_b[4 * o:4 * (o + v)] = buf[pos:pos + 4 * v]
            pos += 4 * v
        else:
            for k in range(v):
                mask[o + k] = buf[pos + k]
            pos += v
        bg_b[4 * o:4 * (o + v)] = buf[pos:pos + 4 * v]
        pos += 4 * v


@numba.njit(cache=True)
def _pack_shoeboxes(header, npix, offset, data_b, mask_b, bg_b, out):
    """Lay out header + data + mask + background of each shoebox in ``out``."""
    pos = 0
    for i in range(npix.size):
        out[pos:pos + 29] = header[i]
        pos += 29
        v4 = 4 * npix[i]
        if v4 == 0:
            continue
        o4 = 4 * offset[i]
        out[pos:pos + v4] = data_b[o4:o4 + v4]
        pos += v4
        out[pos:pos + v4] = mask_b[o4:o4 + v4]
        pos += v4
        out[pos:pos + v4] = bg_b[o4:o4 + v4]
        pos += v4
