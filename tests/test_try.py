"""try: what-if branches from the current step, compared in one table (MyD88)."""

from __future__ import annotations

import pytest
from conftest import data_path, run_ok


@pytest.fixture
def imported(session):
    d = data_path("myd88")
    run_ok(session, f"import {d / 'imported.expt'} {d / 'strong.refl'}")
    return session


def _row(text, value):
    return next(line for line in text.splitlines() if value in line and "|" not in line)


def test_try_distances_costs_one_step_per_value_and_leaves_the_head(imported):
    s = imported
    start, n = s.head, len(s.history.steps())
    r = run_ok(s, "try import distance=1762|1900|2193")
    assert s.head == start
    steps = s.history.steps()
    assert len(steps) == n + 3
    branches = s.history.children(start)
    assert [b.line for b in branches] == [f"import distance={d}" for d in (1762, 1900, 2193)]
    for b, d in zip(branches, (1762.0, 1900.0, 2193.0)):
        assert s.state_at(b.id).experiments[0].detector[0].distance == pytest.approx(d)
    assert f"back at step {start}" in r.text
    # ordinary steps: diff, goto and undo work on them
    assert run_ok(s, f"diff {branches[0].id} {branches[2].id}").text
    run_ok(s, f"goto {branches[1].id}")
    assert s.state.experiments[0].detector[0].distance == pytest.approx(1900.0)
    run_ok(s, "undo")
    assert s.head == start


@pytest.mark.slow
def test_try_axis_and_sense_picks_the_right_sense_by_rmsd_z(imported):
    s = imported
    start = s.head
    r = run_ok(s, "try index goniometer.axis=-107,-122,0|107,122,0")
    assert s.head == start
    # the axis goes to an import from the imported models, then index: two steps a branch
    right, wrong = _row(r.text, "-107,-122,0"), _row(r.text, "107,122,0 ")
    assert right.startswith("*") and not wrong.startswith("*")
    tips = [c for c in s.history.children(start)]
    assert len(tips) == 2
    metrics = [s.history.step(s.history.children(t.id)[0].id).metrics for t in tips]
    assert all(m["percent_indexed"] > 95 for m in metrics)
    # the same X/Y fit, but the wrong sense is clearly worse in the rotation direction
    assert metrics[1]["rmsd_z_images"] > 1.4 * metrics[0]["rmsd_z_images"]
    assert "best by the highest % indexed" in r.text


@pytest.mark.parametrize("line,message", [
    ("try", "needs a command"),
    ("try index", "varies no parameter"),
    ("try import distance=1900", "varies no parameter"),
    ("try import distance=abc|1900", "distance=abc"),
    ("try import distance=1900||2193", "non-empty values"),
    ("try import distance=1762|1900 wavelength=0.1|0.2", "2 parameters"),
    ("try import distance=1762|1900 then", "after every 'then'"),
    ("try undo distance=1762|1900", "make steps"),
    ("try import goniometer.axis=1,2|1,2,3", "3 numbers"),
])
def test_bad_try_is_one_paragraph_and_changes_nothing(imported, line, message):
    s = imported
    head, n = s.head, len(s.history.steps())
    r = s.run_line(line)
    assert not r.ok and message in r.text, r.text
    assert "\n" not in r.text.strip()
    assert s.head == head and len(s.history.steps()) == n


def test_branches_that_fail_are_reported_and_record_nothing(imported):
    """MyD88's images are not in the test data: findspots fails on every branch."""
    s = imported
    head, n = s.head, len(s.history.steps())
    r = run_ok(s, "try findspots d_min=2|3")
    assert "failed" in r.text and "2" in _row(r.text, "  2 ") and "best" not in r.text
    assert s.head == head and len(s.history.steps()) == n
