"""dials.scale's own minimisations of the basic error model (``error_model.basic.minimisation``).

Both work on the normalised deviations as dials.scale defines them,

    delta_hl = sqrt((n_h - 1) / n_h) (I_hl / g_hl - <I_h>) / sigma'_hl,
    sigma'_hl = a sqrt(sigma_hl^2 + (b I_hl)^2) / g_hl,

with <I_h> the inverse-variance weighted mean of the whole group (the observation
included) from the uncorrected variances, on the reflections dials.scale selects for it
(:func:`select_for_error_model`); dials.scale's groups keep Friedel mates apart (the
scaling engine passes them so). Their variance for right sigmas is ((n - 1) / n)^2, not 1
(gonio's default, :mod:`gonio.core.scaling.error_model`, avoids that), so these give a
lower a at low multiplicity; they are here to reproduce DIALS's sigmas and <I/sigma>.

- ``individual`` (DIALS's default): a and b in turn until a changes by less than 1 %:
  a from the slope of a straight-line fit of the sorted deltas against the expected normal
  order statistics, over the central part (|x| < 1.5) of the normal probability plot; b
  minimising sum_bins w_k ((1/2 - v_k)^2 + 1 / v_k - 5/4) (zero and minimal at v_k = 1)
  over ``n_bins`` bins of g <I_h> equally spaced in log intensity, v_k the variance of
  delta in bin k and w_k its mean intensity. When a does not settle above 0.4 within 20
  cycles (a and b can trade off and drift), a = 1 and b is refined alone, as DIALS does.
- ``regression``: a linear fit of y = a^2 x + a^2 b^2 with x = sigma^2 / I^2 and
  y = s_h^2 / I^2 (s_h^2 the spread of the group on the observation's scale).
"""

from __future__ import annotations

from math import ceil

import numpy as np

#: fewest observations for an error-model fit (dials.scale BasicErrorModel)
MIN_REFLECTIONS = 250


def _group_sum(group, n_groups, values):
    return np.bincount(group, weights=values, minlength=n_groups)


