"""Symmetry of real DIALS data: L-cysteine, four sweeps (P 21 21 21) and two wedges (mmm).

The four-sweep files carry DIALS's point group P 2 2 2; the screw axes must come from
the absences of the unscaled profile-fitted intensities (the scaled column and the
scaling outliers are not used).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import data_path

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable
from gonio.core.symmetry import determine_symmetry
from gonio.shell.session import Session

LCYS = ("scaled_20_25", "scaled_30", "scaled_35")


def load_pairs(folder, names):
    experiments, tables = ExperimentList(), []
    for n in names:
        e = read_expt(folder / f"{n}.expt")
        t = read_refl(folder / f"{n}.refl")
        t["id"] = t["id"] + len(experiments)
        experiments.extend(e)
        tables.append(t)
    return experiments, ReflectionTable.concatenate(tables)


def load_lcys():
    return load_pairs(data_path("l_cysteine_4_sweeps_scaled"), LCYS)


def test_lcysteine_four_sweeps_is_p212121():
    experiments, table = load_lcys()
    assert len(experiments) == 4
    new_expts, new_table, res = determine_symmetry(experiments, table)
    assert res.intensity_column == "prf"
    assert res.laue_group.xhm() == "P m m m"
    assert res.laue.best.likelihood > 0.9 and res.laue.best.confidence > 0.9
    # every twofold (and the identity) is clearly present
    assert all(e.cc.cc > 0.9 and e.n_refs > 1000 for e in res.laue.elements)
    assert res.space_group.xhm() == "P 21 21 21"
    scores = {t.name: t.score for t in res.absences.tests}
    assert scores == pytest.approx({"21a": 1.0, "21b": 1.0, "21c": 1.0}, abs=1e-3)
    # the odd axial reflections are absent (<I/sigma> near 0), the even ones strong
    for t in res.absences.tests:
        assert abs(t.mean_i_sigma_abs) < 1.5 and t.mean_i_sigma > 20
    assert res.cb_op == "a,b,c"
    assert all(e.crystal.space_group.xhm() == "P 21 21 21" for e in new_expts)
    assert np.array_equal(new_table["miller_index"], table["miller_index"])


def test_lcysteine_wedges_mmm():
    """Two 1-degree wedges: 36 profile-fitted reflections with partiality >= 0.4 and no
    symmetry-related pairs. The lattice group P m m m is kept (as DIALS does, the highest
    group first when nothing tells the groups apart) and the note says so."""
    from gonio.shell.commands.symmetry import laue_group_text

    experiments, table = load_pairs(data_path("l_cysteine_wedges"),
                                    ("11_integrated", "23_integrated"))
    _, _, res = determine_symmetry(experiments, table)
    assert res.laue.lattice.lattice_group.patterson_group.xhm() == "P m m m"
    assert res.laue_group.xhm() == "P m m m"
    assert res.n_observations == 36
    assert "cannot tell the Laue groups apart" in laue_group_text(res)
    assert res.space_group.xhm() == "P 2 2 2"


def test_shell_import_four_sweeps_then_symmetry_then_save(tmp_path):
    folder = data_path("l_cysteine_4_sweeps_scaled")
    for n in LCYS:
        for ext in (".expt", ".refl"):
            shutil.copy(folder / f"{n}{ext}", tmp_path / f"{n}{ext}")
    s = Session(tmp_path)
    try:
        r = s.run_line("import " + " ".join(f"{n}.expt {n}.refl" for n in LCYS))
        assert r.ok, r.text
        assert len(s.state.experiments) == 4
        r = s.run_line("symmetry")
        assert r.ok, r.text
        for words in ("Scoring individual symmetry elements", "Scoring all possible sub-groups",
                      "Best solution: P m m m", "Recommended space group: P 21 21 21",
                      "21a", "Laue group confidence"):
            assert words in r.text
        m = s.history.step(s.head).metrics
        assert m["laue_group"] == "P m m m" and m["space_group"] == "P 21 21 21"
        assert m["confidence"] > 0.9 and m["cb_op"] == "a,b,c"
        assert s.state.newest_table == "symmetrized"
        assert all(e.crystal.space_group.xhm() == "P 21 21 21" for e in s.state.experiments)
        r = s.run_line("symmetry")  # again, on the symmetrized table: nothing changes
        assert r.ok and "Recommended space group: P 21 21 21" in r.text, r.text
        names = list(s.state.reflections)  # the imported table (integrated or scaled) stays
        assert len(names) == 2 and names[-1] == "symmetrized", names
        r = s.run_line("save")
        assert r.ok and "symmetrized.expt" in r.text, r.text
        assert read_expt(tmp_path / "symmetrized.expt")[0].crystal.space_group.xhm() == \
            "P 21 21 21"
        assert len(read_refl(tmp_path / "symmetrized.refl")) == 20743
    finally:
        s.close()
