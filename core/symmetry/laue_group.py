"""Laue group determination by scoring symmetry elements (dials.symmetry, after POINTLESS).

Method (Evans 2006, Acta Cryst. D62, 72-82; Evans 2011, Acta Cryst. D67, 282-292,
appendix A; as implemented in dials.symmetry, Gildea & Winter 2018, Acta Cryst. D74,
405-410). With the data in the minimum (Niggli) cell, as P 1 with Friedel mates apart,
normalised to E^2 and with the reflections on any element of the lattice's Patterson
group left out (epsilon = 1):

1. sigma(CC) = CCsigFac / sqrt(N): CCsigFac is the slope of rms(CC) against 1/sqrt(N)
   for random groups of N = 5..200 pairs of unrelated reflections of similar resolution;
2. E(CC; S), the correlation expected when an element is present: the weighted mean
   of var(E^2) / (var(E^2) + <sigma^2>) and the correlation of Friedel pairs;
3. each rotation of the lattice group (one of R, R^-1) is scored by the correlation
   of the pairs (E^2(h), E^2(hR)) (and hR^-1 for orders > 2; Friedel pairs for the
   identity), after rejecting values beyond 20 inter-quartile ranges; Z-CC = CC /
   sigma(CC) with sigma(CC) >= 0.1; p(CC; S) is a Cauchy density truncated to [-1, 1]
   centred on E(CC; S) with width sigma(CC); p(CC; !S) the same averaged over a centre
   mu in [0, 1] weighted by sqrt(1 - mu^2); the element's likelihood is
   p(CC; S) / (p(CC; S) + p(CC; !S));
4. a subgroup's likelihood is the product of p(CC; S) over its elements and p(CC; !S)
   over the others (elements with more than 2 pairs), normalised over all subgroups;
   its Z-CC for/against are the rms Z-CC of the elements in/not in it, NetZcc their
   difference; confidence = sqrt(p_best (p_best - p_next)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gonio.core.lattice.bravais import _key, _rotation_order, rotation_axis
from gonio.core.symmetry.subgroups import LatticeSymmetry, LaueSubgroup


def hkl_keys(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, dtype=np.int64) + 1024
    return (h[:, 0] << 22) | (h[:, 1] << 11) | h[:, 2]


@dataclass
class CCSums:
    """Single-pass Pearson correlation sums (can be added together)."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> CCSums:
        # element-wise products: BLAS dot products are slower for these sizes here
        return cls(len(x), float(x.sum()), float(y.sum()), float((x * y).sum()),
                   float((x * x).sum()), float((y * y).sum()))

    def __add__(self, o: CCSums) -> CCSums:
        return CCSums(self.n + o.n, self.sx + o.sx, self.sy + o.sy, self.sxy + o.sxy,
                      self.sxx + o.sxx, self.syy + o.syy)

    @property
    def cc(self) -> float:
        if self.n == 0:
            return 0.0
        den = (np.sqrt(max(self.n * self.sxx - self.sx ** 2, 0.0))
               * np.sqrt(max(self.n * self.syy - self.sy ** 2, 0.0)))
        return float((self.n * self.sxy - self.sx * self.sy) / den) if den > 0 else 0.0


def _cauchy_cdf(x, loc, scale):
    return 0.5 + np.arctan((x - loc) / scale) / np.pi


def trunccauchy_pdf(x, loc, scale, a=-1.0, b=1.0):
    """Cauchy density at ``x`` truncated to [a, b]."""
    pdf = scale / (np.pi * ((x - loc) ** 2 + scale ** 2))
    return pdf / (_cauchy_cdf(b, loc, scale) - _cauchy_cdf(a, loc, scale))


_MU = np.linspace(0.0, 1.0, 2001)
_W_MU = np.sqrt(1.0 - _MU ** 2)


def p_cc_given_not_s(cc: float, sigma_cc: float) -> float:
    """p(CC; !S): the truncated Cauchy averaged over its centre mu in [0, 1] with weight
    (1 - mu^2)^(1/2) (Evans 2011, A1)."""
    f = trunccauchy_pdf(cc, _MU, sigma_cc) * _W_MU
    return float(np.trapezoid(f, _MU) / np.trapezoid(_W_MU, _MU))


@dataclass
class ElementScore:
    """One symmetry element (a rotation of the lattice group, in the minimum cell)."""

    R: np.ndarray
    name: str  # e.g. "4^1 |(0, 0, 1)"
    cc: CCSums
    n_refs: int
    z_cc: float = 0.0
    sigma_cc: float = 0.0
    likelihood: float = 0.0
    p_cc_given_s: float = 1.0
    p_cc_given_not_s: float = 1.0


@dataclass
class SubgroupScore:
    subgroup: LaueSubgroup
    likelihood: float
    log_likelihood: float
    z_cc_for: float
    z_cc_against: float
    cc_for: float
    cc_against: float
    confidence: float = 0.0

    @property
    def z_cc_net(self) -> float:
        return self.z_cc_for - self.z_cc_against