def select_for_error_model(group, n_groups, intensity, variance, g, min_Ih: float = 25.0):
    """Boolean (N,) of the observations dials.scale refines its error model on, and <I_h> (M,).

    Groups with mean I/sigma^2 > 0.85; observations with g <I_h> > ``min_Ih``, I > 0.001
    and at least two of them in their group; groups whose spread is below
    max(50, max <I_h> / 40) times the mean variance (scaled units).
    """
    w = g * g / variance
    i_s = intensity / g
    ih = _group_sum(group, n_groups, w * i_s) / np.maximum(_group_sum(group, n_groups, w), 1e-300)
    n = np.bincount(group, minlength=n_groups).astype(float)
    mean_i_over_var = _group_sum(group, n_groups, intensity / variance) / np.maximum(n, 1)
    sel = mean_i_over_var[group] > 0.85
    sel &= (ih[group] * g > min_Ih) & (intensity > 0.001)
    nh = np.bincount(group[sel], minlength=n_groups)
    sel &= nh[group] > 1
    nh = np.bincount(group[sel], minlength=n_groups).astype(float)
    spread = _group_sum(group[sel], n_groups, (i_s[sel] - ih[group[sel]]) ** 2) / np.maximum(nh - 1, 1)
    mean_var = _group_sum(group[sel], n_groups, variance[sel] / g[sel] ** 2) / np.maximum(nh, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = spread / mean_var
    limit = max(50.0, float(np.max(ih[group[sel]])) / 40.0) if sel.any() else 50.0
    sel &= ratio[group] < limit
    return sel, ih


def _deltas(nh, i_s, ih_obs, intensity, variance, g, a, b):
    sigma_prime = a * np.sqrt(variance + (b * intensity) ** 2) / g
    return np.sqrt((nh - 1.0) / nh) * (i_s - ih_obs) / sigma_prime


def _intensity_bins(expected, n_bins: int):
    """Bin index (N,) of each observation (-1: none) and the bins' mean intensities, bins
    equally spaced in log(g <I_h>) from the top, widened to hold enough observations and
    dropped when nearly empty (dials.scale ErrorModelBinner)."""
    n = len(expected)
    min_req = MIN_REFLECTIONS if n <= 100 * MIN_REFLECTIONS else int(n / 100.0)
    min_per_bin = min(min_req, int(n / (3.0 * n_bins)))
    order = np.argsort(-expected, kind="stable")
    i_max, i_min = float(expected.max()), max(1.0, float(expected.min()))
    step = (np.log(i_max) - np.log(i_min)) / n_bins
    bounds = [i_max] + [float(np.exp(np.log(i_max) - k * step)) for k in range(1, n_bins + 1)]
    bounds[-1] = float(expected.min()) - 0.01
    bin_of = np.full(n, -1)
    taken = 0
    for k in range(n_bins):
        upper = expected <= bounds[k]
        sel = upper & (expected > bounds[k + 1])
        if sel.sum() < min_per_bin and taken + min_per_bin < n:
            bounds[k + 1] = float(expected[order[taken + min_per_bin]])
            sel = upper & (expected > bounds[k + 1])
        bin_of[sel & (bin_of < 0)] = k
        taken += int(sel.sum())
    counts = np.bincount(bin_of[bin_of >= 0], minlength=n_bins)
    keep = counts >= min_per_bin - 5
    remap = np.full(n_bins, -1)
    remap[keep] = np.arange(keep.sum())
    bin_of = np.where(bin_of >= 0, remap[np.maximum(bin_of, 0)], -1)
    nb = int(keep.sum())
    inb = bin_of >= 0
    mean_i = np.bincount(bin_of[inb], weights=expected[inb], minlength=nb) / \
        np.maximum(np.bincount(bin_of[inb], minlength=nb), 1)
    return bin_of, mean_i


def refine_individual(group, n_groups, intensity, variance, g, n_bins: int = 10,
                      min_Ih: float = 25.0, start: tuple[float, float] | None = None
                      ) -> tuple[float, float]:
    """(a, b) by dials.scale's ``individual`` minimisation (see the module text), from
    ``start`` (dials.scale: the current model, (1, 0.02) before the first refinement; with
    its 1 % convergence test on a the result depends on it by up to ~1 %)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import ndtr, ndtri  # normal CDF and its inverse

    sel, ih = select_for_error_model(group, n_groups, intensity, variance, g, min_Ih)
    if sel.sum() < MIN_REFLECTIONS:
        return 1.0, 0.0
    grp, inten, var, gg = group[sel], intensity[sel], variance[sel], g[sel]
    nh = np.bincount(grp, minlength=n_groups)[grp].astype(float)
    i_s, ih_obs = inten / gg, ih[grp]
    bin_of, mean_i = _intensity_bins(ih_obs * gg, n_bins)
    inb = bin_of >= 0
    nb = len(mean_i)
    counts = np.bincount(bin_of[inb], minlength=nb)
    wbin = mean_i / mean_i.sum()
    n = len(grp)
    lo_idx = ceil(ndtr(-1.5) * n - 0.5)
    hi_idx = ceil(ndtr(1.5) * n - 0.5)
    x = ndtri(np.linspace((lo_idx + 0.5) / n, (hi_idx + 0.5) / n, hi_idx - lo_idx,
                             endpoint=False))
    design = np.column_stack([np.ones_like(x), x])

    def refine_a(a, b):
        y = np.sort(_deltas(nh, i_s, ih_obs, inten, var, gg, a, b))[lo_idx:hi_idx]
        return a * float(np.linalg.lstsq(design, y, rcond=None)[0][1])

    def b_target(b, a):
        d = _deltas(nh, i_s, ih_obs, inten, var, gg, a, b)[inb]
        m1 = np.bincount(bin_of[inb], weights=d, minlength=nb) / counts
        m2 = np.bincount(bin_of[inb], weights=d * d, minlength=nb) / counts
        v = np.maximum(m2 - m1 * m1, 1e-12)
        return float(np.sum(wbin * ((0.5 - v) ** 2 + 1.0 / v - 1.25)))

    def refine_b(a):
        return float(minimize_scalar(b_target, bounds=(0.0, 2.0), args=(a,), method="bounded",
                                     options={"xatol": 1e-6}).x)

    a, b = start if start is not None else (1.0, 0.02)
    a_values = []
    for _ in range(20):
        a = refine_a(a, b)
        a_values.append(a)
        b = refine_b(a)
        if len(a_values) > 1 and (a_values[-2] <= 0
                                  or abs(a_values[-2] - a_values[-1]) / a_values[-2] < 0.01):
            if a_values[-1] > 0.4:
                return refine_a(a, b), b
            break
    return 1.0, refine_b(1.0)  # a and b did not settle together: DIALS fixes a = 1


def refine_regression(group, n_groups, intensity, variance, g, min_Ih: float = 25.0
                      ) -> tuple[float, float]:
    """(a, b) by dials.scale's ``regression`` minimisation (see the module text)."""
    sel, ih = select_for_error_model(group, n_groups, intensity, variance, g, min_Ih)
    if sel.sum() < MIN_REFLECTIONS:
        return 1.0, 0.0
    grp, inten, var, gg = group[sel], intensity[sel], variance[sel], g[sel]
    nh = np.bincount(grp, minlength=n_groups).astype(float)
    spread = _group_sum(grp, n_groups, (inten - gg * ih[grp]) ** 2 / (nh[grp] - 1.0))[grp]
    isq = inten ** 2
    (slope, intercept), *_ = np.linalg.lstsq(np.column_stack([var / isq, np.ones(len(isq))]),
                                             spread / isq, rcond=None)
    if slope <= 0:
        return 1.0, 0.0
    a = float(np.sqrt(slope))
    return a, float(np.sqrt(max(intercept, 0.0)) / a)
