"""Outlier rejection on centroid residuals: Tukey fences and MCD, as DIALS's ``tukey`` / ``mcd``."""

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


def mcd_inliers(residuals: np.ndarray, threshold_probability: float = 0.975,
                n_starts: int = 50, seed: int = 0, max_fit: int = 10000) -> np.ndarray:
    """True for rows inside the robust covariance ellipsoid (FAST-MCD, reweighted).

    Minimum Covariance Determinant (Rousseeuw & Van Driessen 1999,
    Technometrics 41, 212): the mean and covariance of the h = (n + p + 1) / 2
    rows whose covariance has the smallest determinant, found by C-steps from
    random (p + 1)-subsets; scaled for consistency, one reweighting step, and
    rows whose squared robust distance exceeds the chi-squared quantile at
    ``threshold_probability`` (p degrees of freedom) are outliers, as DIALS's
    ``mcd`` outlier rejection. Affine-equivariant, so the units of the columns
    (mm, mm, rad) do not matter. The estimate uses at most ``max_fit`` random
    rows; the distances are then computed for all.
    """
    from scipy.stats import chi2

    everything = np.asarray(residuals, dtype=float)
    rng = np.random.default_rng(seed)
    x = everything
    if len(x) > max_fit:
        x = x[rng.choice(len(x), max_fit, replace=False)]
    n, p = x.shape
    if n < 5 * p:
        return tukey_inliers(everything)
    h = (n + p + 1) // 2

    def dist2(mu, cov, rows=None):
        d = (x if rows is None else rows) - mu
        return np.einsum("ij,ij->i", d @ np.linalg.pinv(cov), d)

    def c_steps(idx, n_steps):
        det = np.inf
        for _ in range(n_steps):
            mu, cov = x[idx].mean(axis=0), np.cov(x[idx].T)
            new_det = np.linalg.det(cov)
            idx = np.argsort(dist2(mu, cov))[:h]
            if new_det >= det * (1 - 1e-12):
                break
            det = new_det
        return idx, det

    trials = []
    for _ in range(n_starts):
        start = rng.choice(n, p + 1, replace=False)
        mu, cov = x[start].mean(axis=0), np.cov(x[start].T) + 1e-12 * np.eye(p)
        idx = np.argsort(dist2(mu, cov))[:h]
        trials.append(c_steps(idx, 2))
    trials.sort(key=lambda t: t[1])
    best = min((c_steps(idx, 100) for idx, _ in trials[:10]), key=lambda t: t[1])[0]
    mu, cov = x[best].mean(axis=0), np.cov(x[best].T)
    d2 = dist2(mu, cov)
    cov *= np.median(d2) / chi2.ppf(0.5, p)  # consistency with the normal distribution
    cut = chi2.ppf(threshold_probability, p)
    keep = dist2(mu, cov) <= cut
    mu, cov = x[keep].mean(axis=0), np.cov(x[keep].T)  # reweighting step
    return dist2(mu, cov, everything) <= cut
