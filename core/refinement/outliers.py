"""Outlier rejection on centroid residuals: Tukey fences and MCD, as DIALS's ``tukey`` / ``mcd``."""

from __future__ import annotations

from functools import lru_cache

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
                n_starts: int = 30, seed: int = 0, max_fit: int = 5000) -> np.ndarray:
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
    from scipy.special import gammaincinv  # lighter to import than scipy.stats

    def chi2_ppf(q, dof):
        return 2.0 * gammaincinv(dof / 2.0, q)

    everything = np.asarray(residuals, dtype=float)
    rng = np.random.default_rng(seed)
    x = everything
    if len(x) > max_fit:
        x = x[rng.choice(len(x), max_fit, replace=False)]
    n, p = x.shape
    if n < 5 * p:
        return tukey_inliers(everything)
    # columns centred and to comparable scales (MCD is affine-equivariant; this only helps
    # the numerics: the sums of products below then lose nothing to cancellation)
    centre = np.median(x, axis=0)
    scale = np.maximum(np.std(x, axis=0), 1e-300)
    x = (x - centre) / scale
    everything = (everything - centre) / scale
    h = (n + p + 1) // 2

    def mean_cov(rows):
        mu = rows.mean(axis=0)
        d = rows - mu
        return mu, d.T @ d / (len(rows) - 1)

    def dist2(mu, cov, rows):
        d = rows - mu
        try:
            P = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            P = np.linalg.pinv(cov)
        return np.sum((d @ P) * d, axis=1)

    # FAST-MCD: the random starts and their first C-steps on a subsample of at most
    # 1500 rows, the best few then iterated to convergence on all rows. A set of rows is
    # a boolean mask (S sets side by side); its mean and covariance come from the sums of
    # the rows' linear and quadratic terms (one product with the masks).
    sub = x if n <= 1500 else x[rng.choice(n, 1500, replace=False)]
    h_sub = (len(sub) + p + 1) // 2
    starts = np.array([rng.choice(len(sub), p + 1, replace=False) for _ in range(n_starts)])
    sub_terms = _terms(sub)
    x_terms = sub_terms if sub is x else _terms(x)
    # all starts at once (their first two C-steps: mean and covariance of the h nearest
    # rows, then the h rows nearest to those)
    mu, cov = _stacked_mean_cov(sub[starts])
    sel = _stacked_nearest(sub_terms, mu, cov + 1e-12 * np.eye(p), h_sub)
    mu, cov = _masked_mean_cov(sub_terms, sel, p)
    det1 = np.linalg.det(cov)
    sel = _stacked_nearest(sub_terms, mu, cov, h_sub)
    mu, cov = _masked_mean_cov(sub_terms, sel, p)
    det2 = np.linalg.det(cov)
    ends = _stacked_nearest(sub_terms, mu, cov, h_sub)
    # a start's determinant: the last before it stopped falling
    det = np.where(det2 >= det1 * (1 - 1e-12), det1, det2)
    # the three best iterated to convergence on all rows, side by side
    mu, cov = _masked_mean_cov(sub_terms, ends[np.argsort(det, kind="stable")[:3]], p)
    sel = _stacked_nearest(x_terms, mu, cov, h)
    det = np.full(len(sel), np.inf)
    active = np.ones(len(sel), bool)
    for _ in range(100):  # C-steps until the determinant stops falling, for each
        mu, cov = _masked_mean_cov(x_terms, sel, p)
        new_det = np.linalg.det(cov)
        new_sel = _stacked_nearest(x_terms, mu, cov, h)
        sel[active] = new_sel[active]
        stop = active & (new_det >= det * (1 - 1e-12))
        det[active & ~stop] = new_det[active & ~stop]
        active &= ~stop
        if not active.any():
            break
    mu, cov = mean_cov(x[sel[np.argmin(det)]])
    d2 = dist2(mu, cov, x)
    cov *= np.median(d2) / chi2_ppf(0.5, p)  # consistency with the normal distribution
    cut = chi2_ppf(threshold_probability, p)
    keep = dist2(mu, cov, x) <= cut
    mu, cov = mean_cov(x[keep])  # reweighting step
    return dist2(mu, cov, everything) <= cut


def _stacked_mean_cov(rows: np.ndarray):
    """Means (S, p) and covariances (S, p, p) of S sets of rows (S, m, p)."""
    mu = rows.sum(axis=1) / rows.shape[1]
    d = rows - mu[:, None, :]
    return mu, np.matmul(d.transpose(0, 2, 1), d) / (rows.shape[1] - 1)


@lru_cache(maxsize=8)
def _upper(p: int):
    """Row and column indices of the upper triangle of a p x p matrix, and the weights
    (1 on the diagonal, 2 off it) of x' P x written over that triangle."""
    iu, ju = np.triu_indices(p)
    return iu, ju, np.where(iu == ju, 1.0, 2.0)


