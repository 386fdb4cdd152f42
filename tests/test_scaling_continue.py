"""Scaling again from the models of a previous scale (dials.scale's overwrite_existing_models).

process scales once to find the resolution limit and again at that limit (as xia2); the second
run continues from the first one's model, as dials.scale does by default. It must give the
same scales and statistics as a fresh start (overwrite_existing_models=True) to the precision
a crystallographer reads, and both must follow the applied scales of a synthetic sweep.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path, run_fail, run_ok
from scaling_synthetic import deviation_from_truth, make_sweep

from gonio.core.reflection_table import Flags
from gonio.core.scaling import ScalingParams, scale
from gonio.shell.commands.scale import scaled_statistics


@pytest.fixture(scope="module")
def expt():
    return data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt")


@pytest.fixture(scope="module")
def first(expt):
    """A synthetic sweep (its experiment carries the model DIALS refined on the real sweep)
    and its first scaling."""
    sweep = make_sweep(expt, d_min=2.0)
    return sweep, scale(sweep.experiments, sweep.table, ScalingParams())


@pytest.fixture(scope="module")
def again(first):
    """Scaled again at 2.5 A: continuing (default) and from new models."""
    sweep, (exps, table, _) = first
    return {over: scale(exps, table, ScalingParams(d_min=2.5, overwrite_existing_models=over))
            for over in (False, True)}


def test_a_model_dials_refined_is_not_continued(first):
    """gonio continues only from models it refined: DIALS's harmonics and smoother
    placement differ in details, so the first scale of this sweep starts afresh."""
    sweep, (exps, _, result) = first
    assert sweep.experiments[0].scaling_model["__id__"] == "physical"  # DIALS's, from the file
    assert result.continued == [False]
    assert exps[0].scaling_model["configuration_parameters"]["gonio_model"] is True


def test_second_scale_continues_and_agrees_with_a_fresh_one(first, again):
    sweep = first[0]
    (exps_c, table_c, res_c), (exps_f, table_f, res_f) = again[False], again[True]
    assert res_c.continued == [True] and res_f.continued == [False]
    # both follow the applied scales (0.5 % rms), and each other to 0.05 % rms (0.017 % seen)
    for table in (table_c, table_f):
        dev, _ = deviation_from_truth(table, sweep.g_true)
        assert np.sqrt(np.mean(dev ** 2)) < 0.01
    both = table_c.get_flags(Flags.scaled) & table_f.get_flags(Flags.scaled)
    ratio = table_c["inverse_scale_factor"][both] / table_f["inverse_scale_factor"][both]
    assert np.sqrt(np.mean((ratio / np.mean(ratio) - 1) ** 2)) < 5e-4
    assert abs(np.mean(ratio) - 1) < 1e-3
    assert res_c.error_model == pytest.approx(res_f.error_model, rel=0.005, abs=1e-3)
    assert abs(res_c.n_outliers - res_f.n_outliers) <= max(3, 0.02 * res_f.n_outliers)
    p = ScalingParams(d_min=2.5)
    s_c, s_f = scaled_statistics(exps_c, table_c, p), scaled_statistics(exps_f, table_f, p)
    assert s_c.overall.cc_half == pytest.approx(s_f.overall.cc_half, abs=1e-4)
    assert s_c.overall.r_meas == pytest.approx(s_f.overall.r_meas, rel=0.002)
    assert s_c.overall.mean_i_over_sigma == pytest.approx(s_f.overall.mean_i_over_sigma, rel=0.002)
    assert s_c.shells[-1].cc_half == pytest.approx(s_f.shells[-1].cc_half, abs=1e-3)


def test_a_different_layout_starts_afresh(first):
    """Parameters that change the model's layout (another scale interval, another lmax, the
    KB model) build a new model: the existing one is not reused with another meaning."""
    _, (exps, table, _) = first
    for p in (ScalingParams(scale_interval=10.0), ScalingParams(lmax=6), ScalingParams(model="KB")):
        assert scale(exps, table, p)[2].continued == [False]
    # a new restraint weight keeps the layout (as DIALS's model update)
    assert scale(exps, table, ScalingParams(surface_weight=1e5))[2].continued == [True]


def test_kb_model_continues(first):
    _, (exps, table, _) = first
    kb_exps, kb_table, kb = scale(exps, table, ScalingParams(model="KB"))
    assert kb.continued == [False]
    assert scale(kb_exps, kb_table, ScalingParams(model="KB"))[2].continued == [True]


def test_through_the_shell(session, expt):
    refl = data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl")
    run_ok(session, f"import {expt} {refl}")
    assert "Continued from" not in run_ok(session, "scale").text  # DIALS's model: afresh
    text = run_ok(session, "scale").text
    assert "Continued from the existing scaling model of experiment(s) 0" in text
    assert "Continued from" not in run_ok(session, "scale overwrite_existing_models=True").text
    assert "overwrite_existing_models" in run_fail(session, "scale overwrite_existing_models=maybe")
