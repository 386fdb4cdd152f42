"""Bad input to symmetry: one-paragraph errors, and the session stays as it was."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.io.dials_expt import write_expt
from gonio.core.io.dials_refl import write_refl
from gonio.core.models.crystal import Crystal
from gonio.core.symmetry import SymmetryInputError, SymmetryParams, determine_symmetry
from gonio.core.symmetry.synthetic import simulate_integrated
from gonio.shell.session import Session


def _session_with(tmp_path, n_obs=None, d_min=4.0):
    expts, table, _ = simulate_integrated("P 21 21 21", (41, 55, 68, 90, 90, 90), d_min=d_min,
                                          seed=5, n_obs=n_obs)
    write_expt(expts, tmp_path / "integrated.expt")
    write_refl(table, tmp_path / "integrated.refl")
    s = Session(tmp_path)
    r = s.run_line("import integrated.expt integrated.refl")
    assert r.ok, r.text
    return s


def _fails(s, line, *words):
    head, n = s.head, len(s.history.steps())
    r = s.run_line(line)
    assert not r.ok, r.text
    for w in words:
        assert w in r.text, r.text
    assert "Traceback" not in r.text and r.text.count("\n") <= 2
    assert s.head == head and len(s.history.steps()) == n
    return r.text


def test_symmetry_before_integrate(tmp_path):
    s = Session(tmp_path)
    try:
        _fails(s, "symmetry", "integrate first")
        assert s.head is None
    finally:
        s.close()


def test_bad_values_leave_the_session_unchanged(tmp_path):
    s = _session_with(tmp_path)
    try:
        _fails(s, "symmetry lattice_symmetry_max_delta=-1", "lattice_symmetry_max_delta")
        _fails(s, "symmetry d_min=100", "d_min", "leaves no reflections")
        _fails(s, "symmetry d_min=40", "d_min=40", "unique reflections")
        _fails(s, "symmetry d_min=0", "d_min")
        _fails(s, "symmetry systematic_absences.method=fourier", "method")
        assert list(s.state.reflections) == ["integrated"]
        r = s.run_line("symmetry")  # and it still works afterwards
        assert r.ok, r.text
    finally:
        s.close()


def test_too_few_reflections(tmp_path):
    s = _session_with(tmp_path, n_obs=12, d_min=6.0)
    try:
        _fails(s, "symmetry", "too few")
    finally:
        s.close()


def test_core_errors():
    expts, table, _ = simulate_integrated("P 21 21 21", (41, 55, 68, 90, 90, 90), d_min=5.0,
                                          seed=1, n_experiments=2)
    with pytest.raises(SymmetryInputError, match="lattice_symmetry_max_delta"):
        determine_symmetry(expts, table, SymmetryParams(lattice_symmetry_max_delta=-0.5))
    with pytest.raises(SymmetryInputError, match="d_min"):
        determine_symmetry(expts, table, SymmetryParams(d_min=-2.0))
    # a second crystal form among the experiments
    other = Crystal.from_cell_and_U(gemmi.UnitCell(41, 70, 68, 90, 90, 90), np.eye(3))
    expts[1] = expts[1].replace(crystal=other)
    with pytest.raises(SymmetryInputError, match="one crystal form"):
        determine_symmetry(expts, table)
    # nothing integrated
    flags = table["flags"].copy()
    table["flags"] = np.zeros_like(flags)
    with pytest.raises(SymmetryInputError, match="integrate first"):
        determine_symmetry(expts[:1], table)
