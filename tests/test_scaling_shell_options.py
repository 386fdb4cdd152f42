"""The scale command's model=array and error-model options through the shell: they run,
write the model DIALS reads, and bad values leave the session as it was."""

from __future__ import annotations

import pytest
from conftest import data_path, run_fail, run_ok

from gonio.core.reflection_table import Flags


@pytest.fixture
def one_sweep(session):
    expt = data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt")
    refl = data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl")
    run_ok(session, f"import {expt} {refl}")
    return session


def test_array_model_and_dials_error_model_through_the_shell(one_sweep):
    text = run_ok(one_sweep, "scale model=array n_absorption_bins=2 minimisation=individual").text
    assert "array" in text and "Error model" in text
    sm = one_sweep.state.experiments[0].scaling_model
    assert sm["__id__"] == "array"
    assert sm["absorption"]["n_parameters"] == 3 * 3 * sm["configuration_parameters"][  # 2 bins: 3
        "n_time_param"]
    a, b = sm["configuration_parameters"]["error_model_parameters"]
    assert a > 0 and b >= 0


def test_bad_array_and_error_model_values(one_sweep):
    assert "n_resolution_bins" in run_fail(one_sweep, "scale model=array n_resolution_bins=0")
    assert "leave_one_out" in run_fail(one_sweep, "scale minimisation=bogus")
    assert "emax" in run_fail(one_sweep, "scale emax=-1")


def test_reflection_selection_through_the_shell(one_sweep):
    text = run_ok(one_sweep, "scale reflection_selection.method=quasi_random "
                           "reflection_selection.random.min_groups=50 "
                           "reflection_selection.random.min_reflections=1").text
    line = next(x for x in text.splitlines() if x.startswith("Reflection selection"))
    assert "(quasi_random)" in line and "(50 of " in line
    # every reflection still scaled: the selection only restricts the minimisation
    t = one_sweep.state.reflections["scaled"]
    assert (t["inverse_scale_factor"][t.get_flags(Flags.scaled)] > 0).all()
    assert "use_all" in run_fail(one_sweep, "scale reflection_selection.method=everything")
    assert "min_groups" in run_fail(one_sweep, "scale reflection_selection.random.min_groups=0")


def test_a_selection_that_leaves_nothing(one_sweep):
    text = run_fail(one_sweep, "scale reflection_selection.method=intensity_ranges "
                           "reflection_selection.E2_range=50,60")
    assert "No reflection passes" in text and "use_all" in text


def test_dials_choices_through_the_shell(one_sweep):
    """DIALS 1.x's choices (docs/scale.md, "gonio and dials.scale") and dials.scale's Auto
    rules as shell options; a bad value leaves the session as it was."""
    run_ok(one_sweep, "scale intensity_choice=sum require_both=True "
                      "minimisation_weights=integration outlier_rejection=simple "
                      "scale_interval=Auto absorption_correction=Auto")
    t = one_sweep.state.reflections["scaled"]
    prf_failed = ~t.get_flags(Flags.integrated_prf)
    assert not (t.get_flags(Flags.scaled) & prf_failed).any()  # both integrations required
    sm = one_sweep.state.experiments[0].scaling_model
    cfg = sm["configuration_parameters"]
    assert cfg["Imid"] == 1.0 and "absorption" in sm  # 170 deg: Auto keeps the term
    assert cfg["scale_rot_interval"] == pytest.approx(170 / 12)
    assert "error_model" in run_fail(one_sweep, "scale minimisation_weights=sigma")
    assert "standard" in run_fail(one_sweep, "scale outlier_rejection=aimless")
