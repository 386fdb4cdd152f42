"""Correction columns (gonio.core.integration.corrections) against DIALS's own columns
for the same reflections and models (x4_xds, l_cysteine_wedges), and against their
definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gonio.core.integration import corrections
from gonio.core.integration.profile_model import ProfileModel
from gonio.core.models.beam import Beam
from tests.integration_reference import dials_reference

CASES = ["x4", "lcys11", "lcys23"]
X4_SIGMA_M = 0.227358239  # DIALS's, from its partiality column (test_integration_profile_model)


@pytest.mark.parametrize("case", CASES)
def test_lp_equals_dials(case):
    expt, refl = dials_reference(case)
    np.testing.assert_allclose(corrections.lp(expt, refl["s1"]), refl["lp"], rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_qe_equals_dials(case):
    """x4 was integrated by an older DIALS, which named the column dqe."""
    expt, refl = dials_reference(case)
    assert corrections.has_qe(expt)
    want = refl["qe"] if "qe" in refl else refl["dqe"]
    np.testing.assert_allclose(corrections.qe(expt, refl["s1"], refl["panel"]), want,
                               rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_d_equals_dials(case):
    expt, refl = dials_reference(case)
    np.testing.assert_allclose(corrections.d_spacing(expt, refl["miller_index"]), refl["d"],
                               rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_partiality_equals_dials(case):
    expt, refl = dials_reference(case)
    model = ProfileModel.from_dict(expt.profile) if expt.profile else ProfileModel(0.05,
                                                                                   X4_SIGMA_M)
    p = corrections.partiality(expt, refl["s1"], refl["xyzcal.px"][:, 2], refl["bbox"], model)
    assert (refl["partiality"] < 0.9).sum() > 5  # real partials among them
    np.testing.assert_allclose(p, refl["partiality"], rtol=1e-6, atol=1e-12)


def test_lp_from_its_definition():
    """Unpolarised beam (f = 0.5): P = (1 + cos^2 2theta) / 2; L^-1 = |zeta| sin 2theta.
    A still has no Lorentz factor."""
    from gonio.core.models.experiment import Experiment
    from gonio.core.models.goniometer import Goniometer
    from gonio.core.models.scan import Scan

    beam = Beam(direction=[0, 0, 1], wavelength=1.0, polarization_fraction=0.5)
    two_theta = np.deg2rad([10.0, 45.0, 90.0, 120.0])
    s1 = np.column_stack([np.zeros(4), np.sin(two_theta), -np.cos(two_theta)])  # in y-z
    rot = Experiment(beam=beam, goniometer=Goniometer([1.0, 0, 0]), scan=Scan((1, 10), (0, 1)))
    lp = corrections.lp(rot, s1)
    P = (1 + np.cos(two_theta) ** 2) / 2
    np.testing.assert_allclose(lp, np.sin(two_theta) / P, rtol=1e-14)  # zeta = 1 here
    still = rot.replace(scan=Scan((1, 1), (0, 0)))
    np.testing.assert_allclose(corrections.lp(still, s1), 1 / P, rtol=1e-14)
    # fully polarised (f = 1) with the electric vector along x (normal n = y): nothing is
    # scattered at 90 deg along x, everything at 90 deg along y
    pol = beam.replace(polarization_fraction=1.0)
    P = corrections.polarisation_factor(pol, [[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(P, [0.0, 1.0], atol=1e-15)


def test_qe_from_its_definition():
    expt, refl = dials_reference("lcys11")
    pan = expt.detector[0]
    normal_ray = pan.normal * (1.0 if pan.origin @ pan.normal > 0 else -1.0)
    q = corrections.qe(expt, [normal_ray, -normal_ray], [0, 0])
    np.testing.assert_allclose(q, 1 - math.exp(-pan.mu * pan.thickness), rtol=1e-14)


def test_simulator_uses_the_same_polarisation():
    """gonio's simulator multiplies by L P with DIALS's P, so 1/(L P) is DIALS's lp away
    from the rotation axis (the simulator caps L at |zeta| = 0.05)."""
    from gonio.core.simulate.physics import ZETA_MIN, lorentz_polarisation

    expt, refl = dials_reference("lcys11")
    far = np.abs(refl["zeta"]) > ZETA_MIN
    np.testing.assert_allclose(1 / lorentz_polarisation(expt, refl)[far], refl["lp"][far],
                               rtol=1e-12)
