"""refine_bravais_settings on real and simulated indexed sweeps, with gonio's refinement."""

from __future__ import annotations

import copy
from pathlib import Path

import gemmi
import numpy as np
import pytest

from gonio.core.lattice.bravais import find_bravais_settings
from gonio.core.lattice.change_of_basis import transform_cell
from gonio.core.lattice.rbs import (
    RbsError,
    RbsParams,
    RbsSolution,
    identify_likely_solutions,
    refine_bravais_settings,
    select_solution,
)
from gonio.core.lattice.reindex import reindex
from gonio.core.lattice.symmetry_cc import SymmetryCC, symmetry_correlation
from gonio.core.models.crystal import Crystal
from gonio.core.models.experiment import ExperimentList
from gonio.core.models.scan import Scan
from gonio.core.reflection_table import Flags, ReflectionTable

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "x4_xds"


def _load_x4():
    if not (DATA / "indexed.expt").exists():
        pytest.skip(f"real test data not found at {DATA}")
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl

    return read_expt(DATA / "indexed.expt"), read_refl(DATA / "indexed.refl")


@pytest.fixture(scope="module")
def x4_p1_random():
    """The DIALS P 4 2 2 solution taken to P 1 and a non-reduced random setting."""
    expts, refl = _load_x4()
    e1, r1 = reindex(expts, refl, space_group="P1")
    return reindex(e1, r1, "a+b,b,-a+c")


@pytest.fixture(scope="module")
def x4_result(x4_p1_random):
    return refine_bravais_settings(*x4_p1_random, RbsParams())


def test_x4_tetragonal_solution_recommended(x4_result, x4_p1_random):
    res = x4_result
    # 42.2/39.7 A: pseudo-cubic at ~3.5 deg, so 22 candidates as for a cubic lattice
    assert len(res.solutions) == 22
    assert [s.number for s in res.solutions] == list(range(22, 0, -1))
    tp = [s for s in res.solutions if s.lattice == "tP" and s.metric_fit_deg < 0.1]
    assert len(tp) == 1
    tp = tp[0]
    assert tp.recommended
    a, b, c = tp.unit_cell.parameters[:3]
    assert a == pytest.approx(42.45, rel=0.01) and b == pytest.approx(a, rel=1e-9)
    assert c == pytest.approx(39.80, rel=0.01)
    assert tp.crystal.space_group.hm == "P 4"
    assert tp.rmsd_mm < 0.15 and tp.n_spots > 400
    # the highest-symmetry recommended solution is the tetragonal one; pseudo-cubic rejected
    best = max(res.recommended, key=lambda s: s.number)
    assert best is tp
    cubic = next(s for s in res.solutions if s.lattice == "cP")
    assert not cubic.recommended and cubic.metric_fit_deg == pytest.approx(3.5, abs=0.1)
    assert cubic.rmsd_mm > 5 * tp.rmsd_mm
    # every solution with metric fit 0 is recommended (rmsd within 1.5 x P1)
    assert all(s.recommended for s in res.solutions if s.metric_fit_deg < 0.5)
    # P1 solution: numbered 1, rmsd that of a free triclinic refinement
    p1 = select_solution(res, 1)
    assert p1.lattice == "aP" and p1.rmsd_mm <= tp.rmsd_mm * 1.05


