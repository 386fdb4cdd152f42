"""Unit-cell restraints: tie_to_target and tie_to_group, on the line and in a .phil file."""

from __future__ import annotations

import numpy as np
import pytest
from test_indexing_synthetic import make_experiment, strong_spots

from gonio.core.geometry.spots import centroid_px_to_mm
from gonio.core.refinement import refine
from gonio.core.refinement.params import RefineParams
from gonio.core.refinement.restraints import RestraintError

CELL = (52.0, 61.0, 73.0, 90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def data():
    truth = make_experiment(CELL, "P 21 21 21", n_images=60, seed=5)
    refl, hkl, _ = strong_spots(truth, 3.0)
    refl["miller_index"] = hkl
    centroid_px_to_mm(truth, refl)
    return truth, refl


def test_tie_to_target_pulls_the_cell_by_its_weight(data):
    truth, refl = data
    target = (52.5, 61.0, 73.0, 90, 90, 90)  # a 1 % longer than the data say
    free, _, _ = refine(truth, refl, RefineParams(scan_varying=False))
    a_free = free[0].crystal.unit_cell.a
    assert a_free == pytest.approx(52.0, rel=2e-4)
    tight, _, _ = refine(truth, refl, RefineParams(
        scan_varying=False, tie_to_target_values=target,
        tie_to_target_sigmas=(0.0001, 0.0001, 0.0001, 0, 0, 0)))
    assert tight[0].crystal.unit_cell.a == pytest.approx(52.5, abs=0.01)
    loose, _, _ = refine(truth, refl, RefineParams(
        scan_varying=False, tie_to_target_values=target,
        tie_to_target_sigmas=(10.0, 10.0, 10.0, 0, 0, 0)))
    assert loose[0].crystal.unit_cell.a == pytest.approx(a_free, abs=0.002)


def test_tie_to_group_brings_two_crystals_together(data):
    truth, refl = data
    from gonio.core.models.experiment import ExperimentList

    e = truth[0]
    other = e.crystal.replace(A=e.crystal.A / 1.01)  # the same spots, a 1 % larger cell
    two = ExperimentList([e, e.replace(crystal=other)])
    table = refl.copy()
    half = np.arange(len(table)) % 2 == 1
    table["id"] = half.astype(np.int32)
    # the second experiment's spots are those of the first crystal: its cell refines back
    apart, _, _ = refine(two, table, RefineParams(scan_varying=False, crystal_fix=["cell"]))
    gap = abs(apart[0].crystal.unit_cell.a - apart[1].crystal.unit_cell.a)
    assert gap > 0.4
    tied, _, _ = refine(two, table, RefineParams(
        scan_varying=False, crystal_fix=["orientation"],
        tie_to_group_sigmas=(0.001, 0.001, 0.001, 0, 0, 0)))
    assert abs(tied[0].crystal.unit_cell.a - tied[1].crystal.unit_cell.a) < 0.01


@pytest.mark.parametrize("kw, message", [
    (dict(tie_to_target_values=(52, 61, 73, 90, 90), tie_to_target_sigmas=(1,) * 6),
     "six numbers"),
    (dict(tie_to_target_values=(52, 61, 73, 90, 90, 90), tie_to_target_sigmas=(1,) * 4),
     "six numbers"),
    (dict(tie_to_target_values=(52, 61, 73, 90, 90, 90)), "both values"),
    (dict(tie_to_target_values=(52, 61, 73, 90, 90, 90), tie_to_target_sigmas=(1,) * 6,
          crystal_fix=["cell"]), "fixed"),
    (dict(tie_to_group_sigmas=(1,) * 6), "at least two crystals"),
])
def test_bad_restraints_are_clear_errors(data, kw, message):
    truth, refl = data
    with pytest.raises(RestraintError, match=message):
        refine(truth, refl, RefineParams(scan_varying=False, **kw))


def test_restraint_from_a_phil_file_through_the_shell(tmp_path):
    from gonio.core.io.dials_expt import write_expt
    from gonio.core.io.dials_refl import write_refl
    from gonio.core.reflection_table import Flags
    from gonio.shell.session import Session

    truth = make_experiment(CELL, "P 21 21 21", n_images=60, seed=5)
    refl, hkl, _ = strong_spots(truth, 3.0)
    refl["miller_index"] = hkl
    refl.set_flags(np.ones(len(refl), bool), Flags.indexed)
    write_expt(truth, tmp_path / "in.expt")
    write_refl(refl, tmp_path / "in.refl")
    (tmp_path / "restraint.phil").write_text("""
refinement.parameterisation.crystal.unit_cell.restraints {
  tie_to_target {
    values = 52.5 61 73 90 90 90
    sigmas = 0.0001 0.0001 0.0001 0 0 0
  }
}
""")
    (tmp_path / "proc").mkdir()
    s = Session(tmp_path / "proc")
    try:
        r = s.run_line(f"import {tmp_path / 'in.expt'} {tmp_path / 'in.refl'}")
        assert r.ok, r.text
        r = s.run_line(f"refine {tmp_path / 'restraint.phil'}")
        assert r.ok, r.text
        assert s.state.experiments[0].crystal.unit_cell.a == pytest.approx(52.5, abs=0.01)
        head = s.head
        r = s.run_line("refine tie_to_target.values=52,61,73,90,90 "
                       "tie_to_target.sigmas=1,1,1,0,0,0")
        assert not r.ok and s.head == head
        r = s.run_line("refine crystal.fix=cell tie_to_target.values=52,61,73,90,90,90 "
                       "tie_to_target.sigmas=1,1,1,0,0,0")
        assert not r.ok and "fixed" in r.text and s.head == head
    finally:
        s.close()
