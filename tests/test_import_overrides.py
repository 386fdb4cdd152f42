"""Geometry overrides without files start from the models as last imported (MyD88)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path, run_ok

AXIS = "goniometer.axis=-107,-122,0"



def _detector_origins(experiments):
    return np.array([p.origin for p in experiments[0].detector])


@pytest.fixture
def after_failed_index(session):
    d = data_path("myd88")
    run_ok(session, f"import {d / 'imported.expt'} {d / 'strong.refl'}")
    run_ok(session, "index")  # the header's axis: about half the spots index
    assert session.history.step(2).metrics["percent_indexed"] < 60
    return session


@pytest.mark.slow
def test_override_after_failed_index_equals_override_on_import(after_failed_index, tmp_path):
    from gonio.shell.session import Session

    s = after_failed_index
    r = run_ok(s, f"import {AXIS}")
    assert "as imported at step 1" in r.text and "from=current" in r.text
    # the refined detector of the failed index is not inherited
    assert np.allclose(_detector_origins(s.state.experiments),
                       _detector_origins(s.state_at(1).experiments))
    assert np.allclose(s.state.experiments[0].goniometer.rotation_axis,
                       np.array([-107, -122, 0]) / np.hypot(107, 122), atol=1e-9)
    assert "indexed" not in s.state.reflections  # the failed index's table is gone
    run_ok(s, "index")
    chained = s.history.step(s.head).metrics
    # the same override on the import itself
    d = data_path("myd88")
    folder = tmp_path / "direct"
    folder.mkdir()
    direct = Session(folder)
    try:
        run_ok(direct, f"import {d / 'imported.expt'} {d / 'strong.refl'} {AXIS}")
        run_ok(direct, "index")
        once = direct.history.step(direct.head).metrics
    finally:
        direct.close()
    assert chained["percent_indexed"] > 95
    assert chained["percent_indexed"] == pytest.approx(once["percent_indexed"], abs=1e-6)
    assert np.allclose(chained["cell_1"], once["cell_1"], atol=1e-3)


def test_from_current_starts_from_the_refined_models(after_failed_index):
    s = after_failed_index
    refined = _detector_origins(s.state.experiments)
    r = run_ok(s, f"import {AXIS} from=current")
    assert "current step 2" in r.text
    assert np.allclose(_detector_origins(s.state.experiments), refined)
    assert not np.allclose(refined, _detector_origins(s.state_at(1).experiments), atol=1.0)


def test_overrides_chain_from_the_last_import(after_failed_index):
    s = after_failed_index
    first = run_ok(s, f"import {AXIS}").step
    r = run_ok(s, "import distance=1900")
    assert f"current step {first} (its last import)" in r.text
    e = s.state.experiments[0]
    assert e.detector[0].distance == pytest.approx(1900.0, abs=1e-6)
    assert np.allclose(e.goniometer.rotation_axis,
                       np.array([-107, -122, 0]) / np.hypot(107, 122), atol=1e-9)


def test_bad_from_is_a_clear_error_and_changes_nothing(after_failed_index):
    s = after_failed_index
    head, n = s.head, len(s.history.steps())
    r = s.run_line(f"import {AXIS} from=header")
    assert not r.ok and "imported" in r.text and "current" in r.text
    assert s.head == head and len(s.history.steps()) == n