def test_x4_reindexed_indices_match_dials(x4_result):
    """The tP solution's indices equal DIALS's P 4 2 2 ones up to an operator of 4/mmm."""
    expts, refl = _load_x4()
    tp = next(s for s in x4_result.solutions if s.lattice == "tP" and s.metric_fit_deg < 0.1)
    sel = refl["id"] >= 0
    h_dials = refl["miller_index"][sel].astype(float)
    h_tp = tp.reflections["miller_index"].astype(float)
    assert len(h_tp) == len(h_dials)
    R = np.linalg.lstsq(h_dials, h_tp, rcond=None)[0]
    assert np.abs(R - np.rint(R)).max() < 1e-9
    R = np.rint(R)
    ops = {tuple(np.array(op.rot).ravel() // 24) for op in gemmi.SpaceGroup("P 4/m m m").operations().sym_ops}
    assert tuple(R.T.astype(int).ravel()) in ops or tuple(R.astype(int).ravel()) in ops


def test_table_rows(x4_result):
    rows = x4_result.table()
    assert len(rows) == 22 and len(rows[0]) == len(x4_result.headers) == 9
    tp_row = next(r for r in rows if r[5] == "tP" and r[1] == "0.0000")
    assert tp_row[0].startswith("*")
    assert tp_row[8] == next(s.cb_op for s in x4_result.solutions if s.lattice == "tP"
                             and s.metric_fit_deg < 0.1)
    d = x4_result.as_dict()
    assert set(d) == {str(n) for n in range(1, 23)}
    assert "P41212" in d[tp_row[0].strip("* ")]["chiral_space_groups"]


def test_select_solution_errors(x4_result):
    assert select_solution(x4_result, 22).number == 22
    with pytest.raises(RbsError, match="no solution 23"):
        select_solution(x4_result, 23)
    with pytest.raises(RbsError, match="no solution 0"):
        select_solution(x4_result, 0)


def test_rbs_before_index_and_bad_input(x4_p1_random):
    expts, refl = x4_p1_random
    bare = ExperimentList([e.replace(crystal=None) for e in expts])
    with pytest.raises(RbsError, match="Run index first"):
        refine_bravais_settings(bare, refl)
    no_hkl = refl.copy()
    del no_hkl["miller_index"]
    with pytest.raises(RbsError, match="run index first"):
        refine_bravais_settings(expts, no_hkl)
    with pytest.raises(RbsError, match="experiment_id=3"):
        refine_bravais_settings(expts, refl, RbsParams(experiment_id=3))
    e4, r4 = reindex(expts, refl, space_group="P1")
    e4[0].crystal = e4[0].crystal.replace(space_group=gemmi.SpaceGroup("P 2"))
    with pytest.raises(RbsError, match="starts from the P1 solution"):
        refine_bravais_settings(e4, r4)


def test_multi_lattice_needs_experiment_id(x4_p1_random):
    expts, refl = x4_p1_random
    e2 = copy.deepcopy(expts[0])
    e2.identifier = "second"
    e2.crystal = e2.crystal.replace(A=e2.crystal.A @ np.diag([1.0, 1.1, 1.2]))
    two = ExperimentList([expts[0], e2])
    r2 = refl.select(refl["id"] >= 0)
    both = ReflectionTable.concatenate([r2, r2])
    ids = np.concatenate([np.zeros(len(r2)), np.ones(len(r2))]).astype(np.int32)
    both["id"] = ids
    both.experiment_identifiers = {0: expts[0].identifier, 1: "second"}
    with pytest.raises(RbsError, match="experiment_id="):
        refine_bravais_settings(two, both)
    calls = []

    def stand_in(ex, rf):  # records what it was given; perfect fit
        calls.append((len(ex), len(rf), tuple(sorted(set(rf["id"].tolist())))))
        out = rf.copy()
        out["xyzcal.mm"] = out["xyzobs.mm.value"] + 0.01
        out.set_flags(np.ones(len(out), bool), Flags.used_in_refinement)
        return ex, out, None

    res = refine_bravais_settings(two, both, RbsParams(experiment_id=0, max_delta=1.0),
                                  refine_fn=stand_in)
    assert set(calls) == {(1, len(r2), (0,))}  # only lattice 0, renumbered id 0
    assert res.solutions[0].lattice == "tP" and res.experiment_id == 0


def _solution(number, fit, rmsd, min_cc):
    cc = None if min_cc is None else SymmetryCC(["x,y,z", "-x,-y,z"], np.array([1.0, min_cc]),
                                                np.array([100, 50]))
    setting = find_bravais_settings(gemmi.UnitCell(10, 11, 12, 90, 90, 90), 1.0)[0]
    s = RbsSolution(number, setting, None, None, rmsd, 10, cc)
    s.setting = copy.copy(setting)
    s.setting.metric_fit_deg = fit
    return s


@pytest.mark.parametrize("fit, rmsd, min_cc, expected", [
    (0.0, 0.149, None, True),   # metric fit < 0.5: rmsd up to 1.5 x P1 always fine
    (0.0, 0.151, None, False),  # ... beyond, only with a min cc >= 0.5
    (0.0, 0.40, 0.5, True),
    (0.0, 0.40, 0.49, False),
    (1.0, 0.19, None, True),    # metric fit >= 0.5: rmsd up to 2 x P1 ...
    (1.0, 0.21, 0.69, False),   # ... beyond needs min cc >= 0.7
    (1.0, 0.29, 0.7, True),     # ... and then up to 3 x P1
    (1.0, 0.31, 0.9, False),
])
def test_recommendation_rule(fit, rmsd, min_cc, expected):
    p1 = _solution(1, 0.0, 0.1, None)
    s = _solution(2, fit, rmsd, min_cc)
    identify_likely_solutions([s, p1])
    assert s.recommended is expected and p1.recommended


def test_symmetry_cc_synthetic():
    rng = np.random.default_rng(3)
    g = np.arange(-6, 7)
    hkl = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T
    hkl = hkl[np.any(hkl != 0, axis=1)]
    # intensities invariant under the 4-fold about c (P4), not under the 422 twofolds
    rots = [np.array(op.rot) // op.DEN for op in gemmi.SpaceGroup("P 4").operations().sym_ops]
    keys = np.max([((hkl @ R + 64) * [1 << 14, 1 << 7, 1]).sum(axis=1) for R in rots], axis=0)
    _, cls = np.unique(keys, return_inverse=True)
    values = rng.exponential(10.0, cls.max() + 1)[cls]
    res = symmetry_correlation(hkl, values, gemmi.SpaceGroup("P 4 2 2"))
    assert res.operators[0] == "x,y,z" and res.cc[0] == pytest.approx(1.0)
    by_op = dict(zip(res.operators, res.cc))
    for op in ("-y,x,z", "-x,-y,z", "y,-x,z"):
        assert by_op[op] == pytest.approx(1.0)
    for op in ("x,-y,-z", "y,x,-z"):
        assert abs(by_op[op]) < 0.2
    assert res.max_cc == pytest.approx(1.0) and res.min_cc < 0.2
    assert np.all(res.n_pairs == len(hkl))


# -- simulated sweeps: the truth is the highest-symmetry recommended solution -------------

H, T = 0.5, 1.0 / 3.0
TO_PRIMITIVE = {  # columns: a primitive basis of the centred lattice (as test_lattice_bravais)
    "C": np.array([[H, -H, 0], [H, H, 0], [0, 0, 1]]),
    "I": np.array([[-H, H, H], [H, -H, H], [H, H, -H]]),
    "R": np.array([[2 * T, -T, -T], [T, T, -2 * T], [T, T, T]]),
}


def random_setting(conv: gemmi.UnitCell, centring: str, seed: int) -> gemmi.UnitCell:
    rng = np.random.default_rng(seed)
    while True:
        Q = rng.integers(-2, 3, (3, 3))
        if round(np.linalg.det(Q)) == 1:
            return transform_cell(transform_cell(conv, TO_PRIMITIVE[centring]), Q)


SIMULATED = {  # lattice: conventional cell, centring
    "oC": ((40, 90, 60, 90, 90, 90), "C"),
    "mC": ((99.06, 31.01, 54.30, 90, 107.7, 90), "C"),
    "hR": ((60, 60, 100, 90, 90, 120), "R"),
    "tI": ((50, 50, 80, 90, 90, 90), "I"),
}


def _simulated_sweep(lattice: str, seed: int = 0):
    from gonio.core.prediction.rotation import predict_rotation

    expts, _ = _load_x4()
    rng = np.random.default_rng(seed)
    conv, centring = SIMULATED[lattice]
    cell = random_setting(gemmi.UnitCell(*conv), centring, seed + 11)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    U = q * np.sign(np.linalg.det(q))
    e = expts[0].replace(crystal=Crystal.from_cell_and_U(cell, U),
                         scan=Scan(image_range=(1, 150), oscillation=(0.0, 0.2)))
    t = predict_rotation(e, d_min=2.5)
    n = len(t)
    t["xyzobs.mm.value"] = t["xyzcal.mm"] + rng.normal(0, [0.03, 0.03, 2e-4], (n, 3))
    t["xyzobs.mm.variance"] = np.tile([0.03 ** 2, 0.03 ** 2, 4e-8], (n, 1))
    t["xyzobs.px.value"] = t["xyzcal.px"]
    t.set_flags(np.ones(n, bool), Flags.indexed | Flags.strong)
    del t["xyzcal.mm"]
    return ExperimentList([e]), t


@pytest.mark.parametrize("lattice", list(SIMULATED))
def test_simulated_truth_is_best_recommended(lattice):
    expts, refl = _simulated_sweep(lattice)
    res = refine_bravais_settings(expts, refl, RbsParams())
    family = {"mC": {"mC", "mI"}}.get(lattice, {lattice})  # mI: the I2 cell of mC
    truth = [s for s in res.solutions if s.lattice in family]
    assert truth and truth[0].recommended
    best = max(res.recommended, key=lambda s: s.number)
    assert best.lattice in family and best.metric_fit_deg < 0.05
    conv, centring = SIMULATED[lattice]
    expected = find_bravais_settings(transform_cell(gemmi.UnitCell(*conv), TO_PRIMITIVE[centring]))[0]
    assert np.allclose(best.unit_cell.parameters, expected.ideal_cell.parameters, atol=0.1)
