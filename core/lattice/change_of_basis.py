"""Change of basis between lattice settings, as matrices and as cctbx-style strings.

gonio represents a change of basis by the 3x3 matrix ``P`` whose columns are
the new basis vectors written in the old basis::

    [a' b' c'] = [a b c] P

With this single matrix (the "P" of International Tables Vol. A, section 5.1):

* fractional coordinates: ``x' = P^-1 x`` (``P^-1`` is cctbx's ``cb_op.c()``),
* Miller indices (rows): ``h' = h P`` (what cctbx's ``cb_op.apply(miller)`` does),
* metric tensor: ``G' = P^T G P``,
* crystal setting matrix: ``A' = A P^-T``, so that ``r = A h = A' h'`` and
  predictions do not move.

Operators are written as DIALS prints them, the new basis vectors in terms of
the old ones (``a+b,-a+b,c``); the coordinate form (``x+y,-x+y,z``, the
transformation of fractional coordinates, as in cctbx) is accepted on input.
Parsing and formatting go through :class:`gemmi.Op`.
"""

from __future__ import annotations

import re
from fractions import Fraction

import gemmi
import numpy as np

from gonio.core.errors import GonioError


class ChangeOfBasisError(GonioError):
    """A change-of-basis operator that cannot be used."""


def _op_rot(op: gemmi.Op) -> np.ndarray:
    return np.array(op.rot, dtype=float) / op.DEN


def parse_change_of_basis(text: str) -> np.ndarray:
    """Matrix ``P`` (new basis vectors as columns, old basis) from an operator string.

    ``"a-2*b,a,c"`` (basis vectors, as DIALS prints and takes them) or
    ``"x-2*y,x,z"`` (transformation of fractional coordinates, cctbx's ``c()``).
    Raises :class:`ChangeOfBasisError` for a malformed, singular or
    left-handed operator, or one with an origin shift.
    """
    s = str(text).strip().replace(" ", "")
    letters = set(re.findall(r"[a-zA-Z]", s))
    if not s or not letters:
        raise ChangeOfBasisError(
            f"change_of_basis_op={text!r} is not an operator: write the new basis vectors "
            "in terms of the old ones, e.g. change_of_basis_op=a+b,-a+b,c (or the coordinate "
            "form x+y,-x+y,z).")
    lower = {c.lower() for c in letters}
    if lower <= {"a", "b", "c"}:
        abc = True
    elif lower <= {"x", "y", "z"}:
        abc = False
    else:
        raise ChangeOfBasisError(
            f"change_of_basis_op={text!r} mixes or uses unknown symbols {sorted(letters)}: "
            "use a, b, c for basis vectors (e.g. -b,a,c) or x, y, z for coordinates.")
    try:
        op = gemmi.Op(s.lower())
    except Exception as exc:  # gemmi raises RuntimeError/ValueError with its own text
        raise ChangeOfBasisError(
            f"change_of_basis_op={text!r} could not be read ({exc}). Write three "
            "comma-separated expressions, e.g. a+b,-a+b,c.") from None
    if any(t != 0 for t in op.tran):
        raise ChangeOfBasisError(
            f"change_of_basis_op={text!r} has an origin shift; reindexing Miller indices "
            "only uses the rotation part, so give the operator without translations.")
    rot = _op_rot(op)
    P = rot.T if abc else _safe_inv(rot, text)
    check_change_of_basis(P, text)
    return P


def _safe_inv(m: np.ndarray, text) -> np.ndarray:
    if abs(np.linalg.det(m)) < 1e-9:
        raise ChangeOfBasisError(
            f"change_of_basis_op={text!r} is singular (determinant 0): its three new axes "
            "are coplanar, so it is not a change of basis. Check the operator.")
    return np.linalg.inv(m)


def check_change_of_basis(P: np.ndarray, text=None) -> None:
    """Raise :class:`ChangeOfBasisError` unless ``P`` is invertible and right-handed."""
    name = text if text is not None else change_of_basis_string(P)
    det = float(np.linalg.det(P))
    if abs(det) < 1e-9:
        raise ChangeOfBasisError(
            f"change_of_basis_op={name!r} is singular (determinant 0): its three new axes "
            "are coplanar, so it is not a change of basis. Check the operator.")
    if det < 0:
        raise ChangeOfBasisError(
            f"change_of_basis_op={name!r} has a negative determinant ({det:g}): it would turn "
            "a right-handed basis into a left-handed one (an inversion of the crystal). "
            "Negate one more (or one fewer) axis, e.g. -a,-b,c instead of -a,b,c.")


