"""Products of rotations about fixed axes and their derivatives.

DIALS parameterises orientations as small rotations (in mrad) about fixed
axes composed in order (Waterman et al. 2016): R = R_k(t_k) ... R_1(t_1).
"""

from __future__ import annotations

import numpy as np

from ..models.rotation import axis_angle_matrix

MRAD = 1e-3


def skew(v) -> np.ndarray:
    """[v]x: skew(v) @ w == cross(v, w)."""
    x, y, z = v
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def compose_rotations(axes, angles_mrad) -> tuple[np.ndarray, list[np.ndarray]]:
    """R = R(axes[-1]) ... R(axes[0]) and dR/d(angle_i) (angles in mrad)."""
    mats = [axis_angle_matrix(a, t * MRAD) for a, t in zip(axes, angles_mrad)]
    R = np.eye(3)
    for m in mats:
        R = m @ R
    derivs = []
    for i, a in enumerate(axes):
        left = np.eye(3)
        for m in mats[i + 1:]:
            left = m @ left
        right = np.eye(3)
        for m in mats[:i + 1]:
            right = m @ right
        derivs.append(MRAD * left @ skew(np.asarray(a) / np.linalg.norm(a)) @ right)
    return R, derivs
