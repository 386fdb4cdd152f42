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


def leave_one_out(group, n_groups, intensity, variance, g):
    """Normalised deviations of each observation from the rest of its group (dials.scale
    standard outlier rejection): (I - g I_h') / sqrt(var + g^2 var(I_h')), NaN if alone."""
    w = 1.0 / variance
    num = np.bincount(group, weights=w * g * intensity, minlength=n_groups)[group] - w * g * intensity
    den = np.bincount(group, weights=w * g * g, minlength=n_groups)[group] - w * g * g
    with np.errstate(invalid="ignore", divide="ignore"):
        ih = num / den
        z = (intensity - g * ih) / np.sqrt(variance + g * g / den)
    z[den <= 0] = np.nan
    return z, ih, den


def reject_outliers(group, n_groups, intensity, variance, g, zmax: float, max_passes: int = 20):
    """Boolean (N,) outliers: repeatedly the worst |z| > zmax of each group."""
    out = np.zeros(len(group), bool)
    idx = np.arange(len(group))
    for _ in range(max_passes):
        keep = ~out
        z, _, _ = leave_one_out(group[keep], n_groups, intensity[keep], variance[keep], g[keep])
        az = np.where(np.isfinite(z), np.abs(z), 0.0)
        bad = az > zmax
        if not bad.any():
            break
        gk = group[keep]
        order = np.lexsort((-az, gk))
        first = np.ones(len(order), bool)
        first[1:] = gk[order][1:] != gk[order][:-1]
        worst = order[first & bad[order]]
        out[idx[keep][worst]] = True
    return out


def r_meas(group, n_groups, intensity):
    """Rmeas of (already scaled) observations, groups with n >= 2."""
    n = np.bincount(group, minlength=n_groups).astype(float)
    s = np.bincount(group, weights=intensity, minlength=n_groups)
    mean = np.where(n > 0, s / np.maximum(n, 1), 0.0)
    dev = np.bincount(group, weights=np.abs(intensity - mean[group]), minlength=n_groups)
    m = n >= 2
    den = s[m].sum()
    return float((np.sqrt(n[m] / (n[m] - 1)) * dev[m]).sum() / den) if den else float("nan")
