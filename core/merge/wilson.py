"""Wilson B from merged intensities (Wilson 1942, 1949).

ln <I/epsilon> = ln K - 2 B (sin(theta)/lambda)^2 = ln K - B / (2 d^2), fitted
by least squares to the shell means of I/epsilon (shells of equal counts)
at d < 4.5 A, where the atomic form factors make the plot nearly straight
(4.5 A as in the usual Wilson-plot range, e.g. Popov & Bourenkov 2003). No
form-factor correction is applied, so the value is the slope of the plain
Wilson plot; with fewer than three usable shells at d < 4.5 A, all shells
are used.
"""

from __future__ import annotations

import numpy as np


def wilson_b(I, d, epsilon, n_bins: int = 20, d_max_fit: float = 4.5) -> float:
    """B (A^2) from the slope of ln<I/epsilon> against 1/d^2; NaN if it cannot be fitted."""
    I = np.asarray(I, dtype=float)
    s2 = 1.0 / np.asarray(d, dtype=float) ** 2
    ok = np.isfinite(I)
    I, s2, eps = I[ok], s2[ok], np.asarray(epsilon, dtype=float)[ok]
    if len(I) < 2 * n_bins:
        n_bins = max(len(I) // 20, 1)
    order = np.argsort(s2)
    shells = np.array_split(order, n_bins)
    x = np.array([s2[s].mean() for s in shells if len(s)])
    y = np.array([(I[s] / eps[s]).mean() for s in shells if len(s)])
    use = (y > 0) & (x >= 1 / d_max_fit**2)
    if use.sum() < 3:
        use = y > 0
    if use.sum() < 2:
        return float("nan")
    slope = np.polyfit(x[use], np.log(y[use]), 1)[0]
    return float(-2.0 * slope)
