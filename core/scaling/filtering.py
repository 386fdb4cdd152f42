"""Delta-CC1/2 filtering of data sets or image groups (dials.scale ``filtering.method=deltacchalf``).

For each group of observations (a whole data set, or ``group_size`` consecutive images
of one), CC1/2 (sigma-tau, Assmann et al. 2016) is computed without the group, as
dials.compute_delta_cchalf computes it: in ``N_BINS`` resolution bins of equal width in
1/d^2, averaged with the number of unique reflections (measured twice or more) of each bin
as weights, so that no single strong reflection decides it;
delta_i = CC1/2(all) - CC1/2(without i) is low (negative) for a group that lowers the
agreement of the rest. Groups with delta_i < mean - ``stdcutoff`` * sd are removed, worst
first, while at most ``max_percent_removed`` of the observations go (Assmann et al. 2016;
dials.scale). Scaling and filtering alternate up to ``max_cycles`` times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: resolution bins of the delta-CC1/2 analysis (dials.compute_delta_cchalf ``nbins``)
N_BINS = 10


def cc_half_sigma_tau(n, s1, s2, bin_of=None) -> float:
    """CC1/2 from per-reflection count n, sum and sum of squares of the observations; with
    ``bin_of`` (bin index of each reflection), the mean of the bins' CC1/2 weighted by
    their reflections measured at least twice (bins with fewer than two left out)."""
    m = n >= 2
    if m.sum() < 3:
        return float("nan")
    if bin_of is None:
        bin_of = np.zeros(len(n), np.int64)
    b = bin_of[m]
    nb = int(b.max()) + 1
    mean = s1[m] / n[m]
    var_obs = (s2[m] - n[m] * mean ** 2) / (n[m] - 1)
    count = np.bincount(b, minlength=nb).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_mean = np.bincount(b, weights=mean, minlength=nb) / count
        var_y = np.bincount(b, weights=(mean - bin_mean[b]) ** 2, minlength=nb) / (count - 1)
        var_e = np.bincount(b, weights=var_obs / n[m], minlength=nb) / count
        cc = (var_y - var_e) / (var_y + var_e)
    ok = (count >= 2) & np.isfinite(cc)
    return float(np.sum(count[ok] * cc[ok]) / np.sum(count[ok])) if ok.any() else float("nan")


def resolution_bins(d_unique, n_bins: int = N_BINS) -> np.ndarray:
    """Bin (0..n_bins-1) of each unique reflection in equal steps of 1/d^2 over the data."""
    s2 = 1.0 / np.asarray(d_unique, float) ** 2
    lo, hi = float(s2.min()), float(s2.max())
    width = (hi - lo) / n_bins if hi > lo else 1.0
    return np.clip(np.floor((s2 - lo) / width).astype(np.int64), 0, n_bins - 1)


@dataclass
class FilterCycle:
    """One filtering cycle: the groups (label, delta CC1/2) and which were removed."""

    cc_half: float
    labels: list
    delta: np.ndarray
    removed: list
    cutoff: float


def delta_cc_half(unique_group, n_unique, intensity, filter_group, labels, bin_of=None):
    """(CC1/2 of all, delta CC1/2 per filter group) for observations of unique reflections
    ``unique_group`` (N,) in filter groups ``filter_group`` (N,) (0..len(labels)-1), CC1/2
    in the resolution bins ``bin_of`` (M,) of the unique reflections (None: one bin)."""
    n = np.bincount(unique_group, minlength=n_unique).astype(float)
    s1 = np.bincount(unique_group, weights=intensity, minlength=n_unique)
    s2 = np.bincount(unique_group, weights=intensity ** 2, minlength=n_unique)
    cc_all = cc_half_sigma_tau(n, s1, s2, bin_of)
    order = np.argsort(filter_group, kind="stable")
    bounds = np.searchsorted(filter_group[order], np.arange(len(labels) + 1))
    delta = np.full(len(labels), np.nan)
    for k in range(len(labels)):
        sel = order[bounds[k]:bounds[k + 1]]
        if not len(sel):
            continue
        ug = unique_group[sel]
        cc = cc_half_sigma_tau(n - np.bincount(ug, minlength=n_unique),
                               s1 - np.bincount(ug, weights=intensity[sel], minlength=n_unique),
                               s2 - np.bincount(ug, weights=intensity[sel] ** 2,
                                                minlength=n_unique), bin_of)
        delta[k] = cc_all - cc
    return cc_all, delta


def choose_removals(delta, sizes, n_total, already_removed, stdcutoff, max_percent_removed):
    """Indices of groups to remove (worst first) and the cutoff used."""
    ok = np.isfinite(delta)
    if ok.sum() < 3:
        return [], float("nan")
    cutoff = float(np.mean(delta[ok]) - stdcutoff * np.std(delta[ok]))
    out, removed = [], already_removed
    for k in np.argsort(delta):
        if not ok[k] or delta[k] >= cutoff:
            break
        if 100.0 * (removed + sizes[k]) / n_total > max_percent_removed:
            break
        out.append(int(k))
        removed += sizes[k]
    return out, cutoff
