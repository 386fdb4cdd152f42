"""The detector parameterisation: Dist is the distance along the detector normal (DIALS)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from gonio.core.models.experiment import ExperimentList
from gonio.core.refinement.models import DetectorParameterisation


def test_dist_is_the_directed_distance_whatever_the_tilts():
    from test_indexing_synthetic import make_experiment

    det = make_experiment((50, 60, 70, 90, 90, 90))[0].detector
    par = DetectorParameterisation(det)
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = np.concatenate([[0.0], rng.normal(size=2) * 3, rng.normal(size=3) * 50])  # mrad
        moved = par.model(p)
        assert moved[0].distance == pytest.approx(det[0].distance, abs=1e-9)
        assert not np.allclose(moved[0].normal, det[0].normal)
    p = np.array([1.5, 0, 0, 0, 20.0, -30.0])
    assert par.model(p)[0].distance == pytest.approx(det[0].distance + 1.5, abs=1e-9)


def test_myd88_fixed_distance_stays_fixed_when_the_axis_and_tilts_refine():
    from gonio.core.indexing import IndexParams, index
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl
    from gonio.core.refinement.params import RefinementParams

    folder = data_path("myd88")
    experiments = read_expt(folder / "imported.expt")
    strong = read_refl(folder / "strong.refl")
    e = experiments[0]
    axis = np.array([-107.0, -122.0, 0.0])
    e = e.replace(goniometer=e.goniometer.with_rotation_axis(axis / np.linalg.norm(axis)))
    params = IndexParams(refinement=RefinementParams(detector_fix=["distance"],
                                                     goniometer_fix=[]))
    found, _, _ = index(ExperimentList([e]), strong, params)
    assert found[0].detector[0].distance == pytest.approx(2193.0, abs=0.1)
    # the detector did move (shifts, tilts) and the axis was refined
    assert not np.allclose(found[0].detector[0].origin, e.detector[0].origin)
    assert not np.allclose(found[0].goniometer.rotation_axis, e.goniometer.rotation_axis)
