"""Laue group determination on synthetic data of every Laue class (dials.symmetry's method).

Each data set is a random Wilson structure in the true space group, observed in P 1
with noise, indexed in an oblique primitive basis (the true cell times a shear, and the
centred-to-primitive change of basis for centred lattices), so the analysis has to
reduce the cell, find the lattice, score the elements and bring the data back to the
conventional setting. The checks: the Laue group is the truth's (gemmi's Patterson
group of the true space group), the most likely by a margin, and after reindexing the
true intensities are identical within every class of equivalents of that group.
"""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.symmetry import SymmetryParams, determine_symmetry
from gonio.core.symmetry.resolution import merge_keys
from gonio.core.symmetry.synthetic import simulate_integrated

SHEAR = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=float)


def patterson_of(sg: gemmi.SpaceGroup) -> gemmi.SpaceGroup:
    ops = sg.operations().derive_symmorphic()
    ops.add_inversion()
    return gemmi.find_spacegroup_by_ops(ops)


def oblique_setting(sg: gemmi.SpaceGroup) -> np.ndarray:
    op = sg.centred_to_primitive()
    return (np.array(op.rot, dtype=float) / op.DEN) @ SHEAR


def run_case(name, cell, seed, n_unique_target=2500, params=None):
    sg = gemmi.SpaceGroup(name)
    n_cen = len(sg.operations().cen_ops)
    vol = gemmi.UnitCell(*cell).volume / n_cen
    # d_min giving about n_unique_target reflections in the full sphere
    d_min = (4 / 3 * np.pi * vol / (2 * n_unique_target)) ** (1 / 3)
    expts, table, truth = simulate_integrated(sg, cell, d_min=d_min, seed=seed,
                                              P=oblique_setting(sg))
    new_expts, new_table, res = determine_symmetry(expts, table, params)
    return sg, new_expts, new_table, res


CASES = [
    ("P 1", (41, 52, 63, 81, 95, 104)),
    ("P 1 21 1", (45, 62, 71, 90, 104, 90)),
    ("C 1 2 1", (90, 50, 60, 90, 110, 90)),
    ("P 21 21 21", (41, 55, 68, 90, 90, 90)),
    ("C 2 2 21", (50, 90, 70, 90, 90, 90)),
    ("I 2 2 2", (52, 61, 73, 90, 90, 90)),
    ("P 41", (55, 55, 80, 90, 90, 90)),             # 4/m on a tetragonal lattice
    ("P 43 21 2", (58, 58, 90, 90, 90, 90)),
    ("I 41", (60, 60, 85, 90, 90, 90)),              # 4/m, I lattice
    ("P 31", (60, 60, 75, 90, 90, 120)),             # -3 on a hexagonal lattice
    ("P 31 2 1", (62, 62, 71, 90, 90, 120)),         # -3m1
    ("P 31 1 2", (57, 57, 80, 90, 90, 120)),         # -31m
    ("R 3:H", (80, 80, 60, 90, 90, 120)),            # -3, rhombohedral lattice
    ("R 3 2:H", (75, 75, 66, 90, 90, 120)),          # -3m, rhombohedral lattice
    ("P 61", (60, 60, 75, 90, 90, 120)),             # 6/m
    ("P 61 2 2", (64, 64, 70, 90, 90, 120)),         # 6/mmm
    ("P 21 3", (70, 70, 70, 90, 90, 90)),            # m-3 on a cubic lattice
    ("I 2 3", (80, 80, 80, 90, 90, 90)),
    ("P 43 3 2", (72, 72, 72, 90, 90, 90)),          # m-3m
    ("F 4 3 2", (110, 110, 110, 90, 90, 90)),
]


@pytest.mark.parametrize("seed,case", list(enumerate(CASES)), ids=[c[0] for c in CASES])
def test_every_laue_class_is_found(seed, case):
    name, cell = case
    sg, expts, table, res = run_case(name, cell, seed)
    want = patterson_of(sg)
    got = res.laue_group
    # same group up to setting (C 1 2/m 1 may come out as the I 1 2/m 1 cell, as DIALS's
    # best_monoclinic_beta does)
    assert got.number == want.number, (got.xhm(), want.xhm())
    best, nxt = res.laue.subgroups[0], res.laue.subgroups[1] if len(res.laue.subgroups) > 1 else None
    assert best.likelihood > 0.85
    if nxt is not None:
        assert best.likelihood > 5 * nxt.likelihood
        assert best.confidence > 0.8
    # reindexed: every class of equivalents under the found group holds one true intensity
    h = np.asarray(table["miller_index"])
    i_true = np.asarray(table["intensity.true"])
    keys = merge_keys(h, got)
    _, inv = np.unique(keys, return_inverse=True)
    spread = np.bincount(inv, weights=i_true ** 2) / np.bincount(inv) - (
        np.bincount(inv, weights=i_true) / np.bincount(inv)) ** 2
    assert np.all(spread <= 1e-6 * (1 + i_true.max() ** 2))
    # the crystal is in the conventional cell of the true lattice, with the space group set
    c = expts[0].crystal
    assert c.space_group.number == res.space_group.number
    if want.crystal_system_str() not in ("triclinic", "monoclinic"):
        assert c.unit_cell.is_similar(gemmi.UnitCell(*cell), 0.001, 0.05), c.unit_cell
    assert c.unit_cell.volume == pytest.approx(gemmi.UnitCell(*cell).volume
                                               * (len(res.space_group.operations().cen_ops)
                                                  / len(sg.operations().cen_ops)), rel=1e-6)


