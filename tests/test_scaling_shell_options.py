"""The scale command's model=array and error-model options through the shell: they run,
write the model DIALS reads, and bad values leave the session as it was."""

from __future__ import annotations

import pytest
from conftest import data_path


def _run(session, line, ok=True):
    head, n = session.head, len(session.history.steps())
    r = session.run_line(line)
    assert r.ok == ok, r.text
    if not ok:
        assert r.text.startswith("Error: ") and "Traceback" not in r.text
        assert session.head == head and len(session.history.steps()) == n
    return r.text


@pytest.fixture
def one_sweep(session):
    expt = data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt")
    refl = data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl")
    _run(session, f"import {expt} {refl}")
    return session


def test_array_model_and_dials_error_model_through_the_shell(one_sweep):
    text = _run(one_sweep, "scale model=array n_absorption_bins=2 minimisation=individual")
    assert "array" in text and "Error model" in text
    sm = one_sweep.state.experiments[0].scaling_model
    assert sm["__id__"] == "array"
    assert sm["absorption"]["n_parameters"] == 3 * 3 * sm["configuration_parameters"][  # 2 bins: 3
        "n_time_param"]
    a, b = sm["configuration_parameters"]["error_model_parameters"]
    assert a > 0 and b >= 0


def test_bad_array_and_error_model_values(one_sweep):
    assert "n_resolution_bins" in _run(one_sweep, "scale model=array n_resolution_bins=0",
                                       ok=False)
    assert "leave_one_out" in _run(one_sweep, "scale minimisation=bogus", ok=False)
