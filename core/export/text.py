"""Fast fixed-point text tables for the text export formats (see :mod:`.text_kernels`)."""

from __future__ import annotations

import numpy as np


def decimals_for(values, significant: int = 8, most: int = 6) -> int:
    """Decimals that keep ``significant`` digits of the largest |value| (at most ``most``)."""
    v = np.abs(np.asarray(values, dtype=float))
    top = float(v[np.isfinite(v)].max()) if v.size and np.isfinite(v).any() else 1.0
    return int(np.clip(significant - max(int(np.floor(np.log10(max(top, 1e-30)))) + 1, 1), 0, most))


def format_table(columns, decimals, widths=None) -> str:
    """Text of the columns (each (n,) numeric), one row a line (see :mod:`.text_kernels`)."""
    from gonio.core.export.text_kernels import format_rows

    values = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    if not np.isfinite(values).all():
        raise ValueError("cannot write NaN or infinite values in a fixed-format table")
    m = values.shape[1]
    dec = np.asarray(decimals, dtype=np.int64)
    wid = np.zeros(m, np.int64) if widths is None else np.asarray(widths, dtype=np.int64)
    per_row = int(np.sum(np.maximum(wid, 22 + dec + 2))) + m + 1
    out = np.empty(len(values) * per_row, dtype=np.uint8)
    n = format_rows(values, dec, wid, out)
    return out[:n].tobytes().decode("ascii")
