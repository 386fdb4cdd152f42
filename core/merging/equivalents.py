"""Symmetry-equivalent reflections: the reciprocal asymmetric unit, groups and weighted means.

Miller indices are mapped to the reciprocal-space ASU of gemmi (the CCP4
convention) for all reflections at once: every reflection is transformed by
every rotation of the point group, and by the same with -hkl (Friedel), and
the first image inside the ASU wins, in gemmi's order, so that ``isym``
follows the MTZ convention (``2*op + 1`` for an image of hkl, ``2*op + 2``
for an image of -hkl), exactly as ``gemmi.ReciprocalAsu.to_asu``.

Merging follows dials.merge (cctbx ``merge_equivalents`` with
``use_internal_variance=False``): the inverse-variance weighted mean
``<I> = sum(w I) / sum(w)`` with ``w = 1/sigma^2`` and ``sigma(<I>) =
1/sqrt(sum(w))``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

import gemmi
import numpy as np


def as_space_group(space_group) -> gemmi.SpaceGroup:
    """A gemmi.SpaceGroup from a gemmi.SpaceGroup, a symbol (\"P 21 21 21\") or a number."""
    if isinstance(space_group, gemmi.SpaceGroup):
        return space_group
    if isinstance(space_group, (int, np.integer)):
        return gemmi.find_spacegroup_by_number(int(space_group))
    sg = gemmi.find_spacegroup_by_name(str(space_group))
    if sg is None:
        raise ValueError(f"unknown space group {space_group!r}")
    return sg


def _asu_condition(condition: str):
    """A vectorised predicate f(h, k, l) -> bool array from gemmi's ASU condition string."""
    tree = ast.parse(condition.replace(">=", "≥").replace("<=", "≤").replace("=", "==")
                     .replace("≥", ">=").replace("≤", "<="), mode="eval")
    ops = {ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less,
           ast.LtE: np.less_equal, ast.Eq: np.equal}

    def ev(node, env):
        if isinstance(node, ast.Expression):
            return ev(node.body, env)
        if isinstance(node, ast.BoolOp):
            parts = [ev(v, env) for v in node.values]
            red = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return red.reduce(parts)
        if isinstance(node, ast.Compare):
            out, left = None, ev(node.left, env)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp, env)
                r = ops[type(op)](left, right)
                out = r if out is None else out & r
                left = right
            return out
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand, env)
        raise ValueError(f"unexpected ASU condition {condition!r}")

    return lambda h, k, l: ev(tree, {"h": h, "k": k, "l": l})  # noqa: E741


@lru_cache(maxsize=64)
def _rotations_and_condition(xhm: str):
    sg = gemmi.SpaceGroup(xhm)
    rots = np.array([op.rot for op in sg.operations().sym_ops], dtype=np.int64) // gemmi.Op.DEN
    return rots, _asu_condition(gemmi.ReciprocalAsu(sg).condition_str())


@dataclass
class AsuMapping:
    """Miller indices mapped into the reciprocal ASU.

    ``hkl_asu`` (N, 3) int32; ``isym`` (N,) the MTZ ISYM (odd: image of hkl,
    even: image of -hkl); ``friedel_minus`` (N,) True where the observation
    is the I(-) mate of its ASU reflection (isym even and the reflection
    acentric); ``centric`` (N,) bool.
    """

    hkl_asu: np.ndarray
    isym: np.ndarray
    friedel_minus: np.ndarray
    centric: np.ndarray


def map_to_asu(hkl, space_group) -> AsuMapping:
    """Map (N, 3) Miller indices to the ASU of ``space_group`` (gemmi's ASU and ISYM)."""
    sg = as_space_group(space_group)
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    rots, inside = _rotations_and_condition(sg.xhm())
    n = len(hkl)
    out = np.zeros((n, 3), dtype=np.int64)
    isym = np.zeros(n, dtype=np.int32)
    todo = np.ones(n, dtype=bool)
    for i, r in enumerate(rots):
        img = hkl @ r  # gemmi: (hkl as row vector) times the rotation
        for sign, code in ((1, 2 * i + 1), (-1, 2 * i + 2)):
            cand = sign * img
            ok = todo & inside(cand[:, 0], cand[:, 1], cand[:, 2])
            out[ok] = cand[ok]
            isym[ok] = code
            todo &= ~ok
        if not todo.any():
            break
    centric = sg.operations().centric_flag_array(hkl.astype(np.int32)).astype(bool) if n else \
        np.zeros(0, bool)
    minus = (isym % 2 == 0) & ~centric
    return AsuMapping(out.astype(np.int32), isym, minus, centric)