@dataclass
class LaueGroupResult:
    lattice: LatticeSymmetry
    elements: list[ElementScore]
    subgroups: list[SubgroupScore]  # best first
    cc_sig_fac: float
    e_cc_true: float
    cc_identity: float
    cc_true: float
    cc_unrelated: CCSums
    n_reflections: int

    @property
    def best(self) -> SubgroupScore:
        return self.subgroups[0]


def element_name(R: np.ndarray) -> str:
    """cctbx ``rot_mx_info`` style: ``2 |(1, 0, 0)``, ``4^1 |(0, 0, 1)``, ``1 |(0, 0, 0)``."""
    n = _rotation_order(R)
    if n == 1:
        return "1 |(0, 0, 0)"
    u = rotation_axis(R)
    if u[np.flatnonzero(u)[0]] < 0:
        u = -u
    label = "2" if n == 2 else f"{n}^1"
    return f"{label} |({', '.join(str(int(x)) for x in u)})"


def _positive_sense(rots: list[np.ndarray]) -> list[np.ndarray]:
    """One of each pair R, R^-1 for rotations of order > 2 (the one turning
    counter-clockwise about its axis direction chosen positive), all twofolds, identity."""
    out, seen = [], set()
    for R in sorted(rots, key=lambda m: (_rotation_order(m), _key(m))):
        k = _key(R)
        if k in seen:
            continue
        seen.add(k)
        n = _rotation_order(R)
        if n > 2:
            inv = np.rint(np.linalg.inv(R))
            seen.add(_key(inv))
            u = rotation_axis(R).astype(float)
            if u[np.flatnonzero(u)[0]] < 0:
                u = -u
            # sense: sign of the rotation about u, from a vector not on the axis
            v = np.eye(3)[np.argmin(np.abs(u))]
            if np.linalg.det(np.column_stack([u, v, R @ v])) < 0:
                R = inv
        out.append(R)
    return out


def _iqr_outliers(col: np.ndarray, mult: float = 20.0) -> np.ndarray:
    if not len(col):
        return np.zeros(0, bool)
    q1, q3 = np.percentile(col, [25, 75])
    cut = mult * (q3 - q1)
    return (col > q3 + cut) | (col < q1 - cut)


def _pair_sums(keys_sorted, values, hkl, R) -> CCSums:
    """Correlation sums of (value(h), value(h R)) over h with a partner, h R != h."""
    other = hkl_keys(hkl @ R)
    pos = np.searchsorted(keys_sorted, other)
    pos = np.minimum(pos, len(keys_sorted) - 1)
    found = (keys_sorted[pos] == other) & np.any(hkl @ R != hkl, axis=1)
    x, y = values[found], values[pos[found]]
    bad = _iqr_outliers(x) | _iqr_outliers(y)
    return CCSums.of(x[~bad], y[~bad])


def estimate_cc_sig_fac(hkl, e2, d_star_sq, lattice_rotations, rng) -> tuple[float, CCSums]:
    """CCsigFac from unrelated pairs (reflections of similar resolution that are not
    symmetry equivalents in the lattice group), and the overall CC of those pairs."""
    n = len(e2)
    per_bin = max(200, int(np.ceil(n / 500)))
    order = np.argsort(d_star_sq, kind="stable")
    canon = None
    for R in lattice_rotations:
        for s in (1, -1):
            k = hkl_keys(s * hkl @ R)
            canon = k if canon is None else np.maximum(canon, k)
    a_idx, b_idx = [], []
    for start in range(0, n, per_bin):
        idx = order[start:start + per_bin]
        p = rng.permutation(len(idx))
        m = len(idx) // 2
        a, b = idx[p[:m]], idx[p[m:2 * m]]
        keep = canon[a] != canon[b]
        a_idx.append(a[keep])
        b_idx.append(b[keep])
    a = e2[np.concatenate(a_idx)] if a_idx else np.zeros(0)
    b = e2[np.concatenate(b_idx)] if b_idx else np.zeros(0)
    if len(a) > 20000:
        sel = rng.choice(len(a), 20000, replace=False)
        a, b = a[sel], b[sel]
    unrelated = CCSums.of(a, b)
    n_pairs = len(a)
    max_n = int(min(n_pairs / 10, 200))
    min_n = int(min(5, max_n))
    if max_n - min_n < 4:
        return 0.0, unrelated
    ns = np.arange(min_n, max_n + 1)
    # 200 random groups, each grown one pair at a time: the prefix sums give the CC of
    # every group size N at once (nested groups; each N alone is an unbiased sample)
    idx = rng.integers(0, n_pairs, size=(200, max_n))
    x, y = a[idx], b[idx]
    c = [np.cumsum(v, axis=1)[:, ns - 1] for v in (x, y, x * x, y * y, x * y)]
    sx, sy, sxx, syy, sxy = c
    num = ns * sxy - sx * sy
    den = np.sqrt(np.maximum(ns * sxx - sx ** 2, 0) * np.maximum(ns * syy - sy ** 2, 0))
    cc = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    rms = np.sqrt(np.mean(cc ** 2, axis=0))
    x = 1.0 / np.sqrt(ns)
    slope = np.polyfit(x, rms, 1)[0]
    return float(slope), unrelated