def test_no_symmetry_when_the_intensities_have_none():
    """P 1 data in a cell that is metrically tetragonal: the lattice offers 4/mmm, the
    intensities must say P -1."""
    _, _, _, res = run_case("P 1", (50, 50, 70, 90, 90, 90), seed=7)
    assert res.laue.lattice.lattice_group.patterson_group.xhm() == "P 4/m m m"
    assert res.laue_group.xhm() == "P -1"
    # each absent element is only ~10:1 against; the best still leads by far
    assert res.laue.best.likelihood > 5 * res.laue.subgroups[1].likelihood
    identity = next(e for e in res.laue.elements if e.name.startswith("1 "))
    others = [e for e in res.laue.elements if e is not identity]
    assert identity.cc.cc > 0.9 and all(abs(e.cc.cc) < 0.1 for e in others)


def test_lattice_symmetry_max_delta_limits_the_lattice():
    """A tetragonal cell distorted by ~1.4 deg: lattice 4/mmm at the default 2 deg, only
    orthorhombic-or-lower at 0.5 deg."""
    name, cell = "P 41 21 2", (58, 58.6, 90, 90, 90, 90)
    sg = gemmi.SpaceGroup(name)
    expts, table, _ = simulate_integrated(sg, cell, d_min=4.0, seed=3)
    _, _, res = determine_symmetry(expts, table, SymmetryParams(lattice_symmetry_max_delta=2.0))
    assert res.laue.lattice.lattice_group.patterson_group.xhm() == "P 4/m m m"
    _, _, res = determine_symmetry(expts, table, SymmetryParams(lattice_symmetry_max_delta=0.1))
    assert res.laue.lattice.lattice_group.patterson_group.xhm() == "P m m m"
    assert res.laue_group.xhm() == "P m m m"


def test_several_experiments_analysed_together():
    expts, table, _ = simulate_integrated("P 61 2 2", (64, 64, 70, 90, 90, 120), d_min=4.0,
                                          seed=11, n_experiments=3)
    new_expts, new_table, res = determine_symmetry(expts, table)
    assert res.laue_group.xhm() == "P 6/m m m"
    assert len(new_expts) == 3 and all(e.crystal.space_group.number in (178, 179)
                                       for e in new_expts)
    assert len(new_table) == len(table)


def test_auto_d_min_where_merged_i_over_sigma_reaches_4():
    """d_min=Auto on data fading with resolution (B = 60 A^2): the limit from <I>/<sigma>
    is where the merged (Friedel pairs together) <I>/<sigma>, computed here
    independently in thin shells, crosses 4; the analysis then uses fewer reflections
    than with d_min=None and still finds mmm."""
    expts, table, _ = simulate_integrated("P 21 21 21", (41, 55, 68, 90, 90, 90), d_min=2.0,
                                          seed=3, b_iso=60, background=200)
    _, _, res = determine_symmetry(expts, table)
    d_isigi = float(res.resolution_lines[0].split(":")[-1])
    assert res.d_min is not None and res.d_min <= d_isigi
    h = np.asarray(table["miller_index"], dtype=np.int64)
    key = np.maximum(h[:, 0] * 10**6 + h[:, 1] * 10**3 + h[:, 2],
                     -h[:, 0] * 10**6 - h[:, 1] * 10**3 - h[:, 2])
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    w = 1 / np.asarray(table["intensity.prf.variance"])
    i_m = np.bincount(inv, weights=w * table["intensity.prf.value"]) / np.bincount(inv, weights=w)
    s_m = 1 / np.sqrt(np.bincount(inv, weights=w))
    d = np.asarray(table["d"])[first]
    outer = (d > d_isigi - 0.25) & (d < d_isigi - 0.1)
    inner = (d > d_isigi + 0.1) & (d < d_isigi + 0.25)
    assert i_m[inner].mean() / s_m[inner].mean() > 4 > i_m[outer].mean() / s_m[outer].mean()
    _, _, all_data = determine_symmetry(expts, table, SymmetryParams(d_min=None))
    assert res.laue.n_reflections < 0.8 * all_data.laue.n_reflections
    assert res.laue_group.xhm() == all_data.laue_group.xhm() == "P m m m"


