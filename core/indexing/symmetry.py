"""Known symmetry: the setting of a found lattice that matches a target.

Given a found basis (rows a, b, c) and a target space group (and
optionally a target cell), every right-handed unimodular transform M with
entries in {-1, 0, 1} of the Niggli-reduced basis is combined with the
integer matrix T from a primitive to the target's conventional (centred)
basis: conventional = T M reduced. With a target cell the transform whose
cell is closest to it (within the relative length / absolute angle
tolerances of dials.index) is chosen; with only a space group, the one
whose metric deviates least from the symmetry of the group's lattice.
"""

from __future__ import annotations

from itertools import product

import gemmi
import numpy as np

from ..errors import GonioError
from ..lattice.change_of_basis import cell_parameters_from_metric
from .basis import niggli_reduce

_UNIMODULAR = None


def _unimodular() -> np.ndarray:
    global _UNIMODULAR
    if _UNIMODULAR is None:
        m = np.array(list(product((-1, 0, 1), repeat=9)), dtype=float).reshape(-1, 3, 3)
        _UNIMODULAR = m[np.abs(np.linalg.det(m) - 1.0) < 1e-6]
    return _UNIMODULAR


def primitive_to_conventional(space_group: gemmi.SpaceGroup) -> np.ndarray:
    """Integer T (3, 3), det = number of lattice points per cell: conventional = T primitive."""
    op = space_group.centred_to_primitive()
    R = np.array(op.rot, dtype=float) / op.DEN
    cen = [np.array(t, dtype=float) / op.DEN for t in space_group.operations().cen_ops]
    for Q in (R, R.T, np.linalg.inv(R), np.linalg.inv(R).T):
        if np.linalg.det(Q) < 0:
            Q = -Q
        T = np.linalg.inv(Q)
        if np.abs(T - np.rint(T)).max() > 1e-6:
            continue
        # every centring translation must be a lattice vector of the primitive basis
        if all(np.abs(t @ T - np.rint(t @ T)).max() < 1e-6 for t in cen):
            return np.rint(T)
    raise GonioError(f"gonio cannot find the primitive cell of {space_group.hm}.")  # pragma: no cover


def symmetry_deviation(G: np.ndarray, space_group: gemmi.SpaceGroup) -> np.ndarray:
    """Largest change of a cell length (relative) or angle (deg/100) under the group's ops."""
    W = np.array([np.array(op.rot) // op.DEN for op in space_group.operations().sym_ops], float)
    Gs = np.mean(np.einsum("wji,njk,wkl->nwil", W, G, W), axis=1)
    p, ps = cell_parameters_from_metric(G), cell_parameters_from_metric(Gs)
    rel = np.abs(p[..., :3] - ps[..., :3]) / p[..., :3]
    ang = np.abs(p[..., 3:] - ps[..., 3:])
    return np.maximum(rel.max(axis=-1), ang.max(axis=-1) / 100.0)


def find_setting(real: np.ndarray, space_group: gemmi.SpaceGroup,
                 unit_cell: gemmi.UnitCell | None = None, relative_length_tolerance: float = 0.1,
                 absolute_angle_tolerance: float = 5.0, max_symmetry_deviation: float = 0.03):
    """Conventional basis (rows a, b, c) of the found lattice in the target setting, or None."""
    reduced = niggli_reduce(real)
    T = primitive_to_conventional(space_group)
    M = np.einsum("ij,njk->nik", T, _unimodular())  # (n, 3, 3)
    conv = M @ reduced
    G = conv @ np.transpose(conv, (0, 2, 1))
    par = cell_parameters_from_metric(G)
    if unit_cell is not None:
        tgt = np.array(unit_cell.parameters)
        rel = np.abs(par[:, :3] - tgt[:3]) / tgt[:3]
        ang = np.abs(par[:, 3:] - tgt[3:])
        ok = (rel.max(axis=1) <= relative_length_tolerance) & \
             (ang.max(axis=1) <= absolute_angle_tolerance)
        score = rel.max(axis=1) + ang.max(axis=1) / 100.0
    else:
        score = symmetry_deviation(G, space_group)
        ok = score <= max_symmetry_deviation
    if not ok.any():
        return None
    best = np.flatnonzero(ok)[np.argmin(score[ok])]
    return conv[best]
