"""The basic error model of dials.scale: sigma'^2 = a^2 (sigma^2 + (b I)^2).

a and b are refined from the normalised deviations of each observation from the rest of
its group (Evans & Murshudov 2013, Acta Cryst. D69, 1204; Evans 2006, Acta Cryst. D62, 72):

    delta_hl = (I_hl / g_hl - <I_h>_-l) / sqrt(sigma'_hl^2 + sigma'(<I_h>_-l)^2)

(scaled units; <I_h>_-l the weighted mean of the other observations), which has unit
variance when sigma' is right, whatever the multiplicity. a and b make the mean of
delta^2 1 in ``n_bins`` bins of <I_h> of equal counts (least squares over the bins). As
delta scales as 1/a, a has a closed form for each b and only b is searched. Groups with
fewer than 2 observations, weak reflections (<I_h> below ``min_Ih``, 25 as DIALS) and
gross deviants (|delta| > 6) are left out.

dials.scale writes delta as sqrt((n - 1) / n) (I_hl - <I_h>) / sigma' with <I_h> the mean
of the whole group, whose variance for right sigmas is ((n - 1) / n)^2, not 1: its a is
lower than this one at low multiplicity (by 1/2 for pairs); its minimisations are in
:mod:`gonio.core.scaling.error_model_dials` (``minimisation=individual`` or
``regression``). On the L-cysteine data (multiplicity 7.5) DIALS 1.x found a = 1.01,
b = 0.053 with its scales; gonio 1.25, 0.041 with its own (docs/scale.md).
"""

from __future__ import annotations

import numpy as np


def _deltas(group, n_groups, i_s, var_s, a, b, i_obs_s):
    """delta_hl and the group means <I_h> for error-model parameters a, b."""
    v = a * a * (var_s + (b * i_obs_s) ** 2)
    w = 1.0 / v
    sw = np.bincount(group, weights=w, minlength=n_groups)
    swi = np.bincount(group, weights=w * i_s, minlength=n_groups)
    ih = swi / np.maximum(sw, 1e-300)
    rest = sw[group] - w
    with np.errstate(divide="ignore", invalid="ignore"):
        ih_other = (swi[group] - w * i_s) / rest
        d = (i_s - ih_other) / np.sqrt(v + 1.0 / rest)
    return np.where(rest > 0, d, 0.0), ih


def refine_basic_error_model(group, n_groups, intensity, variance, g, n_bins: int = 10,
                             min_Ih: float = 25.0) -> tuple[float, float]:
    """(a, b) from unscaled ``intensity``, ``variance`` and inverse scale factors ``g``
    of observations in groups ``group`` of symmetry equivalents (see the module text)."""
    from scipy.optimize import minimize_scalar

    n = np.bincount(group, minlength=n_groups)
    sel = n[group] >= 2
    i_s = intensity[sel] / g[sel]
    var_s = variance[sel] / g[sel] ** 2
    grp = group[sel]
    if len(grp) < 50:
        return 1.0, 0.0
    _, ih = _deltas(grp, n_groups, i_s, var_s, 1.0, 0.0, i_s)
    ok = ih[grp] >= min_Ih
    if ok.sum() < 50:
        return 1.0, 0.0
    bin_of = np.empty(ok.sum(), np.int64)
    for k, x in enumerate(np.array_split(np.argsort(ih[grp][ok]), n_bins)):
        bin_of[x] = k
    counts = np.bincount(bin_of, minlength=n_bins)
    use = counts >= 5
    # ok holds whole groups (their members share <I_h>): the deltas of its rows need no other
    grp, i_s, var_s = grp[ok], i_s[ok], var_s[ok]

    def bin_variances(b):
        dl, _ = _deltas(grp, n_groups, i_s, var_s, 1.0, b, i_s)
        inside = np.abs(dl) <= 6  # gross deviants do not steer the fit
        n_in = np.bincount(bin_of, weights=inside, minlength=n_bins)
        return (np.bincount(bin_of, weights=np.where(inside, dl * dl, 0.0), minlength=n_bins)
                / np.maximum(n_in, 1))[use]

    def best_u(v):  # u = 1 / a^2 minimising sum (1 - u v)^2
        return float(np.sum(v) / np.sum(v * v))

    def misfit(b):
        v = bin_variances(b)
        return float(np.sum((1.0 - best_u(v) * v) ** 2))

    res = minimize_scalar(misfit, bounds=(0.0, 0.5), method="bounded", options={"xatol": 1e-5})
    b = float(res.x)
    return float(1.0 / np.sqrt(best_u(bin_variances(b)))), b


def apply_error_model(variance, intensity, a: float, b: float):
    """sigma'^2 = a^2 (sigma^2 + (b I)^2)."""
    return a * a * (variance + (b * intensity) ** 2)


def refine_error_model(minimisation: str, group, n_groups, intensity, variance, g,
                       start: tuple[float, float] | None = None) -> tuple[float, float]:
    """(a, b) by ``minimisation``: leave_one_out (this module), or dials.scale's individual
    (from ``start``, default (1, 0.02)) or regression
    (:mod:`gonio.core.scaling.error_model_dials`)."""
    if minimisation == "leave_one_out":
        return refine_basic_error_model(group, n_groups, intensity, variance, g)
    from gonio.core.scaling import error_model_dials

    if minimisation == "individual":
        return error_model_dials.refine_individual(group, n_groups, intensity, variance, g,
                                                   start=start)
    if minimisation == "regression":
        return error_model_dials.refine_regression(group, n_groups, intensity, variance, g)
    raise ValueError(f"unknown error-model minimisation {minimisation!r}")