def score_laue_groups(lattice: LatticeSymmetry, hkl: np.ndarray, e2: np.ndarray,
                      sigma: np.ndarray, d_star_sq: np.ndarray, rng) -> LaueGroupResult:
    """Score every element and subgroup from unique (merged) E^2 values in the minimum cell
    (Friedel mates apart)."""
    keys = hkl_keys(hkl)
    order = np.argsort(keys)
    keys_sorted, hkl, e2, sigma, d_star_sq = (keys[order], hkl[order], e2[order],
                                              sigma[order], d_star_sq[order])
    cc_sig_fac, unrelated = estimate_cc_sig_fac(hkl, e2, d_star_sq, lattice.lattice_rotations,
                                                rng)
    # E(CC; S)
    var_i = e2.var(ddof=1) if len(e2) > 1 else 0.0
    e_cc_true = var_i / (var_i + np.mean(sigma ** 2))
    identity = _pair_sums(keys_sorted, e2, hkl, -np.eye(3, dtype=np.int64))
    sigma_1 = max(0.05, cc_sig_fac / 200 ** 0.5)
    w1 = 1 / sigma_1 ** 2 if sigma_1 > 1e-4 else 0.0
    w2 = 0.0
    if identity.n > 10:
        sigma_2 = max(0.05, cc_sig_fac / identity.n ** 0.5)
        w2 = 1 / sigma_2 ** 2
    cc_true = (w1 * e_cc_true + w2 * identity.cc) / (w1 + w2)

    elements = []
    for R in _positive_sense(lattice.lattice_rotations):
        Ri = np.rint(R).astype(np.int64)
        if _rotation_order(R) == 1:
            sums = identity
        else:
            sums = _pair_sums(keys_sorted, e2, hkl, Ri)
            if _rotation_order(R) > 2:
                sums = sums + _pair_sums(keys_sorted, e2, hkl,
                                         np.rint(np.linalg.inv(R)).astype(np.int64))
        el = ElementScore(R=R, name=element_name(R), cc=sums, n_refs=sums.n)
        if el.n_refs > 0:
            el.sigma_cc = max(0.1, cc_sig_fac / el.n_refs ** 0.5)
            el.z_cc = sums.cc / el.sigma_cc
            el.p_cc_given_s = float(trunccauchy_pdf(sums.cc, cc_true, el.sigma_cc))
            el.p_cc_given_not_s = p_cc_given_not_s(sums.cc, el.sigma_cc)
            el.likelihood = el.p_cc_given_s / (el.p_cc_given_s + el.p_cc_given_not_s)
        elements.append(el)

    scores = []
    for sg in lattice.subgroups:
        cc_for, cc_against = CCSums(), CCSums()
        z_for, z_against, n_for, n_against, log_l = 0.0, 0.0, 0, 0, 0.0
        for el in elements:
            inside = _key(el.R) in sg.keys
            if inside:
                cc_for = cc_for + el.cc
            else:
                cc_against = cc_against + el.cc
            if el.n_refs <= 2:
                continue
            if inside:
                z_for += el.z_cc ** 2
                n_for += 1
                log_l += np.log(max(el.p_cc_given_s, 1e-300))
            else:
                z_against += el.z_cc ** 2
                n_against += 1
                log_l += np.log(max(el.p_cc_given_not_s, 1e-300))
        scores.append(SubgroupScore(
            subgroup=sg, likelihood=0.0, log_likelihood=log_l,
            z_cc_for=(z_for / n_for) ** 0.5 if n_for else 0.0,
            z_cc_against=(z_against / n_against) ** 0.5 if n_against else 0.0,
            cc_for=cc_for.cc, cc_against=cc_against.cc))
    logl = np.array([s.log_likelihood for s in scores])
    p = np.exp(logl - logl.max())
    p /= p.sum()
    for s, pi in zip(scores, p):
        s.likelihood = float(pi)
    # most likely first; ties (equal evidence) to the higher symmetry, then smaller delta
    scores.sort(key=lambda s: (-round(s.likelihood, 12), -s.subgroup.order,
                               s.subgroup.delta_deg))
    for s, nxt in zip(scores[:-1], scores[1:]):
        if s.likelihood > 0 and nxt.likelihood > 0:
            lgc = s.likelihood * (s.likelihood - nxt.likelihood)
            s.confidence = float(np.sign(lgc) * abs(lgc) ** 0.5)
    return LaueGroupResult(lattice=lattice, elements=elements, subgroups=scores,
                           cc_sig_fac=cc_sig_fac, e_cc_true=float(e_cc_true),
                           cc_identity=identity.cc, cc_true=float(cc_true),
                           cc_unrelated=unrelated, n_reflections=len(e2))
