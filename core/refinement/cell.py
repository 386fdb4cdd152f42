"""Unit cell parameterised by the reciprocal metric tensor G* = B^T B.

The free parameters span the subspace of symmetric 3x3 matrices left
invariant by the rotation part W of every operation of the crystal's space
group (W G* W^T = G*), the same idea as the metric constraints of cctbx's
``symmetrize_reduce_enlarge`` used by DIALS's unit-cell parameterisation
(Waterman et al. 2016, Acta Cryst. D72, 558). B (lower triangular, cctbx
convention) is the "reverse Cholesky" factor of G*, and its derivative
follows from d(G*) = dB^T B + B^T dB with dB B^-1 lower triangular.
"""

from __future__ import annotations

import gemmi
import numpy as np

_SYM_INDEX = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
#: parameters are G* components in units of 1e-5 / A^2 (about 1 % of a 30 A cell's entry)
G_SCALE = 1e-5


def _sym(v: np.ndarray) -> np.ndarray:
    m = np.zeros((3, 3))
    for k, (i, j) in enumerate(_SYM_INDEX):
        m[i, j] = m[j, i] = v[k]
    return m


def _vec(m: np.ndarray) -> np.ndarray:
    return np.array([m[i, j] for i, j in _SYM_INDEX])


def rotation_parts(space_group: gemmi.SpaceGroup) -> np.ndarray:
    """Integer rotation matrices W (n, 3, 3) of the space group's operations."""
    ops = space_group.operations()
    return np.array([np.array(op.rot) // op.DEN for op in ops.sym_ops], dtype=float)


def metric_basis(space_group: gemmi.SpaceGroup) -> np.ndarray:
    """Orthonormal basis (k, 6) of the G* components invariant under the group."""
    W = rotation_parts(space_group)
    P = np.zeros((6, 6))
    for k in range(6):
        e = np.zeros(6)
        e[k] = 1.0 if k < 3 else np.sqrt(0.5)  # orthonormal basis of symmetric matrices
        E = _sym(e)
        avg = np.mean(W @ E @ np.transpose(W, (0, 2, 1)), axis=0)
        v = _vec(avg)
        v[3:] *= np.sqrt(2.0)
        P[:, k] = v
    u, s, _ = np.linalg.svd(P)
    basis = u[:, s > 0.5].T
    basis[:, 3:] /= np.sqrt(2.0)  # back to plain matrix components
    return basis


def symmetrize_metric(gstar: np.ndarray, space_group: gemmi.SpaceGroup) -> np.ndarray:
    """Average of W G* W^T over the group: the nearest metric obeying the symmetry."""
    W = rotation_parts(space_group)
    return np.mean(W @ gstar @ np.transpose(W, (0, 2, 1)), axis=0)


def b_from_gstar(gstar: np.ndarray) -> np.ndarray:
    """Lower-triangular B with B^T B = G* (positive diagonal, cctbx B = F^T)."""
    J = np.eye(3)[::-1]
    L = np.linalg.cholesky(J @ gstar @ J)
    return J @ L.T @ J


def db_from_dgstar(B: np.ndarray, dgstar: np.ndarray) -> np.ndarray:
    """dB for a change dG* of the metric (B lower triangular)."""
    Binv = np.linalg.inv(B)
    Y = Binv.T @ dgstar @ Binv
    X = np.tril(Y, -1) + 0.5 * np.diag(np.diag(Y))
    return X @ B


class UnitCellParameterisation:
    """G* = G*_0 + G_SCALE * sum_k t_k N_k with N_k the invariant basis."""

    def __init__(self, B0: np.ndarray, space_group: gemmi.SpaceGroup):
        self.space_group = space_group
        self.gstar0 = symmetrize_metric(B0.T @ B0, space_group)
        self.basis = metric_basis(space_group)
        self.names = [f"g_param_{k}" for k in range(len(self.basis))]

    def __len__(self) -> int:
        return len(self.basis)

    def gstar(self, t: np.ndarray) -> np.ndarray:
        return self.gstar0 + G_SCALE * _sym(self.basis.T @ np.asarray(t, dtype=float))

    def compose(self, t: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """B at parameters t and dB/dt_k for each k."""
        B = b_from_gstar(self.gstar(t))
        return B, [db_from_dgstar(B, G_SCALE * _sym(n)) for n in self.basis]
