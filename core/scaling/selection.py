"""Which reflections enter the minimisation of the scaling model (dials.scale's
``reflection_selection``; Beilsten-Edmands et al., *Acta Cryst.* D76 (2020) 385).

Only the minimisation of the model parameters (L-BFGS and the full-matrix round) is
restricted: every suitable reflection still gets its scale factor, and the intensity
combination, outlier rejection, error model and statistics use them all. The methods
and defaults are dials.scale's (DIALS 3):

- ``use_all``: every suitable reflection.
- ``random``: groups of symmetry equivalents chosen at random, at least ``min_groups``
  groups and enough for ``min_reflections`` reflections at the groups' mean
  multiplicity; only groups measured more than once (and, with several sweeps,
  whose mean I/sigma exceeds ``multi_dataset.Isigma_cutoff``) are candidates.
- ``quasi_random`` (DIALS's default): for one sweep the same as ``random``, after a
  preselection by ``Isigma_range`` and ``min_partiality``; for several sweeps
  (1) groups that connect the sweeps best (per shell of d*^2, the groups measured in
  the most sweeps, adding each time a group from the sweep with the fewest selected so
  far) for about 1000 groups' worth, (2) random groups within each sweep, (3) random
  groups over all sweeps up to max(min_groups x multiplicity, min_reflections).
- ``intensity_ranges``: reflections with E^2 in ``E2_range``, I/sigma in
  ``Isigma_range``, d in ``d_range`` and partiality above ``min_partiality``.

When fewer groups are available than the targets, every candidate is used, so that
``random`` and ``quasi_random`` only change anything on data sets of more than about
50000 reflections (or 2000 groups of equivalents). A sweep left with no selected
reflection keeps all of its own (dials.scale removes such a sweep from scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gonio.core.errors import GonioError

#: dials.scale seeds its random generator with 42 (scaler.py): the selection is reproducible
SEED = 42
#: groups' worth of reflections chosen for cross-sweep connectedness (dials.scale)
N_CONNECTED_GROUPS = 1000
#: shells of equal width in d*^2 in which the cross-sweep selection is made (dials.scale)
N_RESOLUTION_BINS = 20


class ReflectionSelectionError(GonioError):
    pass


@dataclass
class Selection:
    """The reflections that enter the minimisation, and how they were chosen."""

    method: str
    mask: np.ndarray          # (N,) bool over the scaled rows
    n_groups_used: int
    n_groups: int             # groups of equivalents among the suitable rows

    def summary(self) -> str:
        n, m = int(self.mask.sum()), len(self.mask)
        return (f"Reflection selection ({self.method}): {n} of {m} reflections "
                f"({self.n_groups_used} of {self.n_groups} groups of equivalents) used to "
                "minimise the model.")


def select_for_minimisation(p, group, n_groups, dataset, n_datasets, intensity, variance,
                            partiality, d) -> Selection:
    """The rows (of the reflections suitable for scaling) that the minimisation uses.

    ``p``: ScalingParams; ``group`` (N,) the group of equivalents of each row;
    ``dataset`` (N,) its sweep (0..n_datasets-1); ``intensity``, ``variance`` the
    intensities being scaled (not yet scaled); ``partiality`` and ``d`` (A) per row.
    """
    method = p.reflection_selection_method
    rng = np.random.default_rng(SEED)
    n_all = np.bincount(group, minlength=n_groups)
    n_groups_present = int((n_all > 0).sum())
    isig = _i_over_sigma(intensity, variance)
    if method == "use_all":
        mask = np.ones(len(group), bool)
    elif method == "intensity_ranges":
        mask = _preselection(p, isig, partiality, d)
        lo, hi = p.e2_range
        e2 = normalised_e2(intensity, d, dataset, n_datasets)
        mask &= (e2 > lo) & (e2 < hi)
    elif method == "random" and n_datasets > 1:
        cand = _connected_groups(group, n_groups, isig, p.random_isigma_cutoff)
        mask = _random_groups(rng, cand, n_all, p.random_min_groups,
                              p.random_min_reflections)[group]
    elif method in ("random", "quasi_random") and n_datasets == 1:
        pre = _preselection(p, isig, partiality, d)
        n_pre = np.bincount(group[pre], minlength=n_groups)
        if (n_pre > 1).any():
            chosen = _random_groups(rng, n_pre > 1, n_pre, p.random_min_groups,
                                    p.random_min_reflections)
            mask = pre & chosen[group]
        else:  # nothing measured twice after the preselection: as dials.scale, use all
            mask = np.ones(len(group), bool)
    elif method == "quasi_random":
        mask = _quasi_random_multi(p, rng, group, n_groups, dataset, n_datasets, isig,
                                   partiality, d)
    else:
        raise ValueError(f"unknown reflection_selection.method {method!r}")
    if not mask.any():
        raise ReflectionSelectionError(
            f"No reflection passes reflection_selection.method={method} (E2_range "
            f"{tuple(p.e2_range)}, Isigma_range {tuple(p.isigma_range)}, d_range {p.d_range}, "
            f"min_partiality {p.min_partiality}), so the model has nothing to be fitted to: "
            "widen those ranges or use reflection_selection.method=use_all.")
    # a sweep left without any keeps all its reflections, so that its model stays determined
    # (dials.scale drops such a sweep instead)
    empty = np.bincount(dataset[mask], minlength=n_datasets) == 0
    mask |= empty[dataset]
    return Selection(method, mask, int((np.bincount(group[mask], minlength=n_groups) > 0).sum()),
                     n_groups_present)


def normalised_e2(intensity, d, dataset, n_datasets) -> np.ndarray:
    """E^2 = I / <I>(d*^2) of each row, normalised sweep by sweep (dials.scale's Esq)."""
    from gonio.core.symmetry.normalise import quasi_normalise

    e2 = np.ones(len(intensity))
    for i in range(n_datasets):
        sel = dataset == i
        if sel.sum() > 1:
            e2[sel] = intensity[sel] / quasi_normalise(intensity[sel], 1.0 / d[sel] ** 2)
    return e2


def _i_over_sigma(intensity, variance) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = intensity / np.sqrt(variance)
    return np.where(np.isfinite(out), out, 0.0)


def _preselection(p, isig, partiality, d) -> np.ndarray:
    """dials.scale's common range selection: I/sigma in Isigma_range (an upper limit of 0
    is none), partiality above min_partiality, d in d_range."""
    lo, hi = p.isigma_range
    sel = isig > lo
    if hi != 0.0:
        sel &= isig < hi
    sel &= partiality > p.min_partiality
    if p.d_range is not None:
        sel &= (d > min(p.d_range)) & (d < max(p.d_range))
    return sel


def _connected_groups(group, n_groups, isig, cutoff) -> np.ndarray:
    """(n_groups,) bool: groups measured more than once whose mean I/sigma exceeds
    ``cutoff`` (0 if none does, as dials.scale)."""
    n = np.bincount(group, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(group, weights=isig, minlength=n_groups) / n
    ok = (mean > cutoff) & (n > 1)
    if not ok.any():
        ok = (mean > 0) & (n > 1)
    return ok


def _random_groups(rng, candidates, counts, min_groups, min_reflections) -> np.ndarray:
    """(n_groups,) bool: max(min_groups, ceil(min_reflections / mean multiplicity)) of the
    candidate groups at random, or all of them if there are not more."""
    ids = np.flatnonzero(candidates)
    out = np.zeros(len(candidates), bool)
    if not len(ids):
        return out
    n_sel = max(int(min_groups), int(np.ceil(min_reflections / np.mean(counts[ids]))))
    out[rng.choice(ids, n_sel, replace=False) if n_sel < len(ids) else ids] = True
    return out


def _quasi_random_multi(p, rng, group, n_groups, dataset, n_datasets, isig, partiality, d):
    """dials.scale's quasi_random selection for several sweeps (MultiScaler)."""
    n_all = np.bincount(group, minlength=n_groups)
    over1 = n_all[n_all > 1]
    if not len(over1):
        return np.ones(len(group), bool)
    avg_multi = float(np.mean(over1))
    total_target = max(avg_multi * p.random_min_groups, p.random_min_reflections)
    cand = _connected_groups(group, n_groups, isig, p.random_isigma_cutoff)
    mask = connected_across_datasets(group, n_groups, dataset, n_datasets, d, cand,
                                     min(N_CONNECTED_GROUPS, p.random_min_groups) * avg_multi)
    # random groups within each sweep
    per_dataset = (total_target - mask.sum()) / (2.0 * n_datasets)
    if per_dataset > 0:
        pre = _preselection(p, isig, partiality, d) & cand[group]
        for i in range(n_datasets):
            rows = pre & (dataset == i)
            n_i = np.bincount(group[rows], minlength=n_groups)
            if (n_i > 1).any():
                ids = np.flatnonzero(n_i > 1)
                k = int(np.ceil(per_dataset / np.mean(n_i[ids])))
                chosen = np.zeros(n_groups, bool)
                chosen[rng.choice(ids, k, replace=False) if k < len(ids) else ids] = True
                mask |= rows & chosen[group]
    # random groups over all sweeps, to reach the total
    left = total_target - mask.sum()
    frac_used = mask.sum() / over1.sum()
    if left > 0 and frac_used < 1:
        k = int(left * 1.05 / (1.0 - frac_used) / avg_multi)
        ids = np.flatnonzero(cand)
        chosen = np.zeros(n_groups, bool)
        chosen[rng.choice(ids, k, replace=False) if k < len(ids) else ids] = True
        mask |= chosen[group]
    return mask


def connected_across_datasets(group, n_groups, dataset, n_datasets, d, candidates,
                              min_total) -> np.ndarray:
    """Rows of the groups that connect the sweeps best (dials.scale,
    ``select_connected_reflections_across_datasets``): in each of 20 shells of equal
    width in d*^2, the candidate groups sorted by the number of sweeps they were measured
    in; from the top of that list, a group with a reflection in the sweep that has the
    fewest selected so far is added until every sweep has min_total / (4 n_datasets)
    (per shell) or the shell's total reaches 1.2 min_total (per shell)."""
    rows = np.flatnonzero(candidates[group])
    mask = np.zeros(len(group), bool)
    if not len(rows):
        return mask
    s2 = 1.0 / d[rows] ** 2
    lo, hi = float(s2.min()), float(s2.max())
    span = hi - lo
    lo, hi = lo - 1e-6 * span, hi + 1e-6 * span
    step = (hi - lo) / N_RESOLUTION_BINS if hi > lo else 1.0
    shell = np.clip(((s2 - lo) / step).astype(np.int64), 0, N_RESOLUTION_BINS - 1)
    min_per_class = int(min_total / (n_datasets * 4.0) / N_RESOLUTION_BINS)
    min_bin = int(min_total / N_RESOLUTION_BINS)
    max_bin = int(1.2 * min_total / N_RESOLUTION_BINS)
    for b in range(N_RESOLUTION_BINS):
        r = rows[shell == b]
        if not len(r):
            continue
        ug, gi = np.unique(group[r], return_inverse=True)
        counts = np.zeros((n_datasets, len(ug)))  # the class matrix: sweeps x groups
        np.add.at(counts, (dataset[r], gi), 1.0)
        order = np.argsort(-(counts > 0).sum(axis=0), kind="stable")
        used = fill_classes(counts[:, order], min_per_class, min_bin, max_bin)
        mask[r[np.isin(gi, order[used])]] = True
    return mask


def fill_classes(sorted_counts, min_per_class, min_total, max_total) -> np.ndarray:
    """Columns (groups, sorted by connectedness) chosen by dials.scale's
    ``_loop_over_class_matrix``: starting from the first, repeatedly add the first unused
    column with an entry in the class (row) that has the fewest so far, until every class
    has ``min_per_class`` or the total exceeds ``max_total``; a class with no columns
    left counts as full; if the total is then below ``min_total``, raise the per-class
    target by the factor needed and continue. Returns the indices of the chosen columns."""
    n_rows, n_cols = sorted_counts.shape
    has = sorted_counts > 0
    # per class, the columns with an entry in it, in order, and a pointer past the used ones
    lists = [np.flatnonzero(has[k]) for k in range(n_rows)]
    ptr = np.zeros(n_rows, np.int64)
    used = np.zeros(n_cols, bool)
    used[0] = True
    total = sorted_counts[:, 0].copy()
    deficit = np.zeros(n_rows)

    def next_column(k):
        lst = lists[k]
        while ptr[k] < len(lst) and used[lst[ptr[k]]]:
            ptr[k] += 1
        return lst[ptr[k]] if ptr[k] < len(lst) else None

    def fill(limit, stop_total):
        nonlocal total
        while total.min() < limit and (stop_total is None
                                       or total.sum() - deficit.sum() < stop_total):
            k = int(np.argmin(total))
            c = next_column(k)
            if c is None:  # no more groups in this class: count it as full
                deficit[k] += limit - total[k]
                total[k] = limit
            else:
                used[c] = True
                total = total + sorted_counts[:, c]
            if stop_total is not None and total.sum() > stop_total:
                return True
        return False

    if fill(min_per_class, max_total):
        return np.flatnonzero(used)
    n = (total - deficit).sum()
    if n < min_total and not used.all() and n > 0:
        full = deficit != 0
        mult = int(np.floor(min_total * (n_rows - full.sum()) / (n * n_rows)) + 1)
        new_limit = min_per_class * mult
        deficit[full] += new_limit - total[full]
        total[full] = new_limit
        fill(new_limit, None)
    return np.flatnonzero(used)
