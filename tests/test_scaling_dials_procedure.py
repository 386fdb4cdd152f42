"""The pieces of dials.scale 3.x's procedure that ``error_model_schedule=dials`` follows, each
against DIALS/scitbx itself (the whole run against DIALS 3.12's log and statistics is in
tests/test_scaling_dials312.py):

- the L-BFGS iterations (scitbx's minimizer and line search) on a test function, point by
  point against scitbx's own run;
- the smoothers of the scale and decay terms placed as dials.scale places them, against
  DIALS 3.12's component values (``dials312_lcysteine_smoothers.json``, made by
  tests/data/make_dials312_smoothers.py);
- groups of two never judged as outliers; partial measurements summed before scaling;
  observations with E^2 above emax^2 rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path
from scaling_synthetic import make_sweep

from gonio.core.merging.equivalents import group_equivalents, map_to_asu
from gonio.core.reflection_table import Flags, ReflectionTable
from gonio.core.scaling import ScalingParams, scale
from gonio.core.scaling.lbfgs_dials import minimise
from gonio.core.scaling.model import smoother_design
from gonio.core.scaling.partials import sum_partials
from gonio.core.scaling.targets import reject_outliers

DATA = Path(__file__).parent / "data"


def _rosenbrock(evaluations):
    def fg(x):
        evaluations.append(x.copy())
        f = np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2) + 3 * np.sum(x ** 2)
        g = np.zeros_like(x)
        g[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
        g[1:] += 200 * (x[1:] - x[:-1] ** 2)
        return f, g + 6 * x
    return fg


def test_lbfgs_iterations_as_scitbx():
    """scitbx.lbfgs.run (DIALS 3.12's, default parameters: m = 5, its traditional
    convergence test) on a 6-parameter Rosenbrock function with a quadratic term, from
    (-1.2, 1, -0.5, 0.8, 1.5, -0.3): 32 function evaluations, 28 iterations, the points
    below (printed by scitbx). gonio's port follows it point by point."""
    evaluations = []
    x, f, n_iter = minimise(_rosenbrock(evaluations),
                            np.array([-1.2, 1.0, -0.5, 0.8, 1.5, -0.3]), 1,
                            rmsd_tolerance=0.0)
    assert n_iter == 28 and len(evaluations) == 32
    eighth = [-0.4495033963483915, 0.3113351415820902, 0.12080588340818763,
              -0.04771564259192951, -0.006957599222739225, -0.029593261234616947]
    final = [0.37875323269638894, 0.15025281250060438, 0.03192315297372332,
             0.010794795189850836, 0.009727405294259063, 9.186956333072693e-05]
    assert np.allclose(evaluations[7], eighth, atol=1e-11)
    assert np.allclose(x, final, atol=1e-10)


def test_lbfgs_stops_on_the_rmsd_rule():
    """dials.scale's rule: stop after the first iteration whose RMSD = sqrt(f / n) changed
    by less than the tolerance relative to the previous iteration's; with 1e-4 on the
    test function well before the minimum, at a higher f than the converged run."""
    evaluations = []
    x, f, n_iter = minimise(_rosenbrock(evaluations),
                            np.array([-1.2, 1.0, -0.5, 0.8, 1.5, -0.3]), 1,
                            rmsd_tolerance=0.05)
    f_full = minimise(_rosenbrock([]), np.array([-1.2, 1.0, -0.5, 0.8, 1.5, -0.3]), 1,
                      rmsd_tolerance=0.0)[1]
    assert n_iter < 28 and f > f_full


def test_smoothers_placed_as_dials312():
    """The scale and decay terms of each L-cysteine sweep, from DIALS 3.12's parameters
    after its first L-BFGS round: with the smoother placed as dials.scale places it (from
    the first suitable reflection, in units of interval / 0.999) they equal DIALS's to
    1e-12; placed over the scan (gonio's schedule) they are up to 0.1 % off."""
    ref = json.loads((DATA / "dials312_lcysteine_smoothers.json").read_text())
    worst_scan = 0.0
    for sweep in ref["sweeps"]:
        phi, d = np.array(sweep["phi"]), np.array(sweep["d"])
        rng, dr = tuple(sweep["phi_range"]), tuple(sweep["data_range"])
        scale = smoother_design(phi, rng, sweep["scale_interval"], dr)
        assert np.allclose(scale.value(np.array(sweep["scale_parameters"])), sweep["scale"],
                           rtol=1e-12)
        decay = smoother_design(phi, rng, sweep["decay_interval"], dr)
        b = decay.value(np.array(sweep["decay_parameters"]))
        assert np.allclose(np.exp(b / (2 * d ** 2)), sweep["decay"], rtol=1e-12)
        on_scan = smoother_design(phi, rng, sweep["scale_interval"])
        worst_scan = max(worst_scan, np.max(np.abs(
            on_scan.value(np.array(sweep["scale_parameters"])) / sweep["scale"] - 1)))
    assert worst_scan > 1e-4


