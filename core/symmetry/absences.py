"""The space group from systematic absences along screw axes (dials.symmetry, method=direct).

The candidates are the Sohncke space groups (gemmi's tables, every setting) with the
rotations and centring of the chosen lattice-type group (P 4 2 2 -> P 4 2 2, P 4 21 2,
P 41 2 2, P 42 2 2, P 41 21 2, P 42 21 2 and their enantiomorphs). For each axis
a, b, c (axes the Laue group makes equivalent are pooled) gemmi's
``is_systematically_absent`` gives each candidate's repeat along it: the axial
reflections n*e present only when n is a multiple of r (r = 4 for 4_1, 2 for 4_2 or
2_1, 3 for 3_1 or 6_2, 6 for 6_1). Every repeat that some candidate has beyond the
centring's own is one screw-axis test, named as DIALS names it (21a, 41c, 42c,
61c, 62c, 63c, 31c).

Direct scoring of a test (DIALS ``ScrewAxis.score_axis_direct``): on the merged axial
reflections, z_absent = <I/sigma> of those the axis extinguishes and z_present =
<I/sigma> of those it keeps (standard errors taken as 1, the errors being
correlated); with cutoff = Phi^-1(significance_level): significant intensity where
absences are expected gives (1 - P(z_absent)) P(z_present) unless the present ones
are over 20 times stronger (then the strongest "absent" one is tried as an outlier);
otherwise P(z_present) if that is significant, else 0. A candidate's score is the
product over tests of the score (its own repeat), 1 - score (a repeat it does not
have and whose pattern contradicts its own) or nothing (a test it cannot decide).
Candidates with the same absences (enantiomorphs such as P 41 21 2 / P 43 21 2, or
I 2 2 2 / I 21 21 21) score the same: the first in gemmi's table is taken and the
others named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import erf, gcd, sqrt
from statistics import NormalDist

import gemmi
import numpy as np

from gonio.core.symmetry.resolution import canonical_indices

_AXES = "abc"
_MAX_N = 24


def _repeat(sg: gemmi.SpaceGroup, axis: int) -> int:
    ops = sg.operations()
    for r in range(1, _MAX_N + 1):
        h = [0, 0, 0]
        h[axis] = r
        if not ops.is_systematically_absent(h):
            return r
    return _MAX_N


def _axis_order(sg: gemmi.SpaceGroup, axis: int) -> int:
    """Order of the rotation about this lattice row (1 when there is none)."""
    best = 1
    e = np.zeros(3)
    e[axis] = 1
    for op in sg.operations().sym_ops:
        R = np.array(op.rot) / op.DEN
        if np.allclose(R @ e, e) and round(np.linalg.det(R)) == 1:
            n = {3: 1, -1: 2, 0: 3, 1: 4, 2: 6}[int(round(np.trace(R)))]
            best = max(best, n)
    return best


def _axis_classes(sg: gemmi.SpaceGroup) -> list[list[int]]:
    """Axes a, b, c grouped when a rotation of ``sg`` maps one row h00/0k0/00l onto another."""
    classes: list[list[int]] = []
    rots = [np.array(op.rot) // op.DEN for op in sg.operations().sym_ops]
    for i in range(3):
        e = np.zeros(3, int)
        e[i] = 1
        images = {tuple(np.abs(e @ R)) for R in rots}
        for cls in classes:
            f = np.zeros(3, int)
            f[cls[0]] = 1
            if tuple(f) in images:
                cls.append(i)
                break
        else:
            classes.append([i])
    return classes


@dataclass
class ScrewAxisTest:
    name: str  # e.g. "41c"
    axes: list[int]
    repeat: int
    score: float = 0.0
    n_present: int = 0
    n_absent: int = 0
    mean_i: float = 0.0
    mean_i_abs: float = 0.0
    mean_i_sigma: float = 0.0
    mean_i_sigma_abs: float = 0.0
    note: str = ""


@dataclass
class AbsencesResult:
    laue_group: str
    tests: list[ScrewAxisTest]
    candidates: list[tuple[gemmi.SpaceGroup, float]]
    best: gemmi.SpaceGroup
    equivalent: list[gemmi.SpaceGroup] = field(default_factory=list)  # same absences as best
    enantiomorphic: bool = False
    lines: list[str] = field(default_factory=list)


def candidate_space_groups(acentric: gemmi.SpaceGroup) -> list[gemmi.SpaceGroup]:
    """Sohncke groups with the rotations and centring of ``acentric`` in its setting."""
    ref = acentric.operations()
    out, seen = [], set()
    for sg in gemmi.spacegroup_table():
        if not sg.is_sohncke() or any(sg.basisop.tran):
            continue  # origin-shifted duplicates (P 21212(a), I 2 3a ...) have the same absences
        ops = sg.operations()
        if not (ops.has_same_rotations(ref) and ops.has_same_centring(ref)):
            continue
        key = tuple(sorted(op.triplet() for op in ops))
        if key not in seen:
            seen.add(key)
            out.append(sg)
    return out


def score_axis_direct(test: ScrewAxisTest, values: np.ndarray, i_over_sigma: np.ndarray,
                      intensity: np.ndarray, significance_level: float) -> float:
    expected = values % test.repeat == 0
    pres, absn = i_over_sigma[expected], i_over_sigma[~expected]
    test.n_present, test.n_absent = int(len(pres)), int(len(absn))
    if not len(pres) or not len(absn):
        which = "absent" if not len(absn) else "present"
        test.note = (f"no reflection of the axis that it would leave {which} was measured: the "
                     "data cannot tell whether this screw axis is there (scored 0, as DIALS)")
        return 0.0
    test.mean_i_sigma, test.mean_i_sigma_abs = float(pres.mean()), float(absn.mean())
    test.mean_i, test.mean_i_abs = float(intensity[expected].mean()), float(
        intensity[~expected].mean())
    z_abs, z_pres = test.mean_i_sigma_abs, test.mean_i_sigma
    p_abs = 0.5 * (1 + erf(z_abs / sqrt(2)))
    p_pres = 0.5 * (1 + erf(z_pres / sqrt(2)))
    cutoff = NormalDist().inv_cdf(significance_level)
    strong_present = z_pres > 20.0 * z_abs
    if z_abs > cutoff and not strong_present:
        return (1 - p_abs) * p_pres
    if z_abs > cutoff:
        if len(absn) <= 1:
            test.note = "assigned after removing a suspected outlier among the absences"
            return p_pres
        order = np.argsort(absn)
        trimmed = absn[order][:-1]
        if trimmed.mean() > cutoff:
            test.note = ("significant intensity where absences are expected, but most is in "
                         "the allowed reflections: weak reflections from pseudo-symmetry?")
            return (1 - p_abs) * p_pres
        test.mean_i_sigma_abs = float(trimmed.mean())
        test.mean_i_abs = float(intensity[~expected][order][:-1].mean())
        if z_pres > cutoff:
            test.note = "assigned after removing a suspected outlier among the absences"
            return p_pres
    elif z_pres > cutoff:
        return p_pres
    test.note = "no evidence for a screw axis, but too little data to rule it out"
    return 0.0


def merge(hkl, intensity, sigma, space_group):
    """Inverse-variance weighted mean per unique reflection (Friedel mates merged)."""
    keys, reps = canonical_indices(hkl, space_group)
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    w = 1.0 / sigma ** 2
    sw = np.bincount(inv, weights=w)
    return reps[first], np.bincount(inv, weights=w * intensity) / sw, 1 / np.sqrt(sw)


def check_absences(hkl: np.ndarray, intensity: np.ndarray, sigma: np.ndarray,
                   patterson: gemmi.SpaceGroup, acentric: gemmi.SpaceGroup,
                   significance_level: float = 0.95) -> AbsencesResult:
    """Screw-axis tests and the space group for data indexed in ``acentric``'s setting."""
    candidates = candidate_space_groups(acentric)
    laue = patterson.xhm()
    classes = _axis_classes(acentric)
    repeats = {sg.xhm(): [_repeat(sg, cls[0]) for cls in classes] for sg in candidates}
    base = [_repeat(acentric, cls[0]) for cls in classes]
    tests: list[tuple[int, ScrewAxisTest]] = []
    for ci, cls in enumerate(classes):
        rs = sorted({repeats[sg.xhm()][ci] for sg in candidates} - {base[ci]}, reverse=True)
        n = _axis_order(acentric, cls[0])
        for r in rs:
            m = n // r if n % r == 0 else n // gcd(n, r)
            tests.append((ci, ScrewAxisTest(f"{n}{m}{_AXES[cls[0]]}", cls, r)))
    lines = [f"Laue group: {laue}"]
    if not tests:
        lines.append("No screw axes to check for this Laue group.")
        best = candidates[0] if candidates else acentric
        same = [sg for sg in candidates[1:]]
        return AbsencesResult(laue, [], [(sg, 1.0) for sg in candidates] or [(best, 1.0)],
                              best, same, False, lines)
    axial = np.count_nonzero(hkl, axis=1) == 1  # only axial reflections are tested
    mh, mi, ms = merge(hkl[axial], intensity[axial], sigma[axial], acentric)
    for _, t in tests:
        vals, isig, ints = [], [], []
        for ax in t.axes:
            others = [j for j in range(3) if j != ax]
            sel = (mh[:, others[0]] == 0) & (mh[:, others[1]] == 0) & (mh[:, ax] != 0)
            vals.append(np.abs(mh[sel, ax]))
            isig.append(mi[sel] / ms[sel])
            ints.append(mi[sel])
        t.score = score_axis_direct(t, np.concatenate(vals), np.concatenate(isig),
                                    np.concatenate(ints), significance_level)
    scored = []
    for sg in candidates:
        s = 1.0
        for ci, t in tests:
            r = repeats[sg.xhm()][ci]
            if r == t.repeat:
                s *= t.score
            elif t.repeat % r == 0:
                s *= 1.0 - t.score
        scored.append((sg, s))
    best_score = max(s for _, s in scored)
    best = next(sg for sg, s in scored if s == best_score)
    same = [sg for sg, _ in scored if sg is not best
            and repeats[sg.xhm()] == repeats[best.xhm()]]
    enantio = bool(same) and best.is_enantiomorphic() and all(sg.is_enantiomorphic()
                                                              for sg in same)
    return AbsencesResult(laue, [t for _, t in tests], scored, best, same, enantio, lines)
