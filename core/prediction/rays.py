"""Diffracted rays: the laboratory-frame geometry shared by static and scan-varying
prediction (rlp at an angle, s1, entering flag, zeta, detector intersection, pixels).

Conventions as in :mod:`gonio.core.prediction.rotation` (DIALS definitions).
"""

from __future__ import annotations

import numpy as np

from ..errors import GonioError
from ..models.experiment import Experiment
from ..models.rotation import rotate_vectors
from ..models.vectors import norms3
from ..reflection_table import Flags, ReflectionTable, take_rows


class PredictionError(GonioError):
    pass


def lab_rlp(goniometer, q: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """r(phi) = S R(e, phi) F q in the lab frame (N, 3), 1/A, for crystal-frame
    reciprocal-lattice points q = A h (N, 3) at scan angles ``phi`` (N,) rad."""
    g = goniometer
    return rotate_vectors(q @ g.fixed_rotation.T, g.rotation_axis_datum, phi) @ g.setting_rotation.T


def entering_flags(s1: np.ndarray, s0, axis) -> np.ndarray:
    """True where the reflection enters the Ewald sphere: s1 . (s0 x m2) < 0 (DIALS).

    ``s0`` and the lab rotation axis ``axis`` (m2) are (3,) or one row per s1 (N, 3)."""
    return np.einsum("...j,...j->...", s1, np.cross(s0, axis)) < 0.0


def zeta_factor(s1: np.ndarray, s0, axis) -> np.ndarray:
    """zeta = m2 . unit(s1 x s0) (DIALS; 1/|zeta| is the rotation-method Lorentz factor);
    0 where s1 is parallel to s0."""
    e1 = np.cross(s1, s0)
    norm = norms3(e1)
    return (e1 @ axis) / np.where(norm > 0, norm, 1.0)


def xyz_mm_to_px(experiment: Experiment, panel: np.ndarray, xyz_mm: np.ndarray) -> np.ndarray:
    """(x mm, y mm, phi rad) on panels ``panel`` (N,) -> (x px, y px, frame z) (N, 3):
    the panel's mm-to-pixel conversion (parallax included) and the scan's frame."""
    xyz_mm = np.asarray(xyz_mm, dtype=float).reshape(-1, 3)
    xyz_px = np.zeros_like(xyz_mm)
    for ip, p in enumerate(experiment.detector):
        sel = panel == ip
        if sel.any():
            xyz_px[sel, :2] = p.millimeter_to_pixel(xyz_mm[sel, :2])
    xyz_px[:, 2] = experiment.scan.frame_from_angle(np.rad2deg(xyz_mm[:, 2]))
    return xyz_px


def predict_rays(experiment: Experiment, hkl: np.ndarray, phi: np.ndarray) -> ReflectionTable:
    """Columns of reflections ``hkl`` (N, 3) in diffracting position at ``phi`` (N,) rad.

    Fills miller_index, s1, entering, zeta, d, panel, xyzcal.mm (x, y mm, phi rad),
    xyzcal.px (x, y px, frame z), id = 0 and flags = predicted. Rays that miss every panel
    are dropped; column ``_source_index`` gives the input row of each kept ray.
    """
    hkl = np.asarray(hkl, dtype=np.int32).reshape(-1, 3)
    phi = np.asarray(phi, dtype=float).reshape(-1)
    q, s1 = diffracted_beams(experiment, hkl, phi)
    entering = entering_flags(s1, experiment.beam.s0, experiment.goniometer.rotation_axis)
    return rays_table(experiment, hkl, phi, s1, entering, 1.0 / norms3(q))


def diffracted_beams(experiment: Experiment, hkl: np.ndarray, phi: np.ndarray):
    """(q = A h, s1 = s0 + r(phi)) (N, 3), 1/A, of reflections ``hkl`` (N, 3) int32 at
    angles ``phi`` (N,) rad (static crystal). The indices are multiplied as floats: a
    BLAS product, the same numbers as the integer one, 4x faster."""
    q = hkl.astype(float) @ experiment.crystal.A.T
    return q, experiment.beam.s0 + lab_rlp(experiment.goniometer, q, phi)


def rays_table(experiment: Experiment, hkl: np.ndarray, phi: np.ndarray, s1: np.ndarray,
               entering: np.ndarray, d: np.ndarray) -> ReflectionTable:
    """The prediction columns (see :func:`predict_rays`) from diffracted beams ``s1`` at
    angles ``phi`` (rad): panel hit, mm and px coordinates, frame, zeta."""
    panel, xy_mm = experiment.detector.ray_intersection(s1)
    keep = panel >= 0
    idx = np.flatnonzero(keep)
    panel, s1 = panel[keep], take_rows(s1, idx)
    xyz_mm = np.column_stack([take_rows(xy_mm, idx), phi[keep]])
    n = len(idx)
    t = ReflectionTable({
        "miller_index": take_rows(hkl, idx),
        "id": np.zeros(n, np.int32),
        "panel": panel.astype(np.uint64),
        "s1": s1,
        "xyzcal.mm": xyz_mm,
        "xyzcal.px": xyz_mm_to_px(experiment, panel, xyz_mm),
        "entering": np.asarray(entering, dtype=bool)[keep],
        "zeta": zeta_factor(s1, experiment.beam.s0, experiment.goniometer.rotation_axis),
        "d": np.asarray(d, dtype=float)[keep],
        "flags": np.full(n, Flags.predicted, np.uint64),
    })
    t["_source_index"] = idx
    return t
