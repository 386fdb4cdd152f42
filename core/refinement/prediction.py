"""Rotation-geometry prediction of indexed reflections, with derivatives.

For a reflection h of an experiment with crystal A = UB, goniometer
rotation axis e (lab frame), M = S F (setting times fixed rotation), beam
s0 and detector panel matrix D = [fast | slow | origin]:

* r0 = M A h is the lab-frame rlp at phi = 0 and r(phi) = R(e, phi) r0;
* the Ewald condition |s0 + r|^2 = |s0|^2 has two solutions for phi
  (:func:`gonio.core.prediction.rotation_angles`, solved here in the lab
  frame with the refined axis e); the one nearest the observed phi is kept
  (:func:`gonio.core.prediction.nearest_rotation_angle`, as DIALS does for
  matched observations);
* s1 = s0 + r, v = D^-1 s1 and (X, Y) = (v0 / v2, v1 / v2) in mm on the
  observed panel, with the trial D matrices (``Panel.ray_intersection``
  with D being refined; v is kept for the derivatives).

Derivatives with respect to any parameter p follow Waterman et al. (2016),
Acta Cryst. D72, 558, eqs. for the scan-static rotation case:
d(phi)/dp = -(dr/dp . s1 + r . ds0/dp) / ((e x r) . s1) with dr/dp taken
at fixed phi, ds1/dp = ds0/dp + dr/dp + (e x r) d(phi)/dp, and
dv/dp = D^-1 (ds1/dp - dD/dp v).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..prediction.rotation import nearest_rotation_angle, rotation_angles


@dataclass
class Perturbation:
    """The change of the model quantities for a unit change of one parameter."""

    ds0: np.ndarray | None = None  # (3,)
    de: np.ndarray | None = None  # (3,)  spindle axis
    dA: np.ndarray | None = None  # (3, 3) or per reflection (N, 3, 3): lab-frame M dA
    dD: np.ndarray | None = None  # (n_panels, 3, 3)


def predict(h, phi_obs, panel, s0, e, MA, Ds, perturbations=()):
    """Predicted (X mm, Y mm, phi rad), s1, and derivatives (N, 3, n_params).

    ``MA`` is the lab-frame matrix M A, (3, 3), or one per reflection (N, 3, 3)
    for a scan-varying crystal; ``Ds`` (n_panels, 3, 3) the panel D matrices;
    ``panel`` (N,) the panel of each reflection.
    """
    h = np.asarray(h, dtype=float)
    r0 = _times(MA, h)
    phi = nearest_rotation_angle(*rotation_angles(s0, e, r0), phi_obs)
    phi_f = np.where(np.isfinite(phi), phi, phi_obs)
    # rotations by phi about e, with the trigonometry done once for r and every dr
    k = np.asarray(e, dtype=float)
    k = k / np.linalg.norm(k)
    c, s = np.cos(phi_f)[:, None], np.sin(phi_f)[:, None]
    one_c = 1.0 - c
    r = _rotate(r0, k, c, s, one_c)
    s1 = s0 + r
    # one panel: one matrix for all rows (much cheaper than a matrix per row)
    Dinv = np.linalg.inv(Ds)[0] if len(Ds) == 1 else np.linalg.inv(Ds)[panel]
    v = _times(Dinv, s1)
    X = v[:, 0] / v[:, 2]
    Y = v[:, 1] / v[:, 2]
    xyz = np.column_stack([X, Y, phi])
    jac = np.zeros((len(h), 3, len(perturbations)))
    if not len(perturbations):
        return xyz, s1, jac
    exr = _cross(e, r)
    denom = np.einsum("ij,ij->i", exr, s1)
    r0e = r0 @ e
    for n, pt in enumerate(perturbations):
        dr = np.zeros_like(r)
        ds0 = np.zeros(3)
        if pt.dA is not None:
            dr += _rotate(_times(pt.dA, h), k, c, s, one_c)
        if pt.de is not None:
            de = pt.de
            dr += _cross(de, r0) * s + (1.0 - c) * (
                np.outer(r0e, de) + np.outer(r0 @ de, e))
        if pt.ds0 is not None:
            ds0 = pt.ds0
        dphi = -(np.einsum("ij,ij->i", dr, s1) + r @ ds0) / denom
        ds1 = ds0 + dr + exr * dphi[:, None]
        if pt.dD is not None:
            dD = pt.dD[0] if len(Ds) == 1 else pt.dD[panel]
            dv = _times(Dinv, ds1 - _times(dD, v))
        else:
            dv = _times(Dinv, ds1)
        jac[:, 0, n] = (dv[:, 0] - X * dv[:, 2]) / v[:, 2]
        jac[:, 1, n] = (dv[:, 1] - Y * dv[:, 2]) / v[:, 2]
        jac[:, 2, n] = dphi
    return xyz, s1, jac


def _rotate(v, k, c, s, one_c):
    """Rodrigues rotation of the rows of ``v`` (N, 3) about the unit axis ``k`` by angles
    given as their cosines ``c``, sines ``s`` and ``1 - c`` (N, 1): the arithmetic of
    :func:`gonio.core.models.rotation.rotate_vectors`, whose trigonometry and axis
    normalisation the caller does once for many ``v``."""
    return v * c + _cross(k, v) * s + np.outer(v @ k, k).reshape(v.shape) * one_c


def _cross(a, b):
    """a x b for a (3,) and rows (N, 3) (or the reverse): the products and differences of
    ``np.cross``, in its order (the same numbers), without its general axis handling."""
    out = np.empty(np.broadcast_shapes(np.shape(a), np.shape(b)))
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    out[..., 0] = a1 * b2 - a2 * b1
    out[..., 1] = a2 * b0 - a0 * b2
    out[..., 2] = a0 * b1 - a1 * b0
    return out


def _times(M, h):
    """M h for one matrix (3, 3) or one per row (N, 3, 3) (written out: faster than
    einsum or matmul for stacks of 3 x 3)."""
    if M.ndim == 2:
        return h @ M.T
    return M[:, :, 0] * h[:, 0:1] + M[:, :, 1] * h[:, 1:2] + M[:, :, 2] * h[:, 2:3]
