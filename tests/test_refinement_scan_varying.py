"""Scan-varying refinement: the smoother, analytic derivatives, truth recovery, drift.

Truth comes from the simulator's models (gonio.core.simulate.models.true_models,
including its ``crystal_drift``) and gonio's own prediction; observed centroids
are the predictions plus Gaussian noise (0.2 px, 0.2 image).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_indexing_synthetic import strong_spots

from gonio.core.errors import GonioError
from gonio.core.geometry.spots import centroid_px_to_mm
from gonio.core.models.crystal import Crystal
from gonio.core.models.experiment import ExperimentList
from gonio.core.prediction import predict_rotation
from gonio.core.refinement import refine, update_predictions
from gonio.core.refinement.engine import _Setup
from gonio.core.refinement.params import RefineParams
from gonio.core.refinement.report import scan_point_cells
from gonio.core.refinement.smoother import GaussianSmoother, num_intervals
from gonio.core.reflection_table import Flags
from gonio.core.simulate.models import true_models
from gonio.core.simulate.params import SimulationParams

CELL = (54.1, 58.3, 66.5, 90.0, 90.0, 90.0)


def sweep(drift=(0.0, 0.0, 0.0), n_images=240, osc=0.5, seed=3, sigma=0.2):
    """(truth experiments, indexed table, starting experiments without scan points)."""
    p = SimulationParams(space_group="P 21 21 21", unit_cell=CELL, n_images=n_images, osc=osc,
                         crystal_drift=drift, d_min=2.0)
    truth, _, _ = true_models(p, np.random.default_rng(seed))
    strong, hkl, _ = strong_spots(truth, 2.0, sigma_px=sigma, sigma_z=sigma)
    strong["miller_index"] = hkl
    e = truth[0]
    start = ExperimentList([e.replace(crystal=e.crystal.replace(A_at_scan_points=None))])
    centroid_px_to_mm(start, strong)
    return truth, strong, start


def misorientation_deg(A, B) -> float:
    R = Crystal(A=A).U @ Crystal(A=B).U.T
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def truth_at_scan_points(truth):
    c = truth[0].crystal
    n = truth[0].scan.num_images + 1
    return c.A_at_scan_points if c.A_at_scan_points is not None else np.repeat(c.A[None], n, 0)


def rmsds_on(table, rows):
    d = (table["xyzcal.px"] - table["xyzobs.px.value"])[rows]
    return np.sqrt(np.mean(d**2, axis=0))


@pytest.mark.parametrize("n, n_values, positions", [
    (1, 2, [0, 1]), (2, 3, [0, 1, 2]), (3, 5, [-0.5, 0.5, 1.5, 2.5, 3.5])])
def test_smoother_layout_as_dials(n, n_values, positions):
    s = GaussianSmoother((0, 120), n)
    assert s.n_values == n_values
    assert s.positions == pytest.approx(positions)
    assert s.sigma == pytest.approx(0.65 + 0.05 * (min(3, n_values) - 2))  # n_average <= 3
    W = s.weights(np.linspace(0, 120, 241))
    assert np.allclose(W.sum(axis=1), 1.0)
    assert (np.count_nonzero(W, axis=1) <= 3).all()
    # a constant is reproduced exactly; the weights peak at the nearest sample
    assert np.allclose(W @ np.full(n_values, 2.5), 2.5)
    assert np.argmax(s.weights([0.0])[0]) == np.argmin(np.abs(np.array(positions)))


def test_number_of_intervals_as_dials():
    assert num_intervals(120.0) == 3  # 36 deg intervals
    assert num_intervals(20.0) == 1
    assert num_intervals(360.0, 36.0) == 10
    assert num_intervals(120.0, 36.0, absolute_num_intervals=7) == 7


def test_scan_varying_derivatives_match_finite_differences():
    truth, refl, start = sweep(n_images=120, osc=1.0, sigma=0.0)
    params = RefineParams(beam_fix=[], goniometer_fix=[], interval_width_degrees=30.0)
    setup = _Setup(start, params, scan_varying=True)
    names = setup.names()
    assert any(n.startswith("Crystal1Phi1_sample") for n in names)
    assert any(n.startswith("Crystal1g_param_2_sample") for n in names)
    rng = np.random.default_rng(0)
    p0 = setup.get()
    p = p0 + rng.normal(size=setup.n_free) * 0.3
    p[names.index("Beam1Wavelength")] = p0[names.index("Beam1Wavelength")]
    setup.set(p)
    rows = rng.choice(len(refl), 3000, replace=False)
    h, phi = refl["miller_index"][rows], refl["xyzobs.mm.value"][rows, 2]
    panel = refl["panel"][rows].astype(int)
    _, _, jac, _, _ = setup.predict_experiment(0, h, phi, panel)
    for k, name in enumerate(names):
        if "Wavelength" in name:
            continue
        dp = np.zeros(setup.n_free)
        dp[k] = 1e-4
        setup.set(p + dp)
        plus = setup.predict_experiment(0, h, phi, panel, want_jac=False)[0]
        setup.set(p - dp)
        minus = setup.predict_experiment(0, h, phi, panel, want_jac=False)[0]
        fd = (plus - minus) / 2e-4
        ok = np.all(np.isfinite(fd), axis=1)
        scale = np.abs(jac[ok, :, k]).max()
        assert scale > 0, name
        assert np.abs(fd[ok] - jac[ok, :, k]).max() < 1e-5 * scale, name


@pytest.fixture(scope="module")
def static_truth():
    truth, refl, start = sweep()
    refined, table, result = refine(start, refl, RefineParams(scan_varying=True,
                                                            use_all_reflections=True))
    return truth, refl, refined, table, result


def test_static_truth_is_recovered_at_every_scan_point(static_truth):
    truth, _, refined, _, result = static_truth
    assert result.scan_varying and result.static is not None
    A_sp = refined[0].crystal.A_at_scan_points
    assert A_sp.shape == (241, 3, 3)  # one per image boundary
    T = truth_at_scan_points(truth)
    assert max(misorientation_deg(a, t) for a, t in zip(A_sp, T)) < 0.01
    cells = scan_point_cells(refined[0].crystal)
    assert np.abs(cells[:, :3] / np.array(CELL[:3]) - 1).max() < 2e-4
    assert np.abs(cells[:, 3:] - 90).max() < 1e-9  # still orthorhombic at every point
    names = result.parameter_names
    assert "Crystal1Phi1_sample5" in names and "Crystal1Phi1_sample6" not in names  # 120 deg


def test_scan_varying_rmsds_no_worse_than_static(static_truth):
    truth, refl, refined, table, result = static_truth
    static_models = ExperimentList([refined[0].replace(
        crystal=refined[0].crystal.replace(A_at_scan_points=None))])
    # the static stage's crystal is kept as crystal.A: predict with each model on one set
    static_table = update_predictions(static_models, refl)
    rows = table.get_flags(Flags.used_in_refinement)
    sv, st = rmsds_on(table, rows), rmsds_on(static_table, rows)
    assert np.all(sv <= st * 1.01)
    assert sv[0] < 0.22 and sv[1] < 0.22 and sv[2] < 0.22  # the noise: 0.2 px, 0.2 image


def test_prediction_uses_the_scan_points(static_truth):
    _, refl, refined, table, _ = static_truth
    pred = predict_rotation(refined[0], d_min=2.0)  # scan-varying prediction
    assert len(pred) > 0.95 * len(refl)
    rows = table.get_flags(Flags.used_in_refinement)
    key = lambda t: {tuple(h): z for h, z in zip(t["miller_index"], t["xyzcal.px"][:, 2])}  # noqa: E731
    kp = key(pred)
    common = [(kp[tuple(h)], z) for h, z in zip(table["miller_index"][rows],
                                                 table["xyzcal.px"][rows, 2]) if tuple(h) in kp]
    d = np.array([a - b for a, b in common])
    assert len(d) > 1000 and np.median(np.abs(d)) < 0.02  # images


def test_a_drifting_crystal_is_followed():
    drift = (0.2, 0.1, 0.2)  # 0.3 deg over the 120-degree scan
    truth, refl, start = sweep(drift)
    T = truth_at_scan_points(truth)
    # with the detector tilts free, a slow crystal rotation trades against them (a weakly
    # determined direction of this geometry); hold the tilts to test the crystal model
    refined, _, result = refine(start, refl, RefineParams(
        scan_varying=True, detector_fix=["orientation"]))
    errors = [misorientation_deg(a, t) for a, t in zip(refined[0].crystal.A_at_scan_points, T)]
    assert max(errors) < 0.02
    static_errors = [misorientation_deg(refined[0].crystal.A, t) for t in T]
    assert max(static_errors) > 0.1  # the static model cannot follow
    assert result.rmsds[2] < result.static.rmsds[2]


def test_auto_is_static_on_a_short_scan_and_true_is_an_error_when_too_short():
    truth, refl, start = sweep(n_images=20, osc=0.5, sigma=0.1)
    _, _, result = refine(start, refl, RefineParams())  # Auto: 10 deg < one interval
    assert not result.scan_varying and result.static is None
    with pytest.raises(GonioError, match="too short for a scan-varying model"):
        refine(start, refl, RefineParams(scan_varying=True, absolute_num_intervals=10))
    with pytest.raises(GonioError, match="nothing varies"):
        refine(start, refl, RefineParams(scan_varying=True, unit_cell_force_static=True,
                                         orientation_force_static=True))


def test_force_static_cell_keeps_one_cell():
    truth, refl, start = sweep(n_images=120, osc=1.0)
    refined, _, result = refine(start, refl, RefineParams(scan_varying=True,
                                                          unit_cell_force_static=True))
    assert not any(n.startswith("Crystal1g_param_0_sample") for n in result.parameter_names)
    cells = scan_point_cells(refined[0].crystal)
    assert np.ptp(cells, axis=0).max() < 1e-8


def test_plot_of_the_scan_varying_model(static_truth):
    from gonio.core.refinement.report import plot_scan_varying_model, scan_point_rotation_deg

    _, _, refined, _, _ = static_truth
    png = plot_scan_varying_model(refined[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    rot = scan_point_rotation_deg(refined[0].crystal)
    assert rot.shape == (241, 3) and np.abs(rot).max() < 0.01  # a static truth: no turn
    with pytest.raises(ValueError, match="no scan-varying model"):
        plot_scan_varying_model(refined[0].replace(
            crystal=refined[0].crystal.replace(A_at_scan_points=None)))


def test_compact_normal_equations_equal_the_dense_ones():
    from gonio.core.refinement.engine import _CompactJacobian, _Problem

    truth, refl, start = sweep(n_images=120, osc=1.0)
    setup = _Setup(start, RefineParams(interval_width_degrees=30.0), scan_varying=True)
    p = setup.get() + np.random.default_rng(2).normal(size=setup.n_free) * 0.1
    setup.set(p)
    rows = np.arange(4000)
    h, phi = refl["miller_index"][rows], refl["xyzobs.mm.value"][rows, 2]
    panel = refl["panel"][rows].astype(int)
    xyz, _, compact, _, _ = setup.predict_experiment(0, h, phi, panel, compact=True)
    _, _, dense, _, _ = setup.predict_experiment(0, h, phi, panel)
    assert isinstance(compact, _CompactJacobian)
    assert np.allclose(compact.dense(), dense, rtol=1e-12, atol=1e-15)
    res = xyz - refl["xyzobs.mm.value"][rows]
    sqrt_w = np.random.default_rng(3).uniform(0.5, 2.0, size=(len(rows), 3))
    problem = _Problem(setup, None, rows, None, sqrt_w, None)
    JTJ_c, g_c, cost_c = problem.normal_equations(res, compact)
    JTJ_d, g_d, cost_d = problem.normal_equations(res, dense)
    assert np.allclose(JTJ_c, JTJ_d, rtol=1e-9, atol=1e-9 * np.abs(JTJ_d).max())
    assert np.allclose(g_c, g_d, rtol=1e-9, atol=1e-9 * np.abs(g_d).max())
    assert cost_c == pytest.approx(cost_d, rel=1e-12)
