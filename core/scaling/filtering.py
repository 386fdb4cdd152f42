"""Delta-CC1/2 filtering of data sets or image groups (dials.scale ``filtering.method=deltacchalf``).

For each group of observations (a whole data set, or ``group_size`` consecutive images
of one), CC1/2 (sigma-tau, Assmann et al. 2016) is computed without the group;
delta_i = CC1/2(all) - CC1/2(without i) is low (negative) for a group that lowers the
agreement of the rest. Groups with delta_i < mean - ``stdcutoff`` * sd are removed, worst
first, while at most ``max_percent_removed`` of the observations go (Assmann et al. 2016;
dials.scale). Scaling and filtering alternate up to ``max_cycles`` times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cc_half_sigma_tau(n, s1, s2) -> float:
    """CC1/2 from per-reflection count n, sum and sum of squares of the observations."""
    m = n >= 2
    if m.sum() < 3:
        return float("nan")
    mean = s1[m] / n[m]
    var_obs = (s2[m] - n[m] * mean ** 2) / (n[m] - 1)
    var_y = np.var(mean, ddof=1)
    var_e = np.mean(var_obs / n[m])
    return float((var_y - var_e) / (var_y + var_e)) if var_y + var_e > 0 else float("nan")


@dataclass
class FilterCycle:
    """One filtering cycle: the groups (label, delta CC1/2) and which were removed."""

    cc_half: float
    labels: list
    delta: np.ndarray
    removed: list
    cutoff: float


def delta_cc_half(unique_group, n_unique, intensity, filter_group, labels):
    """(CC1/2 of all, delta CC1/2 per filter group) for observations of unique reflections
    ``unique_group`` (N,) in filter groups ``filter_group`` (N,) (0..len(labels)-1)."""
    n = np.bincount(unique_group, minlength=n_unique).astype(float)
    s1 = np.bincount(unique_group, weights=intensity, minlength=n_unique)
    s2 = np.bincount(unique_group, weights=intensity ** 2, minlength=n_unique)
    cc_all = cc_half_sigma_tau(n, s1, s2)
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
                                                minlength=n_unique))
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
