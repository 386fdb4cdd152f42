"""Rotation matrices about an axis (right-handed, Rodrigues/quaternion form)."""

from __future__ import annotations

import numpy as np


def axis_angle_matrix(axis, angle_rad) -> np.ndarray:
    """Matrix of a right-handed rotation by ``angle_rad`` about ``axis``.

    ``angle_rad`` may be an array: the result then has shape (..., 3, 3).
    """
    n = np.asarray(axis, dtype=float)
    n = n / np.linalg.norm(n)
    a = np.asarray(angle_rad, dtype=float)
    c, s = np.cos(a), np.sin(a)
    C = 1.0 - c
    x, y, z = n
    m = np.empty(a.shape + (3, 3))
    m[..., 0, 0] = c + x * x * C
    m[..., 0, 1] = x * y * C - z * s
    m[..., 0, 2] = x * z * C + y * s
    m[..., 1, 0] = y * x * C + z * s
    m[..., 1, 1] = c + y * y * C
    m[..., 1, 2] = y * z * C - x * s
    m[..., 2, 0] = z * x * C - y * s
    m[..., 2, 1] = z * y * C + x * s
    m[..., 2, 2] = c + z * z * C
    return m


def rotate_vectors(v, axis, angle_rad) -> np.ndarray:
    """Rotate vectors ``v`` (N, 3) about ``axis`` by per-row angles (N,) (Rodrigues)."""
    v = np.asarray(v, dtype=float)
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    a = np.asarray(angle_rad, dtype=float)[..., None]
    c, s = np.cos(a), np.sin(a)
    return v * c + np.cross(k, v) * s + np.outer(v @ k, k).reshape(v.shape) * (1.0 - c)
