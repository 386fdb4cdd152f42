"""Static refinement: analytic derivatives, constrained cell, fixing, convergence."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from test_indexing_synthetic import make_experiment, strong_spots

from gonio.core.errors import GonioError
from gonio.core.geometry.spots import centroid_px_to_mm
from gonio.core.models.crystal import b_matrix
from gonio.core.models.detector import Detector
from gonio.core.models.experiment import ExperimentList
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.refinement import RefinementParams, refine, update_predictions
from gonio.core.refinement.cell import UnitCellParameterisation, metric_basis
from gonio.core.refinement.engine import _Setup
from gonio.core.refinement.outliers import mcd_inliers, tukey_inliers
from gonio.core.reflection_table import Flags


def _indexed(experiments, d_min=2.5, **kw):
    strong, hkl, _ = strong_spots(experiments, d_min, **kw)
    strong["miller_index"] = hkl
    centroid_px_to_mm(experiments, strong)
    return strong


def _two_panel(experiments):
    """Split the detector into two panels (top and bottom halves) to exercise multi-panel."""
    p = experiments[0].detector[0]
    h = p.image_size[1] // 2
    top = p.replace(image_size=(p.image_size[0], h), name="top")
    bottom = p.replace(origin=p.origin + h * p.pixel_size[1] * p.slow_axis,
                       image_size=(p.image_size[0], p.image_size[1] - h), name="bottom")
    return ExperimentList([experiments[0].replace(detector=Detector([top, bottom]))])


ALL_FREE = RefinementParams(beam_fix=[], goniometer_fix=[], crystal_fix=[], detector_fix=[])


@pytest.mark.parametrize("sg, cell", [
    ("P 1", (31.0, 42.0, 53.0, 81.0, 96.0, 104.0)),
    ("C 1 2 1", (99.06, 31.01, 54.30, 90, 107.7, 90)),
    ("P 61 2 2", (50.0, 50.0, 120.0, 90, 90, 120)),
])
def test_analytic_derivatives_match_finite_differences(sg, cell):
    experiments = _two_panel(make_experiment(cell, sg, axis=(0.98, 0.15, 0.1), n_images=200,
                                             seed=4))
    refl = _indexed(experiments, 3.0)
    assert set(np.unique(refl["panel"])) == {0, 1}
    setup = _Setup(experiments, ALL_FREE)
    expected = 3 + 6 + 2 + 3 + len(metric_basis(gemmi.SpaceGroup(sg)))
    assert setup.n_free == expected
    rng = np.random.default_rng(0)
    p = rng.normal(size=setup.n_free) * 0.5
    p[2] = experiments[0].beam.wavelength  # wavelength is a value, not an offset
    setup.set(p)
    h, phi = refl["miller_index"], refl["xyzobs.mm.value"][:, 2]
    panel = refl["panel"].astype(int)
    _, _, jac, _, _ = setup.predict_experiment(0, h, phi, panel)
    for k, name in enumerate(setup.names()):
        eps = 1e-6 if "Wavelength" in name else 1e-4
        dp = np.zeros(setup.n_free)
        dp[k] = eps
        setup.set(p + dp)
        plus = setup.predict_experiment(0, h, phi, panel, want_jac=False)[0]
        setup.set(p - dp)
        minus = setup.predict_experiment(0, h, phi, panel, want_jac=False)[0]
        fd = (plus - minus) / (2 * eps)
        ok = np.all(np.isfinite(fd), axis=1)
        scale = np.abs(jac[ok, :, k]).max()
        assert scale > 0, name
        assert np.abs(fd[ok] - jac[ok, :, k]).max() < 1e-5 * scale, name


@pytest.mark.parametrize("sg, cell, n", [
    ("P 1", (30, 40, 50, 80, 95, 105), 6), ("C 1 2 1", (99, 31, 54, 90, 107.7, 90), 4),
    ("P 21 21 21", (50, 60, 70, 90, 90, 90), 3), ("P 41 21 2", (58, 58, 150, 90, 90, 90), 2),
    ("P 61 2 2", (50, 50, 120, 90, 90, 120), 2), ("R 3 :H", (60, 60, 150, 90, 90, 120), 2),
    ("I 2 3", (78, 78, 78, 90, 90, 90), 1)])
def test_cell_parameterisation_keeps_the_lattice_symmetry(sg, cell, n):
    group = gemmi.SpaceGroup(sg)
    B = b_matrix(gemmi.UnitCell(*cell))
    par = UnitCellParameterisation(B, group)
    assert len(par) == n
    B0, _ = par.compose(np.zeros(n))
    assert np.allclose(B0, B, atol=1e-14)  # reverse-Cholesky B is cctbx's B
    B1, _ = par.compose(np.random.default_rng(1).normal(size=n) * 3)
    perturbed = gemmi.UnitCell(*gemmi.UnitCell(*cell).parameters)
    c1 = np.array(gemmi.UnitCell(*_cell(B1)).parameters)
    assert not np.allclose(c1, perturbed.parameters, atol=1e-3)
    assert gemmi.UnitCell(*c1).is_compatible_with_spacegroup(group, 1e-6)


def _cell(B):
    from gonio.core.models.crystal import cell_from_real_vectors

    return cell_from_real_vectors(np.linalg.inv(B)).parameters


def test_refinement_recovers_beam_centre_orientation_and_cell():
    truth = make_experiment((57.8, 57.8, 150.0, 90, 90, 90), "P 41 21 2", n_images=300, seed=2)
    refl = _indexed(truth, 2.5)
    e = truth[0]
    pan = e.detector[0]
    start = ExperimentList([e.replace(
        detector=e.detector.replace(panels=[pan.replace(
            origin=pan.origin + np.array([0.8, -0.5, 0.0]))]),
        crystal=e.crystal.replace(
            A=axis_angle_matrix([0.3, 0.5, 0.8], np.radians(0.2)) @ e.crystal.A * 1.003))])
    refined, out, result = refine(start, refl, RefinementParams(detector_fix=["distance"]))
    assert result.converged
    assert result.steps[0]["RMSD_X"] > 3.0  # started several pixels off
    x, y, z = result.rmsds
    assert x < 0.25 and y < 0.25 and z < 0.15  # the noise: 0.2 px, 0.1 image
    s0 = truth[0].beam.s0
    err = refined[0].detector[0].beam_centre_mm(refined[0].beam.s0) - pan.beam_centre_mm(s0)
    assert np.hypot(*err) / 0.172 < 0.05
    dU = refined[0].crystal.U @ e.crystal.U.T
    assert np.degrees(np.arccos((np.trace(dU) - 1) / 2)) < 0.01
    cell = refined[0].crystal.unit_cell.parameters
    assert cell[0] == pytest.approx(cell[1], rel=1e-12)
    assert cell[3:] == pytest.approx((90, 90, 90), abs=1e-9)
    assert cell[:3] == pytest.approx((57.8, 57.8, 150.0), rel=2e-4)
    esd = result.cell_esds[0]
    assert 0 < esd[0] < 0.02 and esd[0] == pytest.approx(esd[1], rel=1e-6)
    assert esd[3:] == pytest.approx([0, 0, 0], abs=1e-9)
    # output columns
    used = out.get_flags(Flags.used_in_refinement)
    assert used.sum() == result.n_reflections >= 1000
    d = out["xyzcal.px"][used] - out["xyzobs.px.value"][used]
    assert np.sqrt(np.mean(d[:, 0] ** 2)) == pytest.approx(result.rmsds[0], rel=0.05)


def test_update_predictions_match_the_prediction_module():
    truth = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=100, seed=5)
    strong, hkl, _ = strong_spots(truth, 3.0, sigma_px=0.0, sigma_z=0.0)
    strong["miller_index"] = hkl
    out = update_predictions(truth, strong)
    assert np.abs(out["xyzcal.px"] - strong["xyzobs.px.value"]).max() < 1e-6


@pytest.mark.parametrize("kw, absent, present", [
    (dict(detector_fix=["all"]), ["Detector1"], ["Crystal1Phi1", "Beam1Mu1"]),
    (dict(detector_fix=["orientation"]), ["Tau"], ["Detector1Dist", "Detector1Shift1"]),
    (dict(detector_fix=["position"]), ["Dist", "Shift"], ["Detector1Tau1"]),
    (dict(detector_fix_list=["Dist", "Tau1"]), ["Dist", "Tau1"], ["Detector1Tau2"]),
    (dict(goniometer_fix=[]), [], ["Goniometer1GAMMA1", "Goniometer1GAMMA2"]),
    (dict(goniometer_fix=["in_beam_plane"]), ["GAMMA2"], ["Goniometer1GAMMA1"]),
    (dict(goniometer_fix=["out_beam_plane"]), ["GAMMA1"], ["Goniometer1GAMMA2"]),
    (dict(), ["Goniometer", "Wavelength", "Mu2"], ["Beam1Mu1"]),
    (dict(crystal_fix=["cell"]), ["g_param"], ["Crystal1Phi3"]),
    (dict(crystal_fix=["orientation"]), ["Phi"], ["Crystal1g_param_0"]),
    (dict(beam_fix=["all"]), ["Beam"], ["Crystal1Phi3"]),
])
def test_parameter_fixing(kw, absent, present):
    truth = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=60, seed=5)
    refl = _indexed(truth, 3.0)
    _, _, result = refine(truth, refl, RefinementParams(**kw))
    names = result.parameter_names
    for a in absent:
        assert not any(a in n for n in names), (a, names)
    for p in present:
        assert p in names


def test_everything_fixed_is_an_error():
    truth = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=60, seed=5)
    refl = _indexed(truth, 3.0)
    with pytest.raises(GonioError, match="nothing to refine"):
        refine(truth, refl, RefinementParams(beam_fix=["all"], crystal_fix=["all"],
                                             detector_fix=["all"]))


def test_tukey_rejects_gross_outliers_only():
    rng = np.random.default_rng(0)
    res = rng.normal(size=(1000, 3))
    res[:10] += 50.0
    ok = tukey_inliers(res)
    assert not ok[:10].any()
    assert ok[10:].mean() > 0.97


def test_mcd_rejects_outliers_of_correlated_residuals():
    rng = np.random.default_rng(1)
    # strongly correlated X and phi residuals, in very different units
    base = rng.normal(size=(2000, 3)) * [0.05, 0.05, 0.0002]
    base[:, 2] += 0.04 * base[:, 0]
    bad = base[:20].copy()
    bad[:, 2] -= 0.0015  # off the correlation line only: Tukey fences cannot see it
    res = np.vstack([bad, base[20:]])
    assert tukey_inliers(res)[:20].mean() > 0.8
    ok = mcd_inliers(res)
    assert not ok[:20].any()
    assert ok[20:].mean() > 0.95


@pytest.mark.parametrize("algorithm", ["mcd", "tukey"])
def test_outliers_are_flagged_and_excluded(algorithm):
    truth = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=100, seed=5)
    refl = _indexed(truth, 3.0)
    refl["xyzobs.mm.value"][:20, 0] += 3.0  # 17 px off
    _, out, result = refine(truth, refl, RefinementParams(outlier_algorithm=algorithm))
    assert result.n_outliers >= 20
    assert out.get_flags(Flags.centroid_outlier)[:20].all()
    assert not out.get_flags(Flags.used_in_refinement)[:20].any()
    assert result.rmsds[0] < 0.25


def test_gauss_newton_engine_reaches_the_same_minimum():
    truth = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=100, seed=5)
    refl = _indexed(truth, 3.0)
    _, _, lm = refine(truth, refl, RefinementParams())
    _, _, gn = refine(truth, refl, RefinementParams(engine="GaussNewton"))
    assert gn.converged and gn.rmsds == pytest.approx(lm.rmsds, rel=0.03)
    diff = np.abs(np.array(gn.parameter_values) - lm.parameter_values)
    assert np.all(diff < 3 * np.array(lm.parameter_esds))  # the same minimum within errors


def test_high_correlations_are_reported():
    from gonio.core.refinement.engine import _high_correlations

    cov = np.array([[1.0, 0.95, 0.0], [0.95, 1.0, 0.1], [0.0, 0.1, 4.0]])
    assert _high_correlations(cov, ["a", "b", "c"]) == [("a", "b", pytest.approx(0.95))]
