"""Automatic high-resolution limit for the Laue group analysis (d_min=Auto).

As dials.symmetry (``resolution_filter_from_reflections_experiments``, after
dials.estimate_resolution): the observations are merged in the input point group
(Friedel mates together), sorted into shells of equal numbers of unique
reflections, and two limits are found: where a polynomial fit (degree <= 6) of
log <I>/<sigma(I)> of the merged reflections falls to ``min_i_mean_over_sigma_mean``,
and where a fit of CC1/2 (random half-data sets) to ``(1 - tanh((s - s0)/r)) / 2``,
s = d*^2, falls to ``min_cc_half``. The less strict limit (smaller d) is used; a
criterion the data never fall below sets no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np


@dataclass
class ResolutionEstimate:
    d_min: float | None
    d_min_isigi: float | None
    d_min_cc_half: float | None
    lines: list[str]


def canonical_indices(hkl: np.ndarray, space_group: gemmi.SpaceGroup):
    """(key, representative index) of each reflection's class of symmetry equivalents and
    Friedel mates under the point group of ``space_group`` (gemmi's operators): the
    equivalent with the largest packed key represents the class."""
    h = np.asarray(hkl, dtype=np.int64)
    rots = {}
    for op in space_group.operations().sym_ops:
        R = np.array(op.rot, dtype=np.int64) // op.DEN
        rots[R.tobytes()] = R
    Rs = np.stack([s * R for R in rots.values() for s in (1, -1)])
    # the packed key ((x + 1024) << 22 | (y + 1024) << 11 | z + 1024) is linear in
    # (x, y, z) = h R, so the keys of all equivalents are one matrix product
    w = np.array([1 << 22, 1 << 11, 1], dtype=np.int64)
    offset = int(1024 * w.sum())
    keys = h @ (Rs @ w).T + offset  # (N, n_ops)
    best = np.argmax(keys, axis=1)
    idx = np.arange(len(h))
    reps = (h[:, :, None] * Rs[best]).sum(axis=1)
    return keys[idx, best], reps


def merge_keys(hkl: np.ndarray, space_group: gemmi.SpaceGroup) -> np.ndarray:
    """One int64 key per reflection of its symmetry-unique (Friedel-merged) index."""
    return canonical_indices(hkl, space_group)[0]


def _shells(s_unique: np.ndarray, n_bins: int) -> np.ndarray:
    order = np.argsort(s_unique, kind="stable")
    shell = np.empty(len(s_unique), dtype=np.int64)
    shell[order] = np.arange(len(s_unique)) * n_bins // len(s_unique)
    return shell


def _crossing(s: np.ndarray, y: np.ndarray, limit: float) -> float | None:
    """First s (from low resolution) where the curve y(s) falls below limit."""
    below = np.flatnonzero(y < limit)
    if not len(below):
        return None
    i = below[0]
    if i == 0:
        return float(s[0])
    x0, x1, y0, y1 = s[i - 1], s[i], y[i - 1], y[i]
    return float(x0 + (limit - y0) * (x1 - x0) / (y1 - y0))


def estimate_d_min(hkl, intensity, sigma, d, space_group: gemmi.SpaceGroup,
                   min_i_mean_over_sigma_mean, min_cc_half, rng) -> ResolutionEstimate:
    keys = merge_keys(hkl, space_group)
    uniq, inv = np.unique(keys, return_inverse=True)
    n_u = len(uniq)
    lines = []
    if n_u < 20:
        return ResolutionEstimate(None, None, None, ["Too few reflections to estimate d_min."])
    w = 1.0 / sigma ** 2
    sw = np.bincount(inv, weights=w, minlength=n_u)
    i_m = np.bincount(inv, weights=w * intensity, minlength=n_u) / sw
    sig_m = 1.0 / np.sqrt(sw)
    s_u = np.bincount(inv, weights=1.0 / d ** 2, minlength=n_u) / np.bincount(inv, minlength=n_u)
    n_bins = int(min(100, max(1, n_u // 20)))
    shell = _shells(s_u, n_bins)
    cnt = np.bincount(shell, minlength=n_bins)
    s_bin = np.bincount(shell, weights=s_u, minlength=n_bins) / cnt
    d_isigi = d_cc = None
    if min_i_mean_over_sigma_mean is not None:
        isigi = (np.bincount(shell, weights=i_m, minlength=n_bins)
                 / np.bincount(shell, weights=sig_m, minlength=n_bins))
        deg = min(6, n_bins - 1)
        if deg >= 1:
            fit = np.polyval(np.polyfit(s_bin, np.log(np.clip(isigi, 1e-3, None)), deg), s_bin)
            s_lim = _crossing(s_bin, fit, np.log(min_i_mean_over_sigma_mean))
            if s_lim is not None and s_lim > 0:
                d_isigi = 1.0 / np.sqrt(s_lim)
                lines.append(f"Resolution estimate from <I>/<sigma(I)> > "
                             f"{min_i_mean_over_sigma_mean:.1f} : {d_isigi:.2f}")
    if min_cc_half is not None:
        d_cc = _cc_half_limit(inv, intensity, s_u, shell, s_bin, n_bins, min_cc_half, rng)
        if d_cc is not None:
            lines.append(f"Resolution estimate from CC1/2 > {min_cc_half:.2f}: {d_cc:.2f}")
    valid = [x for x in (d_cc, d_isigi) if x]
    d_min = min(valid) if valid else None
    lines.append("High resolution limit set to: " + (f"{d_min:.2f}" if d_min else "None"))
    return ResolutionEstimate(d_min, d_isigi, d_cc, lines)


def _cc_half_limit(inv, intensity, s_u, shell, s_bin, n_bins, limit, rng):
    """d where the tanh fit of CC1/2 per shell falls to ``limit`` (None: never, or too
    little multiplicity to tell)."""
    n_u = len(s_u)
    order = np.argsort(inv * 2.0 + rng.random(len(inv)), kind="stable")
    g = inv[order]
    first = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    rank = np.arange(len(g)) - np.repeat(first, np.diff(np.r_[first, len(g)]))
    half = np.empty(len(g), dtype=np.int64)
    half[order] = rank % 2
    ms = []
    for h in (0, 1):
        m = half == h
        c = np.bincount(inv[m], minlength=n_u)
        v = np.bincount(inv[m], weights=intensity[m], minlength=n_u)
        ms.append((c, v / np.maximum(c, 1)))
    both = (ms[0][0] > 0) & (ms[1][0] > 0)
    x, y, sb = ms[0][1][both], ms[1][1][both], shell[both]
    n, sx, sy, sxx, syy, sxy = (np.bincount(sb, weights=v, minlength=n_bins)
                                for v in (None, x, y, x * x, y * y, x * y))
    den = np.sqrt(np.maximum(n * sxx - sx ** 2, 0) * np.maximum(n * syy - sy ** 2, 0))
    ok = (n >= 10) & (den > 0)
    cc = np.where(ok, (n * sxy - sx * sy) / np.where(ok, den, 1), np.nan)
    if ok.sum() < 4:
        return None

    # (1 - tanh((s - s0) / r)) / 2 is a straight line in atanh(1 - 2 CC)
    x, y = s_bin[ok], np.clip(cc[ok], 0.02, 0.98)
    slope, icept = np.polyfit(x, np.arctanh(1 - 2 * y), 1)
    if slope <= 0:
        return None
    r, s0 = 1.0 / slope, -icept / slope
    if r <= 0:
        return None
    s_lim = s0 + r * np.arctanh(1 - 2 * limit)
    if not np.isfinite(s_lim) or s_lim >= x.max() or s_lim <= 0:
        return None
    return float(1.0 / np.sqrt(s_lim))
