"""Space group from screw-axis absences (dials.symmetry systematic_absences, method=direct)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.symmetry import SymmetryParams, determine_symmetry
from gonio.core.symmetry.absences import (
    ScrewAxisTest,
    candidate_space_groups,
    check_absences,
    score_axis_direct,
)
from gonio.core.symmetry.synthetic import simulate_integrated


def _run(name, cell, seed=0, d_min=4.0):
    """Data indexed in a primitive cell (P 1), as integrate leaves them."""
    op = gemmi.SpaceGroup(name).centred_to_primitive()
    P = np.array(op.rot, dtype=float) / op.DEN
    expts, table, _ = simulate_integrated(name, cell, d_min=d_min, seed=seed, P=P)
    return determine_symmetry(expts, table)


@pytest.mark.parametrize("name,cell,allowed,pair", [
    ("P 43 21 2", (58, 58, 90, 90, 90, 90), {"P 41 21 2", "P 43 21 2"}, True),
    ("P 41", (55, 55, 80, 90, 90, 90), {"P 41", "P 43"}, True),
    ("P 43", (52, 52, 84, 90, 90, 90), {"P 41", "P 43"}, True),
    ("P 42 21 2", (60, 60, 70, 90, 90, 90), {"P 42 21 2"}, False),
    ("P 61", (60, 60, 75, 90, 90, 120), {"P 61", "P 65"}, True),
    ("P 63", (60, 60, 75, 90, 90, 120), {"P 63"}, False),
    ("P 21 21 21", (41, 55, 68, 90, 90, 90), {"P 21 21 21"}, False),
    ("P 21 21 2", (41, 55, 68, 90, 90, 90), {"P 21 21 2"}, False),
    ("P 1 21 1", (45, 62, 71, 90, 104, 90), {"P 1 21 1"}, False),
    ("P 4 2 2", (58, 58, 90, 90, 90, 90), {"P 4 2 2"}, False),
    ("C 2 2 21", (50, 90, 70, 90, 90, 90), {"C 2 2 21"}, False),
    ("I 41", (60, 60, 85, 90, 90, 90), {"I 41"}, False),
])
def test_screw_axes_from_their_absences(name, cell, allowed, pair):
    expts, table, res = _run(name, cell)
    a = res.absences
    assert res.space_group.xhm() in allowed, (res.space_group.xhm(), [
        (t.name, t.score) for t in a.tests])
    assert a.enantiomorphic == pair
    if pair:
        assert {res.space_group.xhm(), *(sg.xhm() for sg in a.equivalent)} == allowed
    # in the chosen space group every systematically absent reflection is truly absent
    ops = res.space_group.operations()
    h = np.ascontiguousarray(table["miller_index"], dtype=np.int32)
    absent = np.asarray(ops.systematic_absences(h), dtype=bool)
    assert np.all(np.asarray(table["intensity.true"])[absent] == 0)
    assert expts[0].crystal.space_group.xhm() == res.space_group.xhm()


def test_p43212_says_the_pair_cannot_be_split():
    from gonio.shell.commands.symmetry import absences_text

    _, _, res = _run("P 43 21 2", (58, 58, 90, 90, 90, 90), seed=4)
    text = absences_text(res.absences)
    assert "enantiomorphic pair" in text
    names = {t.name for t in res.absences.tests}
    assert names == {"41c", "42c", "21a"}
    scores = {t.name: t.score for t in res.absences.tests}
    assert scores["41c"] > 0.95 and scores["21a"] > 0.95


def test_screw_along_a_in_a_nonstandard_setting():
    """P 21 2 2 (the screw along a) is kept in its setting, as DIALS lists it."""
    _, _, res = _run("P 21 2 2", (41, 55, 68, 90, 90, 90))
    assert res.space_group.xhm() == "P 21 2 2"


def test_without_axial_reflections_no_screw_is_claimed():
    """Data that miss the axes cannot show absences: the scores are 0 and the space
    group is the one without screws (P 4 2 2 for P 43 21 2 data)."""
    expts, table, _ = simulate_integrated("P 43 21 2", (58, 58, 90, 90, 90, 90), d_min=4.0,
                                          seed=2)
    h = np.asarray(table["miller_index"])
    axial = (np.count_nonzero(h, axis=1) == 1)
    _, _, res = determine_symmetry(expts, table.select(~axial))
    assert all(t.n_absent == 0 or t.n_present == 0 for t in res.absences.tests)
    assert res.space_group.xhm() == "P 4 2 2"
    _, _, res = determine_symmetry(expts, table, SymmetryParams(check_absences=False))
    assert res.space_group.xhm() == "P 4 2 2" and res.absences is None


def test_direct_score_follows_dials_rules():
    t = ScrewAxisTest("21c", [2], 2)
    l = np.arange(1, 21)
    strong = np.where(l % 2 == 0, 30.0, 0.1)
    assert score_axis_direct(t, l, strong, strong * 10, 0.95) == pytest.approx(1.0)
    assert t.n_present == 10 and t.n_absent == 10
    flat = np.full(20, 30.0)
    assert score_axis_direct(t, l, flat, flat, 0.95) == pytest.approx(0.0)
    weak = np.full(20, 0.5)  # nothing significant anywhere: no evidence
    assert score_axis_direct(t, l, weak, weak, 0.95) == 0.0
    # one outlier among the absences (mean 1.8 > 1.645, but the present ones are over 20x
    # stronger) is discounted when the rest are ~0
    outlier = np.where(l % 2 == 0, 40.0, 0.0)
    outlier[0] = 18.0
    assert score_axis_direct(t, l, outlier, outlier, 0.95) == pytest.approx(1.0)
    assert "outlier" in t.note


def test_candidates_come_from_gemmi_tables():
    names = [sg.xhm() for sg in candidate_space_groups(gemmi.SpaceGroup("P 4 2 2"))]
    assert set(names) == {"P 4 2 2", "P 4 21 2", "P 41 2 2", "P 42 2 2", "P 43 2 2",
                          "P 41 21 2", "P 42 21 2", "P 43 21 2"}
    names = [sg.xhm() for sg in candidate_space_groups(gemmi.SpaceGroup("I 2 2 2"))]
    assert names == ["I 2 2 2", "I 21 21 21"]


def test_same_absences_are_reported_for_i222():
    h = np.array([[2, 0, 0], [4, 0, 0], [0, 2, 0], [0, 0, 2], [1, 1, 0]])
    a = check_absences(h, np.ones(5) * 10, np.ones(5), gemmi.SpaceGroup("I m m m"),
                       gemmi.SpaceGroup("I 2 2 2"))
    assert a.tests == [] and a.best.xhm() == "I 2 2 2"
    assert [sg.xhm() for sg in a.equivalent] == ["I 21 21 21"]


def test_i222_output_names_both_groups():
    from gonio.shell.commands.symmetry import absences_text

    _, _, res = _run("I 2 2 2", (52, 61, 73, 90, 90, 90))
    text = absences_text(res.absences)
    assert "No screw axes to check" in text and "I 21 21 21" in text
    assert res.space_group.xhm() == "I 2 2 2"


def test_an_axis_without_its_would_be_absent_reflections_is_said_to_be_undecided():
    """A sweep that measured only even h00 (as a 120-image simulated lysozyme sweep does):
    the 2_1 along a cannot be judged, and the output says so instead of implying absence."""
    t = ScrewAxisTest("21a", [2], 2)
    h = np.array([2, 4, 6])
    i_over_sigma = np.full(3, 30.0)
    assert score_axis_direct(t, h, i_over_sigma, i_over_sigma * 10, 0.95) == 0.0
    assert t.n_absent == 0 and "cannot tell" in t.note
