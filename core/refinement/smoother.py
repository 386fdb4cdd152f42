"""Gaussian smoother for scan-varying parameters (DIALS's ``GaussianSmoother``).

A scan-varying parameter is a set of ``n_values`` sample values at fixed
positions along the scan (image numbers); its value at frame z is the
Gaussian-weighted mean of the ``n_average`` (3) samples nearest z. As in
DIALS (Waterman et al. 2016, Acta Cryst. D72, 558; after the
``SmoothedValue`` class of Aimless, Evans 2006):

* ``n_intervals`` intervals cover the frame range [x0, x1];
  ``spacing = (x1 - x0) / n_intervals``;
* 1 interval: 2 samples at normalised positions 0, 1; 2 intervals: 3 samples
  at 0, 1, 2; more: n_intervals + 2 samples at -0.5, 0.5, ..., n + 0.5;
* with u = (z - x0) / spacing the samples used are i1 .. i1 + n_average - 1
  with i1 = round(u - n_average / 2) + 1, clamped to the ends keeping at
  least two; weight w_i = exp(-((u - pos_i) / sigma)^2) with sigma =
  0.65 + 0.05 (n_average - 2) sample spacings (0.7 for n_average = 3);
* value(z) = sum w_i v_i / sum w_i, so d value / d v_i = w_i / sum w.

The number of intervals is ``absolute_num_intervals`` when given, else
max(int(scan width deg / interval_width_degrees), 1).
"""

from __future__ import annotations

import numpy as np


def num_intervals(scan_width_deg: float, interval_width_degrees: float = 36.0,
                  absolute_num_intervals: int | None = None) -> int:
    """Number of smoother intervals over a scan, as DIALS chooses it."""
    if absolute_num_intervals:
        return int(absolute_num_intervals)
    return max(int(abs(scan_width_deg) / interval_width_degrees), 1)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


class GaussianSmoother:
    """Smoother over the frame range ``x_range`` (z0, z1) with ``n_intervals`` intervals."""

    def __init__(self, x_range, n_intervals: int, n_average: int = 3):
        if n_intervals < 1:
            raise ValueError("a smoother needs at least one interval")
        self.x0 = float(x_range[0])
        self.n_intervals = int(n_intervals)
        self.n_values = {1: 2, 2: 3}.get(self.n_intervals, self.n_intervals + 2)
        self.spacing = (float(x_range[1]) - self.x0) / self.n_intervals
        if self.n_values < 4:
            self.positions = np.arange(self.n_values, dtype=float)
        else:
            self.positions = np.arange(self.n_values, dtype=float) - 0.5
        self.n_average = min(n_average, self.n_values)
        self.sigma = 0.65 + 0.05 * (self.n_average - 2)

    def weights(self, z) -> np.ndarray:
        """Normalised weights (N, n_values): value(z) = weights(z) @ sample values."""
        u = (np.asarray(z, dtype=float).reshape(-1) - self.x0) / self.spacing
        n = self.n_values
        if n <= 3:
            i1 = np.zeros(len(u), np.int64)
            i2 = np.full(len(u), n, np.int64)
        else:
            i1 = _round_half_away(u - self.n_average / 2.0).astype(np.int64) + 1
            i2 = i1 + self.n_average
            low = i1 < 0
            i1 = np.where(low, 0, i1)
            i2 = np.where(low, np.maximum(2, i2), i2)
            high = i2 > n
            i2 = np.where(high, n, i2)
            i1 = np.where(high, np.minimum(i1, n - 2), i1)
        k = np.arange(n)
        used = (k[None, :] >= i1[:, None]) & (k[None, :] < i2[:, None])
        w = np.where(used, np.exp(-(((u[:, None] - self.positions[None, :]) / self.sigma) ** 2)),
                     0.0)
        total = w.sum(axis=1, keepdims=True)
        return w / np.where(total > 0, total, 1.0)