@dataclass
class EquivalentGroups:
    """Observations grouped by unique reflection.

    ``hkl`` (M, 3) the unique ASU indices (sorted), ``minus`` (M,) True for
    I(-) groups (anomalous grouping only), ``group`` (N,) the group of each
    observation, ``count`` (M,) observations per group.
    """

    hkl: np.ndarray
    minus: np.ndarray
    group: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.hkl)

    def sum(self, values) -> np.ndarray:
        """Per-group sums of per-observation ``values`` (N,) -> (M,)."""
        return np.bincount(self.group, weights=values, minlength=len(self.hkl))


def group_equivalents(hkl_asu, friedel_minus=None) -> EquivalentGroups:
    """Group ASU indices (and, when ``friedel_minus`` is given, the Friedel mates apart)."""
    hkl_asu = np.asarray(hkl_asu, dtype=np.int64).reshape(-1, 3)
    minus = np.zeros(len(hkl_asu), bool) if friedel_minus is None else np.asarray(friedel_minus)
    # one sortable int64 key per observation: 20 bits per index (|h| < 2^19), 1 for the mate
    off = 1 << 19
    if len(hkl_asu) and np.abs(hkl_asu).max() >= off:
        raise ValueError("Miller index beyond +-524287")
    h = hkl_asu + off
    key = (((h[:, 0] << 20) | h[:, 1]) << 20 | h[:, 2]) << 1 | minus.astype(np.int64)
    ukey, group, count = np.unique(key, return_inverse=True, return_counts=True)
    mask = (1 << 20) - 1
    uniq = np.column_stack([(ukey >> 41) & mask, (ukey >> 21) & mask, (ukey >> 1) & mask]) - off
    return EquivalentGroups(uniq.astype(np.int32), (ukey & 1).astype(bool),
                            group.reshape(-1).astype(np.int64), count)


def weighted_means(groups: EquivalentGroups, intensity, sigma):
    """Inverse-variance weighted mean and its sigma per group (M,) each."""
    w = 1.0 / np.asarray(sigma, float) ** 2
    sw = groups.sum(w)
    mean = groups.sum(w * intensity) / sw
    return mean, 1.0 / np.sqrt(sw)


@dataclass
class MergedIntensities:
    """Merged intensities of unique reflections (dials.merge: weighted means).

    ``miller_index`` (M, 3) ASU indices; ``intensity``, ``sigma``,
    ``multiplicity`` over all observations of the reflection. For anomalous
    merging, ``i_plus``/``sigma_plus``/``n_plus`` and ``i_minus``/...
    for the two Friedel mates (NaN and 0 where absent; centric reflections
    have everything in I(+)); ``centric`` (M,) bool. ``space_group`` is the
    gemmi space group the indices refer to.
    """

    miller_index: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    multiplicity: np.ndarray
    centric: np.ndarray
    space_group: gemmi.SpaceGroup
    anomalous: bool = False
    i_plus: np.ndarray | None = None
    sigma_plus: np.ndarray | None = None
    n_plus: np.ndarray | None = None
    i_minus: np.ndarray | None = None
    sigma_minus: np.ndarray | None = None
    n_minus: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.miller_index)


def merge_equivalents(hkl, intensity, sigma, space_group, anomalous: bool = False) -> MergedIntensities:
    """Merge observations (N,) of ``hkl`` (N, 3) into unique reflections of ``space_group``.

    Observations need sigma > 0 (others are ignored). With ``anomalous``,
    I(+) and I(-) are also merged separately.
    """
    hkl = np.asarray(hkl).reshape(-1, 3)
    intensity = np.asarray(intensity, float)
    sigma = np.asarray(sigma, float)
    ok = np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0)
    hkl, intensity, sigma = hkl[ok], intensity[ok], sigma[ok]
    sg = as_space_group(space_group)
    m = map_to_asu(hkl, sg)
    g = group_equivalents(m.hkl_asu)
    mean, sig = weighted_means(g, intensity, sigma)
    centric = np.zeros(len(g), bool)
    centric[g.group] = m.centric
    out = MergedIntensities(g.hkl, mean, sig, g.count, centric, sg, anomalous)
    if anomalous:
        ga = group_equivalents(m.hkl_asu, m.friedel_minus)
        amean, asig = weighted_means(ga, intensity, sigma)
        # each anomalous group belongs to one unique reflection
        parent = np.empty(len(ga), np.int64)
        parent[ga.group] = g.group
        for name, sel in (("plus", ~ga.minus), ("minus", ga.minus)):
            i = np.full(len(g), np.nan)
            s = np.full(len(g), np.nan)
            n = np.zeros(len(g), np.int64)
            i[parent[sel]] = amean[sel]
            s[parent[sel]] = asig[sel]
            n[parent[sel]] = ga.count[sel]
            setattr(out, f"i_{name}", i)
            setattr(out, f"sigma_{name}", s)
            setattr(out, f"n_{name}", n)
    return out