@pytest.mark.parametrize("name,cell,seed", [
    ("P 4", (71, 71, 45, 90, 90, 90), 101),           # 4/m, long a
    ("P 32", (48, 48, 110, 90, 90, 120), 102),       # -3
    ("P 6", (90, 90, 52, 90, 90, 120), 103),         # 6/m
    ("P 2 3", (95, 95, 95, 90, 90, 90), 104),        # m-3
    ("I 41 2 2", (62, 62, 140, 90, 90, 90), 105),    # 4/mmm, I lattice
])
def test_merohedral_cases_other_cells_and_seeds(name, cell, seed):
    sg, _, _, res = run_case(name, cell, seed, n_unique_target=2000)
    assert res.laue_group.number == patterson_of(sg).number, res.laue_group.xhm()
    assert res.laue.best.confidence > 0.8


def test_tables_without_d_or_id_columns():
    """d is computed from the crystal when the table lacks it; a table without id is one
    experiment."""
    expts, table, _ = simulate_integrated("P 41 21 2", (58, 58, 90, 90, 90, 90), d_min=4.0, seed=8)
    _, _, ref = determine_symmetry(expts, table)
    bare = table.copy()
    del bare["d"]
    del bare["id"]
    _, _, res = determine_symmetry(expts, bare)
    assert res.laue_group.xhm() == ref.laue_group.xhm() == "P 4/m m m"
    assert res.laue.n_reflections == ref.laue.n_reflections
    assert res.space_group.number == ref.space_group.number


def test_ml_aniso_removes_the_spurious_correlation_of_anisotropic_data():
    """P 1 21 1 data in an orthogonal cell with a strong fall-off along a* (B = 80 A^2 more
    than along b*, c*): with shell normalisation alone the false twofolds along a and c
    (which keep |h|) correlate through the shared fall-off (CC ~0.25); the anisotropic
    ML normalisation brings them back to ~0, leaving the true twofold at ~1."""
    expts, table, _ = simulate_integrated("P 1 21 1", (50, 60, 70, 90, 90, 90), d_min=2.8,
                                          seed=4)
    h = np.asarray(table["miller_index"], dtype=float)
    f = np.exp(-80 * (h[:, 0] / 50) ** 2 / 2)
    for c in ("intensity.prf.value", "intensity.sum.value"):
        table[c] = table[c] * f
    for c in ("intensity.prf.variance", "intensity.sum.variance"):
        table[c] = table[c] * f ** 2
    ccs = {}
    for norm in ("quasi", "ml_aniso"):
        _, _, res = determine_symmetry(expts, table, SymmetryParams(normalisation=norm))
        assert res.laue_group.xhm() == "P 1 2/m 1"
        ccs[norm] = {e.name: e.cc.cc for e in res.laue.elements}
    false = ("2 |(1, 0, 0)", "2 |(0, 0, 1)")
    assert all(ccs["quasi"][n] > 0.15 for n in false)
    assert all(abs(ccs["ml_aniso"][n]) < 0.05 for n in false)
    assert ccs["ml_aniso"]["2 |(0, 1, 0)"] > 0.95


def test_summation_intensities_of_partial_reflections_are_whole_again():
    """With summation intensities only, each is divided by its partiality (as
    dials.symmetry's SumIntensityReducer): a reflection recorded at 40-100 % counts as
    the whole reflection, and the Laue group comes out as from fully recorded data."""
    from gonio.core.reflection_table import Flags
    from gonio.core.symmetry.data import observations

    expts, table, _ = simulate_integrated("P 4 2 2", (58, 58, 90, 90, 90, 90), d_min=3.0, seed=3)
    rng = np.random.default_rng(5)
    part = np.where(rng.random(len(table)) < 0.5, rng.uniform(0.4, 1.0, len(table)), 1.0)
    whole = observations(expts, table)
    t = table.copy()
    del t["intensity.prf.value"]
    del t["intensity.prf.variance"]
    t.unset_flags(np.ones(len(t), bool), Flags.integrated_prf)
    t["intensity.sum.value"] = table["intensity.sum.value"] * part
    t["intensity.sum.variance"] = table["intensity.sum.variance"] * part**2
    t["partiality"] = part
    obs = observations(expts, t)
    assert obs.column == "sum"
    np.testing.assert_array_equal(obs.miller_index, whole.miller_index)
    np.testing.assert_allclose(obs.intensity, whole.intensity, rtol=1e-12)
    np.testing.assert_allclose(obs.sigma, whole.sigma, rtol=1e-12)
    _, _, res = determine_symmetry(expts, t)
    assert res.laue_group.xhm() == "P 4/m m m"
