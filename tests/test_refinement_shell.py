"""The refine command: DIALS's RMSDs on real data, bad input leaves the session as it was."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.io.dials_refl import read_refl
from gonio.core.reflection_table import Flags


def _rmsd_px(table, rows):
    d = (table["xyzcal.px"] - table["xyzobs.px.value"])[rows]
    return np.sqrt(np.mean(d**2, axis=0))


def test_x4_static_refinement_reaches_dials_rmsds(x4_session):
    s, folder = x4_session
    r = s.run_line("refine")  # 9 images: Auto stays static
    assert r.ok, r.text
    assert "Scan-varying" not in r.text and "Static refinement steps" in r.text
    dials = read_refl(folder / "indexed.refl")
    used = dials.get_flags(Flags.used_in_refinement)
    ours = s.state.reflections["indexed"]
    assert len(ours) == len(dials)
    mine, theirs = _rmsd_px(ours, used), _rmsd_px(dials, used)
    assert np.all(mine <= 1.05 * theirs), (mine, theirs)
    m = s.history.step(s.head).metrics
    assert m["scan_varying"] is False and len(m["cell"]) == 6
    assert "Refined parameters" in r.text and "Detector1Dist" in r.text


@pytest.mark.parametrize("line, message", [
    ("refine scan_varying=True absolute_num_intervals=5", "too short for a scan-varying model"),
    ("refine crystal.fix=all detector.fix=all beam.fix=all goniometer.fix=all",
     "nothing to refine"),
    ("refine outlier.algorithm=mahalanobis", "mahalanobis"),
    ("refine scan_varying=True unit_cell.force_static=True orientation.force_static=True",
     "nothing varies"),
])
def test_bad_input_is_one_clear_error_and_changes_nothing(x4_session, line, message):
    s, _ = x4_session
    head, n_steps = s.head, len(s.history.steps()) if hasattr(s.history, "steps") else None
    before = s.state.experiments[0].crystal.A.copy()
    r = s.run_line(line)
    assert not r.ok and message in r.text
    assert "Traceback" not in r.text
    assert s.head == head
    if n_steps is not None:
        assert len(s.history.steps()) == n_steps
    assert np.array_equal(s.state.experiments[0].crystal.A, before)


def test_a_plot_over_a_file_of_another_kind_is_refused_before_refining(x4_session):
    s, _ = x4_session
    head = s.head
    mine = s.folder / "scan_varying_model.png"
    mine.write_text("my notes")
    try:
        r = s.run_line("refine plot=True")
        assert not r.ok and "scan_varying_model.png already exists" in r.text
        assert "Refined parameters" not in r.text and s.head == head
        assert mine.read_text() == "my notes"
    finally:
        mine.unlink()


def test_refine_before_index_says_to_index(tmp_path):
    from gonio.shell.session import Session

    s = Session(tmp_path)
    try:
        r = s.run_line("refine")
        assert not r.ok and "run index first" in r.text
    finally:
        s.close()
