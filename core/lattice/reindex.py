"""Reindexing: apply a change of basis (and/or a space group) to crystals and reflections.

With ``P`` the matrix whose columns are the new basis vectors in the old basis
(:mod:`gonio.core.lattice.change_of_basis`), reindexing is exactly

* Miller indices ``h' = h P`` (cctbx ``change_of_basis_op.apply``),
* crystal setting matrix ``A' = A P^-T`` (also for scan-varying ``A``),
* space group transformed to the new basis (gemmi ``GroupOps.change_basis_forward``),

so every reciprocal-lattice point ``r = A h = A' h'`` and hence every prediction
stays where it was. ``reindex_to_reference`` finds the operator that brings a data
set onto the indexing of a reference, as DIALS ``dials.reindex reference=...``:
by comparing the crystal orientations (same crystal, consistent goniometer), and
with a reference reflection table by the correlation of intensities over the
reference lattice's indexing-ambiguity operators.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import gemmi
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.lattice.bravais import _closure, _key, le_page_delta, niggli_reduce
from gonio.core.lattice.change_of_basis import (
    ChangeOfBasisError,
    change_of_basis_string,
    check_change_of_basis,
    metric_tensor,
    parse_change_of_basis,
    transform_miller_indices,
    transform_space_group,
)
from gonio.core.models.crystal import Crystal
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable


class ReindexError(GonioError):
    """Reindexing cannot be done as asked."""


def _as_matrix(op) -> np.ndarray:
    if isinstance(op, str):
        return parse_change_of_basis(op)
    P = np.asarray(op, dtype=float).reshape(3, 3)
    check_change_of_basis(P)
    return P


def _as_space_group(sg) -> gemmi.SpaceGroup:
    if isinstance(sg, gemmi.SpaceGroup):
        return sg
    try:
        return gemmi.SpaceGroup(str(sg))
    except (ValueError, RuntimeError):
        raise ReindexError(f"space_group={sg!r} is not a space group gonio knows. Give a "
                           "Hermann-Mauguin symbol or number, e.g. space_group=P4 or "
                           "space_group=C2.") from None


def crystal_change_basis(crystal: Crystal, P: np.ndarray) -> Crystal:
    """The same crystal described in the basis ``[a b c] P`` (``A' = A P^-T``)."""
    M = np.linalg.inv(P).T
    asp = None if crystal.A_at_scan_points is None else crystal.A_at_scan_points @ M
    sg = crystal.space_group
    if sg.number != 1 and not np.allclose(P, np.eye(3)):
        sg = transform_space_group(sg, P)
    return Crystal(A=crystal.A @ M, space_group=sg, A_at_scan_points=asp,
                   extra=copy.deepcopy(crystal.extra))


def _check_cell_symmetry(crystal: Crystal, sg: gemmi.SpaceGroup, tol: float = 0.05) -> None:
    """The cell must be compatible (within ``tol`` relative in the metric) with ``sg``."""
    G = metric_tensor(crystal.unit_cell)
    scale = np.sqrt(np.outer(np.diag(G), np.diag(G)))
    for op in sg.operations().sym_ops:
        R = np.array(op.rot, dtype=float) / op.DEN
        dev = np.abs(R.T @ G @ R - G) / scale
        if dev.max() > tol:
            p = crystal.unit_cell.parameters
            raise ReindexError(
                f"The cell {' '.join(f'{x:.2f}' for x in p)} does not have the metric symmetry "
                f"of {sg.xhm()} in this setting (operator {op.triplet()} changes it by "
                f"{100 * dev.max():.0f}%). Reindex to the setting rbs gives for that lattice "
                "(reindex solution=N, or its cb_op) before setting the space group.")


def _check_centring(hkl: np.ndarray, sg: gemmi.SpaceGroup) -> None:
    cen = np.array(sg.operations().cen_ops, dtype=float) / gemmi.Op.DEN
    if len(cen) <= 1 or not len(hkl):
        return
    phase = (hkl.astype(float) @ cen.T) % 1.0
    absent = np.any((phase > 1e-6) & (phase < 1 - 1e-6), axis=1)
    frac = absent.mean()
    if frac > 0.05:
        raise ReindexError(
            f"{100 * frac:.0f}% of the indexed reflections are forbidden by the "
            f"{sg.centring_type()} centring of {sg.xhm()}: the indices do not describe a "
            f"{sg.centring_type()}-centred lattice in this setting. Reindex with the cb_op of "
            "the matching rbs solution first (reindex solution=N).")


def reindex(experiments: ExperimentList, reflections: ReflectionTable | None,
            change_of_basis_op=None, space_group=None):
    """Apply ``change_of_basis_op`` (string like ``a-2*b,a,c`` or a matrix ``P``) and/or
    set ``space_group`` on every crystal and on the Miller indices.

    Returns new (experiments, reflections); the inputs are not modified. Raises
    :class:`ReindexError` / :class:`ChangeOfBasisError` for an operator that is not a
    change of basis, would give fractional indices, or a space group incompatible
    with the cell or the indices.
    """
    if change_of_basis_op is None and space_group is None:
        raise ReindexError("Nothing to do: give change_of_basis_op=..., space_group=... or "
                           "solution=N.")
    if not any(e.crystal is not None for e in experiments):
        raise ReindexError("There is no crystal model to reindex: run index first.")
    P = np.eye(3) if change_of_basis_op is None else _as_matrix(change_of_basis_op)
    sg = None if space_group is None else _as_space_group(space_group)

    new_refl = None
    if reflections is not None:  # a new table: the Miller indices new, the other columns shared
        new_refl = ReflectionTable(dict(reflections.items()), reflections.experiment_identifiers)
        if "miller_index" in new_refl:
            hkl = np.asarray(new_refl["miller_index"])
            indexed = np.any(hkl != 0, axis=1)
            out = np.zeros_like(hkl, dtype=np.int32)
            out[indexed] = transform_miller_indices(hkl[indexed], P, "indexed reflections")
            new_refl["miller_index"] = out
            if sg is not None:
                _check_centring(out[indexed], sg)

    new_expts = ExperimentList()
    done: dict[int, Crystal] = {}
    for e in experiments:
        e2 = e.replace()
        if e.crystal is not None:
            if id(e.crystal) not in done:
                try:
                    c = crystal_change_basis(e.crystal, P)
                except ChangeOfBasisError:
                    if sg is None:
                        raise
                    c = crystal_change_basis(e.crystal.replace(space_group=gemmi.SpaceGroup("P 1")), P)
                if sg is not None:
                    _check_cell_symmetry(c, sg)
                    c = c.replace(space_group=sg)
                done[id(e.crystal)] = c
            e2.crystal = done[id(e.crystal)]
        new_expts.append(e2)
    return new_expts, new_refl


# -- reindexing onto a reference ------------------------------------------------------------

@dataclass
class ReferenceMatch:
    """How a data set was brought onto a reference's indexing."""

    cb_op: str
    P: np.ndarray
    method: str  # "orientation" or "intensity"
    candidates: list[dict] = field(default_factory=list)  # cb_op, cc, n_pairs per ambiguity op


def _canonical_keys(hkl: np.ndarray, sg: gemmi.SpaceGroup) -> np.ndarray:
    """One key per symmetry-equivalence class (point group of ``sg`` plus Friedel)."""
    h = np.asarray(hkl, dtype=np.int64)
    best = None
    for op in sg.operations().sym_ops:
        R = np.array(op.rot, dtype=np.int64) // op.DEN
        for s in (1, -1):
            k = s * h @ R + 1024
            key = (k[:, 0] << 22) | (k[:, 1] << 11) | k[:, 2]
            best = key if best is None else np.maximum(best, key)
    return best


def _merged(keys, values):
    u, inv = np.unique(keys, return_inverse=True)
    return u, np.bincount(inv, weights=values) / np.bincount(inv)


def _intensity_cc(h_data, i_data, h_ref, i_ref, sg) -> tuple[float, int]:
    kd, vd = _merged(_canonical_keys(h_data, sg), i_data)
    kr, vr = _merged(_canonical_keys(h_ref, sg), i_ref)
    common, a, b = np.intersect1d(kd, kr, return_indices=True)
    if len(common) < 3:
        return float("nan"), len(common)
    return float(np.corrcoef(vd[a], vr[b])[0, 1]), len(common)


def _lattice_rotations(cell: gemmi.UnitCell, max_delta: float) -> list[np.ndarray]:
    """Rotations of the lattice point group of ``cell`` (within max_delta), in its basis."""
    red, P_min = niggli_reduce(cell)
    G = metric_tensor(red)
    twofolds = [np.array(op.rot, float) / op.DEN
                for op, _ in gemmi.find_lattice_2fold_ops(red, max_delta)]
    twofolds = [R for R in twofolds if le_page_delta(R, G) <= max_delta + 1e-9]
    group = _closure(twofolds) if twofolds else None
    if group is None:  # no twofolds, or approximate ones that form no group together
        group = {_key(np.eye(3)): np.eye(3)}
    Pi = np.linalg.inv(P_min)
    return [np.rint(P_min @ R @ Pi) for R in group.values()]


def _single_crystal(experiments: ExperimentList, what: str) -> Crystal:
    crystals = {id(e.crystal): e.crystal for e in experiments if e.crystal is not None}
    if not crystals:
        raise ReindexError(f"The {what} has no crystal model: index it first.")
    if len(crystals) > 1:
        raise ReindexError(f"The {what} has {len(crystals)} crystals; reindexing onto a "
                           "reference needs a single lattice on each side.")
    return next(iter(crystals.values()))


def reindex_to_reference(experiments: ExperimentList, reflections: ReflectionTable | None,
                         reference_experiments: ExperimentList,
                         reference_reflections: ReflectionTable | None = None,
                         max_delta: float = 5.0):
    """Reindex a data set onto the indexing of a reference.

    Without reference reflections the operator is ``P = round(R^-T R_ref^T)`` from the
    real-space bases R (rows a, b, c) of the two crystals: right when both describe
    the same crystal with consistent goniometer settings. With reference reflections,
    the cell is matched through the Niggli cells and the choice among the reference
    lattice's symmetry operators (the indexing ambiguity) is the one whose reindexed
    intensities correlate best with the reference's (both merged in the reference
    point group). The reference space group is set on the result.

    Returns (experiments, reflections, ReferenceMatch).
    """
    crystal = _single_crystal(experiments, "data set")
    ref = _single_crystal(reference_experiments, "reference")
    ref_sg = ref.space_group
    candidates = []
    if reference_reflections is None:
        R, Rr = crystal.real_space_vectors, ref.real_space_vectors
        Pf = np.linalg.inv(R).T @ Rr.T
        P = np.rint(Pf)
        if np.abs(Pf - P).max() > 0.25 or abs(np.linalg.det(P)) < 0.5:
            raise ReindexError(
                "The crystal orientation does not match the reference's (the bases differ by "
                f"a non-integral matrix, largest deviation {np.abs(Pf - P).max():.2f}): the data "
                "sets were not collected on the same crystal mount, or the cells differ. Give "
                "reference_reflections= to match by intensities instead.")
        method = "orientation"
    else:
        if reflections is None or "intensity.sum.value" not in reflections:
            raise ReindexError("Matching by intensities needs the data set's reflections with "
                               "intensity.sum.value (integrate first).")
        if "intensity.sum.value" not in reference_reflections:
            raise ReindexError("The reference reflections have no intensity.sum.value column.")
        red_d, P_d = niggli_reduce(crystal.unit_cell)
        red_r, P_r = niggli_reduce(ref.unit_cell)
        if not red_d.is_similar(red_r, 0.05, 3.0):
            raise ReindexError(
                f"The cells differ: reduced cell {' '.join(f'{x:.2f}' for x in red_d.parameters)}"
                f" vs reference {' '.join(f'{x:.2f}' for x in red_r.parameters)}. Reindexing "
                "onto a reference needs the same lattice.")
        P0 = P_d @ np.linalg.inv(P_r)
        rots = _lattice_rotations(ref.unit_cell, max_delta)
        hkl = np.asarray(reflections["miller_index"])
        sel = np.any(hkl != 0, axis=1)
        rh = np.asarray(reference_reflections["miller_index"])
        rsel = np.any(rh != 0, axis=1)
        seen, best = set(), None
        for Rm in rots:
            P = P0 @ Rm
            key = frozenset(_key(Rm @ (np.array(op.rot) / op.DEN))
                            for op in ref_sg.operations().sym_ops)
            if key in seen:
                continue  # equivalent under the reference point group
            seen.add(key)
            h_new = np.rint(hkl[sel] @ P).astype(np.int64)
            cc, n = _intensity_cc(h_new, reflections["intensity.sum.value"][sel],
                                  rh[rsel], reference_reflections["intensity.sum.value"][rsel],
                                  ref_sg)
            candidates.append({"cb_op": change_of_basis_string(P), "cc": cc, "n_pairs": n})
            if np.isfinite(cc) and (best is None or cc > best[0]):
                best = (cc, P)
        if best is None:
            raise ReindexError("Too few reflections in common with the reference to compare "
                               "intensities; check that both data sets cover the same lattice.")
        P = best[1]
        method = "intensity"
    new_expts, new_refl = reindex(experiments, reflections, P)
    for e in new_expts:
        if e.crystal is not None:
            e.crystal = e.crystal.replace(space_group=ref_sg)
    return new_expts, new_refl, ReferenceMatch(change_of_basis_string(P), P, method, candidates)
