"""Scan-varying crystal: orientation and unit cell as smoothed functions of the image.

The local crystal parameters are those of
:class:`~gonio.core.refinement.models.CrystalParameterisation` (Phi1, Phi2,
Phi3 in mrad about lab x, y, z applied to U0, and the symmetry-constrained
reciprocal-metric parameters of the cell), but each one that varies is a
:class:`~gonio.core.refinement.smoother.GaussianSmoother` over the scan with
its own sample values (DIALS's ``ScanVaryingCrystalOrientationParameterisation``
and ``ScanVaryingCrystalUnitCellParameterisation``, Waterman et al. 2016,
Acta Cryst. D72, 558). Parameters forced static keep a single value.

As DIALS (``compose_model_per=image``), the model used for a reflection is the
one at the centre of the image holding its observed centroid; the result is
A at every image boundary (``Crystal.A_at_scan_points``, n_images + 1 matrices).
Every function here works on whole arrays of frames at once.
"""

from __future__ import annotations

import numpy as np

from ..models.crystal import Crystal
from ..models.rotation import axis_angle_matrix
from ..models.scan import Scan
from .cell import G_SCALE, _sym
from .models import CrystalParameterisation
from .rotations import MRAD, skew
from .smoother import GaussianSmoother

_J = np.eye(3)[::-1]


def batch_b_from_gstar(gstar: np.ndarray) -> np.ndarray:
    """Lower-triangular B (m, 3, 3) with B^T B = G* for a stack of metrics (m, 3, 3)."""
    L = np.linalg.cholesky(_J @ gstar @ _J)
    return _J @ np.transpose(L, (0, 2, 1)) @ _J


def batch_db(B: np.ndarray, dgstar: np.ndarray) -> np.ndarray:
    """dB (m, 3, 3) for a change dG* (3, 3) of each metric (B lower triangular)."""
    Binv = np.linalg.inv(B)
    Y = np.transpose(Binv, (0, 2, 1)) @ dgstar @ Binv
    X = np.tril(Y, -1) + 0.5 * Y * np.eye(3)
    return X @ B


class ScanVaryingCrystalParameterisation:
    """A(z) = U(z) B(z) with smoothed Phi and cell parameters over ``scan``.

    ``varying`` (n_local,) says which local parameters are scan-varying;
    the flat parameter vector holds ``n_values`` samples for each varying
    parameter and one value for each static one, in local-parameter order.
    """

    scan_varying = True

    def __init__(self, crystal: Crystal, scan: Scan, n_intervals: int,
                 orientation_static: bool = False, cell_static: bool = False):
        self.crystal = crystal
        self.scan = scan
        self.static = CrystalParameterisation(crystal)
        self.cell = self.static.cell
        self.U0 = self.static.U0
        n_local = len(self.static.p0)
        self.varying = np.ones(n_local, bool)
        self.varying[:3] = not orientation_static
        self.varying[3:] = not cell_static
        self.smoother = GaussianSmoother(scan.array_range, n_intervals)
        nv = self.smoother.n_values
        self.local_of, self.sample_of, self.names = [], [], []
        for k, name in enumerate(self.static.names):
            if self.varying[k]:
                for s in range(nv):
                    self.local_of.append(k)
                    self.sample_of.append(s)
                    self.names.append(f"{name}_sample{s + 1}")
            else:
                self.local_of.append(k)
                self.sample_of.append(-1)
                self.names.append(name)
        self.local_of = np.array(self.local_of)
        self.sample_of = np.array(self.sample_of)
        self.p0 = np.zeros(len(self.names))

    def fixed_mask(self, fix: list) -> np.ndarray:
        return self.static.fixed_mask(fix)[self.local_of]

    def coefficients(self, z) -> np.ndarray:
        """d(local parameter) / d(entry) at frames z: (N, n_entries)."""
        W = self.smoother.weights(z)
        return np.where(self.sample_of[None, :] >= 0,
                        W[:, np.maximum(self.sample_of, 0)], 1.0)

    def local_values(self, p, z) -> np.ndarray:
        """Local parameters (N, n_local) at frames z."""
        C = self.coefficients(z) * np.asarray(p, dtype=float)[None, :]
        return C @ np.eye(len(self.static.p0))[self.local_of]

    def compose_local(self, t: np.ndarray, want_derivatives: bool = True):
        """A (m, 3, 3) and dA/dt_k (n_local, m, 3, 3) for local parameter rows t (m, n_local)."""
        axes = np.eye(3)
        R = [axis_angle_matrix(axes[i], t[:, i] * MRAD) for i in range(3)]
        U = R[2] @ R[1] @ R[0] @ self.U0
        n_cell = len(self.cell)
        gstar = self.cell.gstar0 + G_SCALE * np.einsum("mk,kij->mij", t[:, 3:],
                                                       np.array([_sym(b) for b in self.cell.basis])
                                                       if n_cell else np.zeros((0, 3, 3)))
        B = batch_b_from_gstar(gstar)
        A = U @ B
        if not want_derivatives:
            return A, None
        dA = np.empty((3 + n_cell,) + A.shape)
        S = [MRAD * skew(axes[i]) for i in range(3)]
        dA[0] = R[2] @ R[1] @ S[0] @ R[0] @ self.U0 @ B
        dA[1] = R[2] @ S[1] @ R[1] @ R[0] @ self.U0 @ B
        dA[2] = S[2] @ U @ B
        for k, n in enumerate(self.cell.basis):
            dA[3 + k] = U @ batch_db(B, G_SCALE * _sym(n))
        return A, dA

    def compose_frames(self, p, z, want_derivatives: bool = True):
        """A at frames z (N, 3, 3), dA/d(local) (n_local, N, 3, 3) and the entry
        coefficients (N, n_entries) (see :meth:`coefficients`)."""
        A, dA = self.compose_local(self.local_values(p, z), want_derivatives)
        return A, dA, self.coefficients(z)

    def image_centres(self) -> np.ndarray:
        z0, z1 = self.scan.array_range
        return np.arange(z0, z1) + 0.5

    def scan_point_A(self, p) -> np.ndarray:
        """A at every image boundary (n_images + 1, 3, 3)."""
        z0, z1 = self.scan.array_range
        return self.compose_local(self.local_values(p, np.arange(z0, z1 + 1.0)), False)[0]

    def model(self, p) -> Crystal:
        return self.crystal.replace(A_at_scan_points=self.scan_point_A(p))
