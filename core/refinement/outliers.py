"""Outlier rejection on positional residuals (Tukey fences, as DIALS's ``tukey``)."""

from __future__ import annotations

import numpy as np


def tukey_inliers(residuals: np.ndarray, iqr_multiplier: float = 1.5) -> np.ndarray:
    """True for rows whose every column lies within [Q1 - k IQR, Q3 + k IQR].

    ``residuals`` is (N, n_dims), e.g. the X, Y, phi residuals of one
    experiment (Tukey, Exploratory Data Analysis, 1977).
    """
    res = np.asarray(residuals, dtype=float)
    if len(res) < 4:
        return np.ones(len(res), bool)
    q1, q3 = np.nanpercentile(res, [25, 75], axis=0)
    iqr = q3 - q1
    lo, hi = q1 - iqr_multiplier * iqr, q3 + iqr_multiplier * iqr
    return np.all((res >= lo) & (res <= hi), axis=1)