def test_pairs_kept_as_dials():
    """dials.scale judges only groups of more than two: a pair that disagrees keeps both
    observations (``reject_pairs=False``), also a pair left after a rejection; gonio's own
    rule drops both."""
    group = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    intensity = np.array([100.0, 300.0, 100.0, 102.0, 400.0, 50.0, 51.0, 49.0, 50.5])
    variance = np.full(9, 4.0)
    g = np.ones(9)
    dials = reject_outliers(group, 3, intensity, variance, g, 6.0, reject_pairs=False)
    gonio = reject_outliers(group, 3, intensity, variance, g, 6.0)
    assert dials.tolist() == [False, False, False, False, True, False, False, False, False]
    assert gonio.tolist() == [True, True, False, False, True, False, False, False, False]


def test_partials_summed_as_dials():
    """Parts of one reflection (same experiment and partial_id, partiality < 0.99): the
    first row gets the summed summation intensity and variance, the I^2/V-weighted profile
    intensity and variance and the summed partiality; the other parts are absorbed. Rows
    with a non-positive variance and other experiments' rows are left alone."""
    t = ReflectionTable({
        "id": np.array([0, 0, 0, 1, 0, 0]),
        "partial_id": np.array([7, 7, 7, 7, 8, 9]),
        "partiality": np.array([0.5, 0.3, 0.1, 0.4, 1.0, 0.6]),
        "intensity.sum.value": np.array([50.0, 30.0, 10.0, 40.0, 100.0, 60.0]),
        "intensity.sum.variance": np.array([60.0, 40.0, 20.0, 50.0, 110.0, 70.0]),
        "intensity.prf.value": np.array([52.0, 28.0, 11.0, 41.0, 101.0, 61.0]),
        "intensity.prf.variance": np.array([55.0, 35.0, 0.0, 45.0, 105.0, 65.0]),
    })
    out, absorbed = sum_partials(t)
    assert absorbed.tolist() == [False, True, False, False, False, False]
    assert out["intensity.sum.value"][0] == pytest.approx(80.0)
    assert out["intensity.sum.variance"][0] == pytest.approx(100.0)
    w = np.array([52.0 ** 2 / 55.0, 28.0 ** 2 / 35.0])
    assert out["intensity.prf.value"][0] == pytest.approx((w @ [52.0, 28.0]) / w.sum())
    assert out["intensity.prf.variance"][0] == pytest.approx((w @ [55.0, 35.0]) / w.sum())
    assert out["partiality"][0] == pytest.approx(0.8)
    assert np.array_equal(out["intensity.sum.value"][2:], t["intensity.sum.value"][2:])
    assert t["intensity.sum.value"][0] == 50.0  # the input is not modified


def test_e2_outliers_as_dials():
    """emax (dials.scale's, 10): an observation 500 times too strong in a pair, which no
    normalised-deviation rule can single out, has E^2 far above emax^2 and is rejected with
    every outlier rejection; with emax=0 it stays. On the same sweep without it, emax
    rejects nothing: genuine strong reflections stay far below E^2 = 100."""
    s = make_sweep(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt"), d_min=3.0)
    grp = group_equivalents(map_to_asu(s.table["miller_index"],
                                       s.experiments[0].crystal.space_group).hkl_asu)
    pairs = np.flatnonzero(grp.count[grp.group] == 2)
    zinger = pairs[np.argmax(s.i_true[pairs])]
    t = s.table.copy()
    for k in ("sum", "prf"):
        t[f"intensity.{k}.value"][zinger] *= 500.0
    opts = dict(error_model_schedule="dials", intensity_choice="sum")
    outliers = {}
    for name, table, emax in (("zinger", t, 10.0), ("zinger, emax=0", t, 0.0),
                              ("clean", s.table, 10.0), ("clean, emax=0", s.table, 0.0)):
        scaled = scale(s.experiments, table, ScalingParams(**opts, emax=emax))[1]
        outliers[name] = scaled.get_flags(Flags.outlier_in_scaling)
    assert outliers["zinger"][zinger] and not outliers["zinger, emax=0"][zinger]
    assert np.array_equal(outliers["clean"], outliers["clean, emax=0"])
