"""The tables dials.integrate prints: per image, per resolution shell and overall.

Counts: ``full`` reflections are recorded entirely within the scan (partiality
> 0.99, DIALS's full-reflection threshold), ``part`` the others; ``over``
overlapped (a foreground pixel shared with another reflection); ``ice`` in an
ice ring (not detected by gonio: always 0); ``sum`` / ``prf`` integrated by
summation / profile fitting. <Ibg> is the mean background per pixel (counts),
<I/sigI> the mean of I / sigma(I) over the integrated reflections, <CC prf> the
mean correlation of the pixels with the fitted profile.
"""

from __future__ import annotations

import numpy as np

from ..reflection_table import Flags, ReflectionTable

FULL_PARTIALITY = 0.99

HEADERS = ["# full", "# part", "# over", "# ice", "# sum", "# prf", "<Ibg>",
           "<I/sigI> (sum)", "<I/sigI> (prf)", "<CC prf>"]


def _stats(t: ReflectionTable, sel: np.ndarray) -> list:
    part = t["partiality"][sel] if "partiality" in t else np.ones(int(sel.sum()))
    s = t.get_flags(Flags.integrated_sum)[sel]
    p = t.get_flags(Flags.integrated_prf)[sel]
    over = t.get_flags(Flags.overlapped_fg)[sel]

    def mean(x):
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else 0.0

    isum = t["intensity.sum.value"][sel][s] / np.sqrt(t["intensity.sum.variance"][sel][s])
    if "intensity.prf.value" in t:
        iprf = t["intensity.prf.value"][sel][p] / np.sqrt(t["intensity.prf.variance"][sel][p])
        cc = t["profile.correlation"][sel][p]
    else:
        iprf = cc = np.zeros(0)
    return [int((part > FULL_PARTIALITY).sum()), int((part <= FULL_PARTIALITY).sum()),
            int(over.sum()), 0, int(s.sum()), int(p.sum()),
            mean(t["background.mean"][sel][s]), mean(isum), mean(iprf), mean(cc)]


def per_image(table: ReflectionTable, experiment_id: int, first_image: int, n_images: int,
              array_start: int) -> list[list]:
    """Rows (image, *HEADERS) by the image of each reflection's predicted centre."""
    t = table.select(table["id"] == experiment_id)
    image = np.floor(t["xyzcal.px"][:, 2]).astype(np.int64) - array_start + first_image
    return [[first_image + i, *_stats(t, image == first_image + i)] for i in range(n_images)]


def resolution_bins(d: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin edges in d (A), high to low resolution ... as equal numbers of reflections per
    shell (equal reciprocal volume), n_bins + 1 values from the largest d down."""
    d = d[np.isfinite(d) & (d > 0)]
    if not len(d):
        return np.array([])
    q = np.quantile(1.0 / d**3, np.linspace(0, 1, n_bins + 1))
    return np.cbrt(1.0 / np.maximum(q, 1e-30))


def by_resolution(table: ReflectionTable, n_bins: int = 10) -> list[list]:
    """Rows (d max, d min, *HEADERS) from low to high resolution."""
    edges = resolution_bins(table["d"], n_bins)
    rows = []
    d = table["d"]
    for k in range(len(edges) - 1):
        hi, lo = edges[k], edges[k + 1]
        sel = (d <= hi) & (d > lo) if k < len(edges) - 2 else (d <= hi) & (d >= lo)
        rows.append([hi, lo, *_stats(table, sel)])
    return rows


def overall(table: ReflectionTable) -> list:
    return _stats(table, np.ones(len(table), bool))
