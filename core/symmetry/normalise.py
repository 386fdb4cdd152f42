"""Error-model correction and normalisation of intensities to E^2.

``correct_sigmas``: the "typical" SD correction POINTLESS and dials.symmetry apply
before scoring, ``sd' = SdFac sqrt(sd^2 + SdB I + (SdAdd I)^2)`` with SdFac = 2,
SdB = 0, SdAdd = 0.03, never below sqrt(0.1) sd.

``quasi_normalise``: E^2 = I / <I>(d*^2) as cctbx ``intensity_quasi_normalisations``
(dials.util.normalisation.quasi_normalisation): the mean intensity (negative values
counted as 0) in 10, 15 or 20 shells of equal width in d*^2, interpolated linearly
between shell centres, so that <E^2> = 1 at every resolution.

``aniso_factor`` (``normalisation=ml_aniso``, DIALS's default name): on top of that,
the anisotropic fall-off exp(k + s^T U s) (s the reciprocal-lattice vector in an
orthonormal frame, U symmetric) fitted by maximum likelihood for Wilson's acentric
distribution (E^2 exponential with mean exp(k + s^T U s)), by Fisher scoring. This
is the likelihood cctbx's ``ml_aniso_absolute_scaling`` maximises, with the isotropic
shape taken from the shells instead of from atomic form factors and a Matthews
estimate of the contents; intensities that differ only by the direction-dependent
fall-off then compare as equals.
"""

from __future__ import annotations

import numpy as np


def correct_sigmas(intensity: np.ndarray, sigma: np.ndarray, sd_fac: float = 2.0,
                   sd_b: float = 0.0, sd_add: float = 0.03) -> np.ndarray:
    var = sigma ** 2
    ssc = var + sd_b * intensity + (sd_add * intensity) ** 2
    ssc = np.maximum(ssc, 0.1 * var)
    return sd_fac * np.sqrt(ssc)


def quasi_normalise(intensity: np.ndarray, d_star_sq: np.ndarray) -> np.ndarray:
    """The divisor <I>(d*^2) for each reflection (all positive)."""
    n = len(intensity)
    n_shells = 20 if n > 20000 else (15 if n > 15000 else 10)
    lo, hi = float(d_star_sq.min()), float(d_star_sq.max())
    span = max(hi - lo, 1e-12)
    lo, hi = lo - 1e-6 * span, hi + 1e-6 * span
    edges = np.linspace(lo, hi, n_shells + 1)
    shell = np.clip(np.searchsorted(edges, d_star_sq, side="right") - 1, 0, n_shells - 1)
    counts = np.bincount(shell, minlength=n_shells)
    sums = np.bincount(shell, weights=np.maximum(intensity, 0.0), minlength=n_shells)
    ok = counts > 0
    centres = 0.5 * (edges[:-1] + edges[1:])
    mean = sums[ok] / counts[ok]
    positive = mean > 0
    if not positive.any():
        return np.ones(n)
    norm = np.interp(d_star_sq, centres[ok][positive], mean[positive])
    return norm


def aniso_factor(e2: np.ndarray, s_cart: np.ndarray, max_iter: int = 30) -> np.ndarray:
    """exp(k + s^T U s) maximising the Wilson likelihood of ``e2`` (quasi-normalised
    intensities, negative values allowed: the score equations only need their means).
    Returns all ones when the fit is undetermined."""
    x, y, z = s_cart.T
    X = np.column_stack([np.ones(len(e2)), x * x, y * y, z * z, 2 * x * y, 2 * x * z,
                         2 * y * z])
    if len(e2) < 50:
        return np.ones(len(e2))
    XtX = X.T @ X
    try:
        XtX_inv = np.linalg.inv(XtX)
    except np.linalg.LinAlgError:
        return np.ones(len(e2))
    theta = np.zeros(X.shape[1])
    for _ in range(max_iter):
        eta = np.clip(X @ theta, -5, 5)
        step = XtX_inv @ (X.T @ (1.0 - e2 * np.exp(-eta)))  # Fisher scoring (E[y e^-eta] = 1)
        theta = theta - step
        if np.abs(step).max() < 1e-6:
            break
    return np.exp(np.clip(X @ theta, -5, 5))
