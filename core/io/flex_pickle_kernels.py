"""Numba kernels decoding scitbx's base-256 serialisation of flex arrays (imported on first use).

scitbx (cctbx) pickles a flex array as a byte string: the element count, then
every value, each as a length byte (bit 7: sign; bits 0-6: number of bytes
including the length byte) followed by little-endian digits for integers, or
base-256 fraction digits then an integer binary exponent for floating point
(``scitbx/serialization/base_256.h``).
"""

import math

import numpy as np

from gonio.core.jit import njit


@njit
def decode_ints(buf, pos, n, out):
    """Decode ``n`` base-256 integers from ``buf[pos:]`` into ``out``; returns the end position."""
    size = buf.size
    for i in range(n):
        if pos >= size:
            return -1
        head = buf[pos]
        length = head & 0x7F
        if length == 0:
            out[i] = 0
            pos += 1
            continue
        if pos + length > size:
            return -1
        v = np.int64(0)
        for k in range(length - 1, 0, -1):
            v = (v << 8) | np.int64(buf[pos + k])
        out[i] = -v if head > 128 else v
        pos += length
    return pos


@njit
def decode_floats(buf, pos, n, out):
    """Decode ``n`` base-256 floating-point values from ``buf[pos:]``; returns the end position."""
    size = buf.size
    for i in range(n):
        if pos >= size:
            return -1
        head = buf[pos]
        length = head & 0x7F
        if length == 0:
            out[i] = 0.0
            pos += 1
            continue
        if pos + length > size:
            return -1
        f = 0.0
        for k in range(length - 1, 0, -1):
            f = (f + buf[pos + k]) / 256.0
        pos += length
        ehead = buf[pos]
        elen = ehead & 0x7F
        e = np.int64(0)
        if elen > 0:
            for k in range(elen - 1, 0, -1):
                e = (e << 8) | np.int64(buf[pos + k])
            if ehead > 128:
                e = -e
            pos += elen
        else:
            pos += 1
        v = math.ldexp(f, e)
        out[i] = -v if head > 128 else v
    return pos
