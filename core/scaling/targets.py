"""The scaling target and its pieces, over all observations at once (numpy/scipy.sparse).

Target (Hamilton, Rollett & Sparks 1965; dials.scale): sum_hl w_hl (I_hl - g_hl I_h)^2
with w = 1/sigma^2 and the best scale-weighted mean I_h = sum(w g I) / sum(w g^2) of
each group of symmetry equivalents.
"""

from __future__ import annotations

import numpy as np


def best_means(group, n_groups, intensity, weight, g):
    """I_h = sum(w g I)/sum(w g^2) per group, and sum(w g^2) (for its variance 1/sum)."""
    num = np.bincount(group, weights=weight * g * intensity, minlength=n_groups)
    den = np.bincount(group, weights=weight * g * g, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, 0.0), den


def group_median(group, n_groups, values):
    """Median of ``values`` in each group (M,), the mean of the two middle ones for an even
    count; NaN for empty groups."""
    order = np.lexsort((values, group))
    counts = np.bincount(group, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    have = counts > 0
    lo = start + np.maximum(counts - 1, 0) // 2
    hi = start + counts // 2
    out = np.full(n_groups, np.nan)
    v = values[order]
    out[have] = 0.5 * (v[lo[have]] + v[np.minimum(hi[have], len(v) - 1)])
    return out


def leave_one_out(group, n_groups, intensity, weight, g):
    """Normalised deviations of each observation from the rest of its group (dials.scale
    standard outlier rejection): (I - g I_h') / sqrt(1/w + g^2 / sum'(w g^2)), with I_h' the
    best mean of the others; NaN if alone."""
    num = np.bincount(group, weights=weight * g * intensity, minlength=n_groups)[group] \
        - weight * g * intensity
    den = np.bincount(group, weights=weight * g * g, minlength=n_groups)[group] - weight * g * g
    with np.errstate(invalid="ignore", divide="ignore"):
        ih = num / den
        z = (intensity - g * ih) / np.sqrt(1.0 / weight + g * g / den)
    z[den <= 0] = np.nan
    return z, ih, den


def reject_outliers(group, n_groups, intensity, variance, g, zmax: float, max_passes: int = 20,
                    reject_pairs: bool = True):
    """Boolean (N,) outliers, as dials.scale's standard (NormDevOutlierRejection): in every
    group of more than two observations, the one deviating most from the rest by more than
    ``zmax`` is rejected, repeatedly; weights w = 1/sigma^2 capped at 10 times the group's
    median first, so that no single observation (a zero with a tiny sigma) sets the mean
    the others are judged against.

    With ``reject_pairs``, a pair whose two observations disagree by more than ``zmax``
    (their deviations are equal and opposite, so neither can be singled out) loses both:
    dials.scale keeps both (``reject_pairs=False``, also for groups left with two after a
    rejection), and the delta-CC1/2 filter then blames the good observation's image group
    as much as the bad one's."""
    w = 1.0 / variance
    w = np.minimum(w, 10.0 * group_median(group, n_groups, w)[group])
    out = np.zeros(len(group), bool)
    # the rows judged in a pass: those left in the groups that lost one in the pass before
    # (a group that lost none keeps its deviations, so it loses none later either)
    rows = np.arange(len(group))
    for _ in range(max_passes):
        gk = group[rows]
        z, _, _ = leave_one_out(gk, n_groups, intensity[rows], w[rows], g[rows])
        az = np.where(np.isfinite(z), np.abs(z), 0.0)
        bad = az > zmax
        pair = np.bincount(gk, minlength=n_groups)[gk] == 2
        if not reject_pairs:
            bad &= ~pair
        if not bad.any():
            break
        order = np.lexsort((-az, gk))
        first = np.ones(len(order), bool)
        first[1:] = gk[order][1:] != gk[order][:-1]
        worst = order[first & bad[order] & ~pair[order]]
        out[rows[worst]] = True
        out[rows[bad & pair]] = True
        touched = np.zeros(n_groups, bool)
        touched[gk[bad]] = True
        rows = rows[touched[gk] & ~out[rows]]
    return out


def reject_outliers_simple(group, n_groups, intensity, variance, g, zmax: float):
    """Boolean (N,) outliers, dials.scale's ``outlier_rejection=simple``
    (SimpleNormDevOutlierRejection): in one pass, every observation whose deviation from the
    best mean of its whole group (itself included) exceeds ``zmax`` times the deviation's
    standard deviation, sqrt(1/w - g^2 / sum(w g^2)) (the observation is part of the mean it
    is compared with; dials.scale divides by sqrt(1/w + (g / sum(w g^2))^2), whose second
    term has the units of I^4, not I^2). Groups of one are never outliers; a pair either keeps or loses both
    observations. Weights are capped at ten times the group's median, as in
    :func:`reject_outliers`."""
    w = 1.0 / variance
    w = np.minimum(w, 10.0 * group_median(group, n_groups, w)[group])
    ih, swg2 = best_means(group, n_groups, intensity, w, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_dev = 1.0 / w - g * g / swg2[group]
        z = np.abs(intensity - g * ih[group]) / np.sqrt(var_dev)
    return np.isfinite(z) & (var_dev > 0) & (z > zmax)


def r_meas(group, n_groups, intensity, variance):
    """Rmeas of (already scaled) observations with their variances, groups with n >= 2,
    about the inverse-variance weighted mean (cctbx ``merge_equivalents_obs``)."""
    n = np.bincount(group, minlength=n_groups).astype(float)
    s = np.bincount(group, weights=intensity, minlength=n_groups)
    w = 1.0 / variance
    sw = np.bincount(group, weights=w, minlength=n_groups)
    mean = np.bincount(group, weights=w * intensity, minlength=n_groups) / np.where(sw > 0, sw, 1)
    dev = np.bincount(group, weights=np.abs(intensity - mean[group]), minlength=n_groups)
    m = n >= 2
    den = s[m].sum()
    return float((np.sqrt(n[m] / (n[m] - 1)) * dev[m]).sum() / den) if den else float("nan")
