"""The local reflection coordinate system of Kabsch (W. Kabsch, J. Appl. Cryst. 43 (2010)
611; DIALS ``profile_model.gaussian_rs.CoordinateSystem``).

For a reflection with diffracted beam s1, incident beam s0 and rotation axis m2
(all in the laboratory frame, |s1| = |s0| = 1/wavelength):

    e1 = s1 x s0 / |s1 x s0|      (normal to the plane of s0 and s1)
    e2 = s1 x e1 / |s1 x e1|      (in that plane, normal to s1)
    e3 = (s1 + s0) / |s1 + s0|    (bisects s0 and s1)
    zeta = m2 . e1                (1/|zeta| is the rotation-method Lorentz factor)

A pixel seen along the diffracted-beam direction s1' at rotation angle phi' has
coordinates

    c1 = e1 . (s1' - s1) / |s1|,  c2 = e2 . (s1' - s1) / |s1|,  c3 = zeta (phi' - phi),

the angular offsets from the reflection centre (DIALS's ``from_beam_vector`` and
``from_rotation_angle_fast``). DIALS works in radians; here c1, c2, c3 are in degrees,
the units of sigma_b and sigma_m. Every function works on whole arrays.
"""

from __future__ import annotations

import numpy as np

from ..models.vectors import dot3, norms3


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / norms3(v)[..., None]


def kabsch_basis(s0, s1, m2):
    """(e1, e2, e3, zeta) of reflections with diffracted beams ``s1`` (N, 3) in 1/A.

    ``s0`` (3,) or (N, 3) is the incident beam (1/A), ``m2`` (3,) or (N, 3) the rotation
    axis (normalised here). Returns e1, e2, e3 as (N, 3) unit vectors and zeta (N,).
    """
    s0 = np.asarray(s0, dtype=float)
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    m2 = _unit_rows(np.asarray(m2, dtype=float))
    e1 = _unit_rows(np.cross(s1, s0))
    e2 = _unit_rows(np.cross(s1, e1))
    e3 = _unit_rows(s1 + s0)
    zeta = dot3(m2, e1)
    return e1, e2, e3, zeta


def kabsch_c12(s1_pixel, s1, e1, e2):
    """(c1, c2) in deg of diffracted-beam directions ``s1_pixel`` (M, 3) about the
    reflection centres ``s1`` (M, 3) with axes ``e1``, ``e2`` (M, 3) (row-matched).

    ``s1_pixel`` may have any length: it is scaled to |s1| first, as DIALS does when it
    maps a pixel's laboratory coordinate to a beam vector.
    """
    s1 = np.asarray(s1, dtype=float)
    k = norms3(s1)[..., None]
    d = _unit_rows(np.asarray(s1_pixel, dtype=float)) * k - s1
    c1 = dot3(e1, d) / k[..., 0]
    c2 = dot3(e2, d) / k[..., 0]
    return np.rad2deg(c1), np.rad2deg(c2)


def kabsch_c3(phi_pixel_deg, phi_deg, zeta):
    """c3 (deg) = zeta (phi' - phi): the rotation offset scaled to the shortest path
    through the Ewald sphere (DIALS ``from_rotation_angle_fast``)."""
    return np.asarray(zeta, dtype=float) * (np.asarray(phi_pixel_deg, dtype=float)
                                            - np.asarray(phi_deg, dtype=float))


def kabsch_s1_from_c12(c1_deg, c2_deg, s1, e1, e2):
    """Diffracted beam s1' (M, 3), length |s1|, at coordinates (c1, c2) deg: the point of
    the Ewald sphere whose projection on the e1, e2 plane is |s1| (c1 e1 + c2 e2)
    (DIALS ``to_beam_vector``). Offsets beyond 1 rad from s1 have no such point (NaN)."""
    s1 = np.asarray(s1, dtype=float)
    k = norms3(s1)[..., None]
    c1 = np.deg2rad(np.asarray(c1_deg, dtype=float))[..., None]
    c2 = np.deg2rad(np.asarray(c2_deg, dtype=float))[..., None]
    p = k * (c1 * e1 + c2 * e2)
    with np.errstate(invalid="ignore"):
        along = np.sqrt(k * k - dot3(p, p)[..., None])
    return p + along * s1 / k


def kabsch_phi_from_c3(c3_deg, phi_deg, zeta):
    """Rotation angle phi' (deg) at coordinate c3 (deg): phi + c3 / zeta
    (DIALS ``to_rotation_angle_fast``)."""
    return np.asarray(phi_deg, dtype=float) + np.asarray(c3_deg, dtype=float) / np.asarray(
        zeta, dtype=float)