def _terms(data: np.ndarray) -> np.ndarray:
    """(p(p+1)/2 + p, m): each row's quadratic terms x_i x_j (i <= j), then x itself,
    as columns."""
    iu, ju, _ = _upper(data.shape[1])
    return np.ascontiguousarray(np.concatenate([data[:, iu] * data[:, ju], data], axis=1).T)


def _masked_mean_cov(terms: np.ndarray, masks: np.ndarray, p: int):
    """Means (S, p) and covariances (S, p, p) of the S sets of rows chosen by ``masks``
    (S, m), from the sums of the rows' ``terms`` (:func:`_terms`): (sum xx' - m mu mu')
    / (m - 1), which loses only rounding for rows centred and scaled to unit spread."""
    count = masks.sum(axis=1).astype(float)
    sums = masks.astype(float) @ terms.T
    mu = sums[:, -p:] / count[:, None]
    iu, ju, _ = _upper(p)
    second = np.empty((len(masks), p, p))
    second[:, iu, ju] = sums[:, :-p]
    second[:, ju, iu] = sums[:, :-p]
    cov = (second - count[:, None, None] * mu[:, :, None] * mu[:, None, :])
    return mu, cov / (count - 1)[:, None, None]


def _stacked_nearest(terms: np.ndarray, mu: np.ndarray, cov: np.ndarray, h: int):
    """For each of S (mean, covariance): the h rows nearest in Mahalanobis distance, as
    an (S, m) mask (more than h only for rows tied at the h-th distance). The squared
    distances (x - mu)' P (x - mu) of all rows for all S at once, as one product of the
    rows' quadratic and linear ``terms`` (:func:`_terms`) with each (mean, covariance)'s
    coefficients."""
    try:
        P = np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        P = np.linalg.pinv(cov)
    iu, ju, twice = _upper(mu.shape[1])
    quad = P[:, iu, ju] * twice  # x' P x: off-diagonals twice
    Pmu = np.matmul(P, mu[:, :, None])[:, :, 0]
    coef = np.concatenate([quad, -2.0 * Pmu], axis=1)  # (S, ...)
    const = np.einsum("si,si->s", mu, Pmu)
    d2 = coef @ terms + const[:, None]
    # the h smallest: those up to the h-th (rows at exactly its distance, a tie, all count)
    return d2 <= np.partition(d2, h - 1, axis=1)[:, h - 1:h]


def sauter_poon_inliers(dx_mm: np.ndarray, dy_mm: np.ndarray, fraction: float = 0.4,
                        min_num_obs: int = 20) -> np.ndarray:
    """True for spots whose radial centroid deviation is not an outlier (Sauter & Poon
    2010, J. Appl. Cryst. 43, 611), as DIALS's ``sauter_poon`` outlier rejection.

    The radial deviations dr = sqrt(dx^2 + dy^2) (mm, on the detector) are sorted into
    their empirical cumulative distribution F(dr_j) = j / N. A Rayleigh distribution,
    CDF 1 - exp(-dr^2 / (2 sigma^2)), is least-squares fitted to the lowest ``fraction``
    of that curve (the well-predicted core). Walking up the cumulative distribution,
    the first spot j whose observed deviation lies beyond the fitted one at the same
    level by more than the Rayleigh standard deviation sqrt((4 - pi) / 2) sigma, while
    its predecessor also lies beyond it, starts the outliers: it and every spot with a
    larger deviation are rejected. This is the continuous form of rstbx's scan of the
    fitted curve (its "green bar"). Groups of fewer than ``min_num_obs`` spots, or too
    few to fit, are kept whole.
    """
    from scipy.optimize import least_squares

    dr = np.hypot(np.asarray(dx_mm, float), np.asarray(dy_mm, float))
    n = len(dr)
    keep = np.ones(n, bool)
    limit = int(fraction * n)
    if n < min_num_obs or limit < 4:
        return keep
    order = np.argsort(dr, kind="stable")
    r = dr[order]
    F = np.arange(n) / n
    r_fit, F_fit = r[:limit], F[:limit]
    sigma0 = max(np.sqrt(np.mean(r_fit**2) / 2.0), 1e-12)

    def cdf_misfit(s):
        return 1.0 - np.exp(-(r_fit**2) / (2.0 * s[0] ** 2)) - F_fit

    sigma = abs(least_squares(cdf_misfit, [sigma0], x_scale=[sigma0]).x[0])
    sd = np.sqrt((4.0 - np.pi) / 2.0) * sigma
    # fitted deviation at the level of each spot's predecessor: the Rayleigh quantile
    r_model = sigma * np.sqrt(-2.0 * np.log1p(-F[:-1]))
    beyond = (r[1:] - r_model >= sd) & (r[:-1] - r_model > 0.0)
    if beyond.any():
        first = int(np.argmax(beyond))  # the predecessor (index j - 1) starts the outliers
        keep[order[first:]] = False
    return keep
