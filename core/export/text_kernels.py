"""Numba kernel: numeric columns to fixed-point text (Fortran-like F and I edit descriptors).

Python's per-value formatting costs ~1 us a field, seconds for the 10^6
fields of a large unmerged file; this writes the digits straight into a byte
buffer. Each column has a number of decimals (0: an integer, no point) and a
width: right-aligned in ``width`` characters (a field too narrow is filled
with ``*``, as Fortran does), or, with width 0, written as short as possible
after one space (none before the first column).
"""

from __future__ import annotations

import numpy as np

from gonio.core.jit import njit


@njit
def _write_field(out, pos, x, dec, width, first, digits):
    v = np.int64(abs(x) * 10.0**dec + 0.5)
    neg = x < 0 and v > 0  # no "-0.00"
    nd = 0
    while v > 0 or nd <= dec:
        digits[nd] = 48 + v % 10
        v //= 10
        nd += 1
    length = nd + (1 if dec > 0 else 0) + (1 if neg else 0)
    if width > 0:
        if length > width:
            for i in range(width):
                out[pos + i] = 42  # '*'
            return pos + width
        for i in range(width - length):
            out[pos + i] = 32
        pos += width - length
    elif not first:
        out[pos] = 32
        pos += 1
    if neg:
        out[pos] = 45
        pos += 1
    for i in range(nd - 1, -1, -1):
        out[pos] = digits[i]
        pos += 1
        if i == dec and dec > 0:
            out[pos] = 46
            pos += 1
    return pos


@njit
def format_rows(values, decimals, widths, out):
    """Rows of ``values`` (n, m) into ``out`` (uint8); returns the number of bytes written."""
    pos = np.int64(0)  # not the literal 0: _write_field gets one signature
    n, m = values.shape
    digits = np.empty(32, np.uint8)
    for r in range(n):
        for c in range(m):
            pos = _write_field(out, pos, values[r, c], decimals[c], widths[c], c == 0, digits)
        out[pos] = 10
        pos += 1
    return pos


def warm_up() -> None:
    """Compile (or load) the kernel: two rows, fixed widths and shortest fields."""
    from gonio.core.export.text import format_table

    columns = [np.array([1.0, -2.5]), np.array([3.0, 40.0])]
    format_table(columns, [2, 0], [8, 6])
    format_table(columns, [3, 0])
