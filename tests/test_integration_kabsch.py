"""The Kabsch local coordinate system (gonio.core.integration.kabsch) against a brute-force
construction and against DIALS's own zeta column."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.integration.kabsch import (
    kabsch_basis,
    kabsch_c3,
    kabsch_c12,
    kabsch_phi_from_c3,
    kabsch_s1_from_c12,
)
from gonio.core.models.rotation import axis_angle_matrix
from tests.integration_reference import dials_reference


def _turn(v, axes, angle):
    """Rodrigues rotation of each row of v about the matching row of axes (unit)."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axes, v) * s + axes * np.sum(axes * v, axis=1)[:, None] * (1 - c)


def _reflections(n=200, wavelength=0.9, seed=1):
    """Random diffracted beams on the Ewald sphere, 2theta in (2, 80) deg."""
    rng = np.random.default_rng(seed)
    s0 = np.array([0.0, 0.0, -1.0 / wavelength])
    two_theta = np.deg2rad(rng.uniform(2, 80, n))
    azimuth = rng.uniform(0, 2 * np.pi, n)
    u = np.column_stack([np.sin(two_theta) * np.cos(azimuth), np.sin(two_theta) * np.sin(azimuth),
                         -np.cos(two_theta)])
    return s0, u / wavelength


def test_basis_is_right_handed_orthonormal_and_matches_its_definition():
    s0, s1 = _reflections()
    m2 = np.array([1.0, 0.0, 0.0])
    e1, e2, e3, zeta = kabsch_basis(s0, s1, m2)
    for e in (e1, e2, e3):
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(e1 * e2, axis=1), 0.0, atol=1e-12)
    # e1 normal to the plane of s0 and s1, e2 normal to s1, e3 normal to e1
    np.testing.assert_allclose(e1 @ s0, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(e1 * s1, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(e2 * s1, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(e3 * e1, axis=1), 0.0, atol=1e-12)
    # (s1^, e1, e2) is right-handed: e2 = s1^ x e1
    u1 = s1 / np.linalg.norm(s1, axis=1)[:, None]
    np.testing.assert_allclose(np.cross(u1, e1), e2, atol=1e-12)
    # one reflection built by hand: s0 along -z, s1 in the x-z plane tilted to +x
    lam = 1.0
    s1_one = np.array([[np.sin(0.3), 0.0, -np.cos(0.3)]])
    e1h, e2h, e3h, zh = kabsch_basis([0, 0, -1.0 / lam], s1_one, [1.0, 0, 0])
    # s1 x s0 = (sin, 0, -cos) x (0, 0, -1) = (0, sin, 0): e1 = +y, zeta = m2.e1 = 0
    np.testing.assert_allclose(e1h[0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(e2h[0], np.cross(s1_one[0], [0, 1, 0]), atol=1e-15)
    np.testing.assert_allclose(e3h[0], [np.sin(0.15), 0, -np.cos(0.15)], atol=1e-15)
    assert zh[0] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(kabsch_basis([0, 0, -1.0], s1_one, [0, 1.0, 0])[3], [1.0])


def test_coordinates_vanish_at_the_centre_and_measure_angles():
    s0, s1 = _reflections()
    m2 = np.array([0.3, 0.9, 0.1])
    e1, e2, e3, zeta = kabsch_basis(s0, s1, m2)
    c1, c2 = kabsch_c12(s1, s1, e1, e2)
    np.testing.assert_allclose(c1, 0.0, atol=1e-12)
    np.testing.assert_allclose(c2, 0.0, atol=1e-12)
    assert np.all(kabsch_c3(12.5, 12.5, zeta) == 0.0)
    # brute force: turn s1 by delta about e2 (towards +e1) and about -e1 (towards +e2)
    delta = np.deg2rad(0.37)
    c1, c2 = kabsch_c12(_turn(s1, e2, delta), s1, e1, e2)
    np.testing.assert_allclose(c1, np.rad2deg(np.sin(delta)), rtol=1e-12)
    np.testing.assert_allclose(c2, 0.0, atol=1e-12)
    turned = _turn(s1, -e1, delta)
    c1, c2 = kabsch_c12(turned, s1, e1, e2)
    np.testing.assert_allclose(c2, np.rad2deg(np.sin(delta)), rtol=1e-12)
    np.testing.assert_allclose(c1, 0.0, atol=1e-12)
    # the pixel direction may have any length (a laboratory position in mm)
    c1b, c2b = kabsch_c12(250.0 * turned, s1, e1, e2)
    np.testing.assert_allclose(c2b, c2, rtol=1e-12)


def test_c3_is_the_first_order_path_through_the_ewald_sphere():
    """DIALS's exact e3 coordinate, e3 . (R(m2, dphi) p* - p*) / |p*|, equals zeta dphi to
    first order: the 'fast' transform both DIALS and gonio use."""
    s0, s1 = _reflections()
    m2 = np.array([1.0, 0.0, 0.0])
    e1, e2, e3, zeta = kabsch_basis(s0, s1, m2)
    keep = np.abs(zeta) > 0.2
    p = (s1 - s0)[keep]
    dphi = np.deg2rad(0.05)
    p_rot = p @ axis_angle_matrix(m2, dphi).T
    exact = np.sum(e3[keep] * (p_rot - p), axis=1) / np.linalg.norm(p, axis=1)
    fast = np.deg2rad(kabsch_c3(10.05, 10.0, zeta[keep]))
    np.testing.assert_allclose(fast, exact, rtol=2e-3)


def test_inverse_transforms_round_trip():
    s0, s1 = _reflections()
    e1, e2, e3, zeta = kabsch_basis(s0, s1, [0.0, 1.0, 0.0])
    rng = np.random.default_rng(3)
    c1, c2 = rng.normal(0, 0.5, len(s1)), rng.normal(0, 0.5, len(s1))
    s1p = kabsch_s1_from_c12(c1, c2, s1, e1, e2)
    np.testing.assert_allclose(np.linalg.norm(s1p, axis=1), np.linalg.norm(s1, axis=1), rtol=1e-13)
    back = kabsch_c12(s1p, s1, e1, e2)
    np.testing.assert_allclose(back[0], c1, atol=1e-10)
    np.testing.assert_allclose(back[1], c2, atol=1e-10)
    c3 = rng.normal(0, 0.3, len(s1))
    phi = kabsch_phi_from_c3(c3, 42.0, zeta)
    np.testing.assert_allclose(kabsch_c3(phi, 42.0, zeta), c3, atol=1e-12)


@pytest.mark.parametrize("case", ["x4", "lcys11", "lcys23"])
def test_zeta_equals_dials_zeta_column(case):
    """Sign and size of zeta as DIALS stores it, including a multi-axis goniometer."""
    expt, refl = dials_reference(case)
    _, _, _, zeta = kabsch_basis(expt.beam.s0, refl["s1"], expt.goniometer.rotation_axis)
    assert np.any(zeta < 0) and np.any(zeta > 0)
    np.testing.assert_allclose(zeta, refl["zeta"], rtol=1e-12, atol=1e-14)
