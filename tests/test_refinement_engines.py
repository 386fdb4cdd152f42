"""Refinery engines: LBFGS reaches the same model as LevMar (DIALS's engine choices)."""

from __future__ import annotations

import numpy as np
import pytest
from test_indexing_synthetic import make_experiment, strong_spots

from gonio.core.errors import GonioError
from gonio.core.geometry.spots import centroid_px_to_mm
from gonio.core.models.experiment import ExperimentList
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.refinement import RefinementParams, refine
from gonio.core.reflection_table import Flags


def _start_off_truth():
    truth = make_experiment((57.8, 61.3, 150.0, 90, 90, 90), "P 21 21 21", n_images=200, seed=2)
    strong, hkl, _ = strong_spots(truth, 2.5)
    strong["miller_index"] = hkl
    centroid_px_to_mm(truth, strong)
    e = truth[0]
    pan = e.detector[0]
    start = ExperimentList([e.replace(
        detector=e.detector.replace(panels=[pan.replace(
            origin=pan.origin + np.array([0.5, -0.3, 0.0]))]),
        crystal=e.crystal.replace(
            A=axis_angle_matrix([0.3, 0.5, 0.8], np.radians(0.1)) @ e.crystal.A * 1.002))])
    return truth, start, strong


def _angle_deg(U1, U2):
    return np.degrees(np.arccos(np.clip((np.trace(U1 @ U2.T) - 1) / 2, -1, 1)))


def test_lbfgs_converges_to_the_levmar_model():
    truth, start, strong = _start_off_truth()
    params = dict(detector_fix=["distance"], outlier_algorithm="null")
    lm_expt, _, lm = refine(start, strong, RefinementParams(**params))
    bf_expt, _, bf = refine(start, strong, RefinementParams(engine="LBFGS", **params))
    assert bf.steps[0]["RMSD_X"] > 2.0  # started pixels off
    assert bf.converged and len(bf.steps) > 2
    assert bf.rmsds == pytest.approx(lm.rmsds, rel=1e-3)
    c_lm = np.array(lm_expt[0].crystal.unit_cell.parameters)
    c_bf = np.array(bf_expt[0].crystal.unit_cell.parameters)
    assert np.all(np.abs(c_bf[:3] / c_lm[:3] - 1) < 1e-4)
    assert _angle_deg(bf_expt[0].crystal.U, lm_expt[0].crystal.U) < 1e-3
    centre = [x[0].detector[0].beam_centre_mm(x[0].beam.s0) for x in (lm_expt, bf_expt)]
    assert np.hypot(*(centre[0] - centre[1])) < 0.002  # mm: well under 0.02 px
    # and both are the truth within the noise
    assert np.all(np.abs(c_bf[:3] / np.array(truth[0].crystal.unit_cell.parameters[:3]) - 1)
                  < 3e-4)
    assert _angle_deg(bf_expt[0].crystal.U, truth[0].crystal.U) < 0.01
    assert len(bf.parameter_esds) == len(lm.parameter_esds)
    assert np.allclose(bf.parameter_esds, lm.parameter_esds, rtol=0.02)


def test_unknown_engine_is_an_error():
    truth, _, strong = _start_off_truth()
    with pytest.raises(GonioError, match="engine=SimplexLSQ.*LBFGS"):
        refine(truth, strong, RefinementParams(engine="SimplexLSQ"))


def test_rmsds_by_panel_of_a_multipanel_detector():
    from gonio.core.simulate.models import true_models
    from gonio.core.simulate.params import SimulationParams
    from gonio.shell.commands.refine import _panel_rmsd_tables

    p = SimulationParams(space_group="P 21 21 21", unit_cell=(54.1, 58.3, 66.5, 90, 90, 90),
                         detector="multipanel", image_size=(512, 512), distance=150.0,
                         n_images=60, osc=0.5, d_min=2.0)
    truth, _, _ = true_models(p, np.random.default_rng(1))
    assert len(truth[0].detector) == 4
    strong, hkl, _ = strong_spots(truth, 2.0)
    strong["miller_index"] = hkl
    # panel 2 sits 1 px off in X where the model thinks it is: only its RMSD_X shows it
    on2 = strong["panel"] == 2
    strong["xyzobs.px.value"][on2, 0] += 1.0
    centroid_px_to_mm(truth, strong)
    _, out, result = refine(truth, strong, RefinementParams(outlier_algorithm="null"))
    rows = result.rmsds_by_panel
    assert [r["Panel id"] for r in rows] == [0, 1, 2, 3]
    assert sum(r["Nref"] for r in rows) == result.n_reflections
    assert all(r["Nref"] > 200 for r in rows)
    # the misplaced panel stands out (the whole-detector model absorbs part of the shift)
    rx = [r["RMSD_X"] for r in rows]
    assert int(np.argmax(rx)) == 2 and rx[2] > 0.4 and min(rx) < 0.25
    used = out.get_flags(Flags.used_in_refinement)
    for r in rows:
        assert 0.18 < r["RMSD_Y"] < 0.28 and 0.08 < r["RMSD_Z"] < 0.12  # the noise
        sel = used & (out["panel"] == r["Panel id"])
        d = out["xyzcal.px"][sel] - out["xyzobs.px.value"][sel]
        assert np.array([r["RMSD_X"], r["RMSD_Y"], r["RMSD_Z"]]) == pytest.approx(
            np.sqrt(np.mean(d**2, axis=0)), rel=0.01)  # px <-> mm has parallax (Si sensor)
    text = "\n".join(_panel_rmsd_tables(result))
    assert "Detector 1 RMSDs by panel:" in text and "RMSD_Z (images)" in text
    # single-panel detectors have no such table (as DIALS)
    truth1, start, strong1 = _start_off_truth()
    assert refine(truth1, strong1, RefinementParams())[2].rmsds_by_panel == []


def test_lbfgs_out_of_iterations_is_not_converged():
    _, start, strong = _start_off_truth()
    _, _, r = refine(start, strong, RefinementParams(engine="LBFGS", max_iterations=3,
                                                     outlier_algorithm="null"))
    assert not r.converged and r.reason == "maximum number of iterations reached"
    assert len(r.steps) == 4 and r.steps[-1]["RMSD_X"] < r.steps[0]["RMSD_X"]