def _frac(x: float) -> Fraction:
    return Fraction(x).limit_denominator(144)


def change_of_basis_string(P: np.ndarray) -> str:
    """DIALS-style string ``a+b,-a+b,c`` for ``P`` (new basis vectors as columns)."""
    P = np.asarray(P, dtype=float)
    parts = []
    for i in range(3):
        terms = []
        for j, letter in enumerate("abc"):
            f = _frac(P[j, i])
            if f == 0:
                continue
            sign = "-" if f < 0 else "+"
            mag = abs(f)
            if mag == 1:
                body = letter
            elif mag.denominator == 1:
                body = f"{mag.numerator}*{letter}"
            else:
                body = f"{mag.numerator}/{mag.denominator}*{letter}"
            terms.append(sign + body)
        s = "".join(terms) or "0"
        parts.append(s[1:] if s.startswith("+") else s)
    return ",".join(parts)


def as_gemmi_op(P: np.ndarray) -> gemmi.Op:
    """The gemmi coordinate operator ``x' = P^-1 x`` (gemmi's and cctbx's cb-op convention,
    usable with ``UnitCell.changed_basis_forward`` and ``GroupOps.change_basis_forward``)."""
    c = np.linalg.inv(np.asarray(P, dtype=float))
    op = gemmi.Op()
    op.rot = [[int(round(v * gemmi.Op.DEN)) for v in row] for row in c]
    return op


def metric_tensor(cell: gemmi.UnitCell) -> np.ndarray:
    """Real-space metric tensor G (A^2) of ``cell``."""
    m = cell.metric_tensor()
    return np.array([[m.u11, m.u12, m.u13], [m.u12, m.u22, m.u23], [m.u13, m.u23, m.u33]])


def cell_parameters_from_metric(G: np.ndarray) -> np.ndarray:
    """(..., 6) a, b, c (A), alpha, beta, gamma (deg) from real-space metric tensors
    (..., 3, 3)."""
    G = np.asarray(G, dtype=float)
    a, b, c = (np.sqrt(G[..., i, i]) for i in range(3))

    def ang(x):
        return np.degrees(np.arccos(np.clip(x, -1.0, 1.0)))

    return np.stack([a, b, c, ang(G[..., 1, 2] / (b * c)), ang(G[..., 0, 2] / (a * c)),
                     ang(G[..., 0, 1] / (a * b))], axis=-1)


def cell_from_metric(G: np.ndarray) -> gemmi.UnitCell:
    """Unit cell (A, deg) from a real-space metric tensor."""
    return gemmi.UnitCell(*(float(x) for x in cell_parameters_from_metric(G)))


def transform_cell(cell: gemmi.UnitCell, P: np.ndarray) -> gemmi.UnitCell:
    """``cell`` expressed in the basis ``[a b c] P``."""
    P = np.asarray(P, dtype=float)
    return cell_from_metric(P.T @ metric_tensor(cell) @ P)


def transform_miller_indices(hkl: np.ndarray, P: np.ndarray, what: str = "reflections") -> np.ndarray:
    """``h' = h P`` for an (N, 3) integer array; raises if any index becomes fractional."""
    hkl = np.asarray(hkl)
    new = hkl.astype(float) @ np.asarray(P, dtype=float)
    rounded = np.rint(new)
    bad = np.abs(new - rounded).max(axis=1) > 1e-6 if len(hkl) else np.zeros(0, bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ChangeOfBasisError(
            f"change_of_basis_op={change_of_basis_string(P)} would give fractional Miller "
            f"indices for {int(bad.sum())} of the {len(hkl)} {what} (e.g. {tuple(int(x) for x in hkl[i])} "
            f"-> {tuple(float(x) for x in new[i])}): the new cell is not a supercell of the "
            "lattice the data were indexed on. Use an operator with integer coefficients that "
            "describes the same lattice (for a centred setting, the operator from the rbs table).")
    return rounded.astype(np.int32)


def transform_space_group(sg: gemmi.SpaceGroup, P: np.ndarray) -> gemmi.SpaceGroup:
    """Space group ``sg`` in the basis ``[a b c] P``; raises if that setting is not tabulated."""
    ops = sg.operations()
    ops.change_basis_forward(as_gemmi_op(P))
    new = gemmi.find_spacegroup_by_ops(ops)
    if new is None:
        raise ChangeOfBasisError(
            f"space group {sg.xhm()} in the basis {change_of_basis_string(P)} is a setting "
            "gonio cannot name (not in the tables). Reindex in P 1 first, or give space_group= "
            "for the new setting together with an operator that brings the cell to a "
            "standard setting.")
    return new
