"""Le Page lattice search against independent derivations.

Each test cell of known symmetry is taken to its primitive cell, then to a random
P1 setting (random unimodular matrix); the search must find the true lattice
with metric fit 0 and the conventional cell back, and the full list of
compatible lattices must equal the subgroup count derived by hand from the
lattice's twofold axes (e.g. cubic P: 9 twofolds -> 432, 3 x 422, 4 x 32, 222
along the axes, 3 x 222 with face diagonals, 3 + 6 single twofolds, 1 = 22).
"""

from __future__ import annotations

import collections

import gemmi
import numpy as np
import pytest

from gonio.core.lattice.bravais import (
    LATTICE_GROUP,
    LatticeSearchError,
    find_bravais_settings,
    le_page_delta,
    niggli_reduce,
)
from gonio.core.lattice.change_of_basis import metric_tensor, transform_cell

H, T = 0.5, 1.0 / 3.0
TO_PRIMITIVE = {  # columns: a primitive basis of the centred lattice, conventional basis
    "P": np.eye(3),
    "C": np.array([[H, -H, 0], [H, H, 0], [0, 0, 1]]),
    "I": np.array([[-H, H, H], [H, -H, H], [H, H, -H]]),
    "F": np.array([[0, H, H], [H, 0, H], [H, H, 0]]),
    "R": np.array([[2 * T, -T, -T], [T, T, -2 * T], [T, T, T]]),
}
N_CENTRING = {"P": 1, "C": 2, "I": 2, "F": 4, "R": 3}

# lattice: (conventional cell, compatible lattices at max_delta=5, expected best cell)
CASES = {
    "aP": ((10, 12, 15, 80, 95, 105), {"aP": 1}, (10, 12, 15, 80, 85, 75)),
    "mP": ((40, 50, 60, 90, 100, 90), {"mP": 1, "aP": 1}, (40, 50, 60, 90, 100, 90)),
    "mI": ((99.06, 31.01, 54.30, 90, 107.7, 90), {"mC": 1, "aP": 1},
           (54.30, 31.01, 97.42, 90, 104.37, 90)),  # C2 lattice in its I2 cell (best beta)
    "oP": ((40, 50, 60, 90, 90, 90), {"oP": 1, "mP": 3, "aP": 1}, (40, 50, 60, 90, 90, 90)),
    "oC": ((40, 90, 60, 90, 90, 90), {"oC": 1, "mC": 2, "mP": 1, "aP": 1},
           (40, 90, 60, 90, 90, 90)),
    "oI": ((60, 40, 50, 90, 90, 90), {"oI": 1, "mC": 3, "aP": 1}, (40, 50, 60, 90, 90, 90)),
    "oF": ((50, 60, 40, 90, 90, 90), {"oF": 1, "mC": 3, "aP": 1}, (40, 50, 60, 90, 90, 90)),
    "tP": ((50, 50, 70, 90, 90, 90),
           {"tP": 1, "oP": 1, "oC": 1, "mP": 3, "mC": 2, "aP": 1}, (50, 50, 70, 90, 90, 90)),
    "tI": ((50, 50, 80, 90, 90, 90),
           {"tI": 1, "oI": 1, "oF": 1, "mC": 5, "aP": 1}, (50, 50, 80, 90, 90, 90)),
    "hP": ((60, 60, 90, 90, 90, 120),
           {"hP": 1, "oC": 3, "mP": 1, "mC": 6, "aP": 1}, (60, 60, 90, 90, 90, 120)),
    "hR": ((60, 60, 100, 90, 90, 120), {"hR": 1, "mC": 3, "aP": 1}, (60, 60, 100, 90, 90, 120)),
    "cP": ((50, 50, 50, 90, 90, 90),
           {"cP": 1, "tP": 3, "hR": 4, "oP": 1, "oC": 3, "mP": 3, "mC": 6, "aP": 1},
           (50, 50, 50, 90, 90, 90)),
    "cI": ((78.1, 78.1, 78.1, 90, 90, 90),  # insulin: DIALS lists 22 solutions
           {"cI": 1, "tI": 3, "hR": 4, "oI": 1, "oF": 3, "mC": 9, "aP": 1},
           (78.1, 78.1, 78.1, 90, 90, 90)),
    "cF": ((100, 100, 100, 90, 90, 90),
           {"cF": 1, "tI": 3, "hR": 4, "oF": 1, "oI": 3, "mC": 9, "aP": 1},
           (100, 100, 100, 90, 90, 90)),
}


def family(lattice: str) -> str:
    """mI is the I2 cell of a centred monoclinic lattice: count it as mC."""
    return "mC" if lattice == "mI" else lattice


def random_setting(conv: gemmi.UnitCell, centring: str, seed: int) -> gemmi.UnitCell:
    rng = np.random.default_rng(seed)
    while True:
        Q = rng.integers(-2, 3, (3, 3))
        if round(np.linalg.det(Q)) == 1:
            return transform_cell(transform_cell(conv, TO_PRIMITIVE[centring]), Q)


def _close(cell: gemmi.UnitCell, expected, len_tol=0.02, ang_tol=0.02) -> bool:
    p = cell.parameters
    return (np.allclose(p[:3], expected[:3], atol=len_tol)
            and np.allclose(p[3:], expected[3:], atol=ang_tol))


@pytest.mark.parametrize("lattice", list(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_true_lattice_found_in_random_setting(lattice, seed):
    conv_params, counts, best = CASES[lattice]
    centring = "C" if lattice == "mI" else lattice[1]
    cell = random_setting(gemmi.UnitCell(*conv_params), centring, seed)
    settings = find_bravais_settings(cell, max_delta=5.0)
    assert collections.Counter(family(s.lattice) for s in settings) == counts
    top = settings[0]  # highest symmetry first, P1 last (numbering as DIALS)
    assert top.lattice == lattice
    assert top.metric_fit_deg < 1e-6
    assert _close(top.ideal_cell, best), top.ideal_cell
    assert settings[-1].lattice == "aP"
    for s in settings:
        # integral, right-handed operator; volume multiplicity = number of lattice points
        assert np.abs(s.P - np.rint(s.P)).max() < 1e-9
        assert np.linalg.det(s.P) == pytest.approx(N_CENTRING[s.lattice[1]])
        # the operator really takes the input cell to the reported reference cell
        assert _close(transform_cell(cell, s.P), s.reference_cell.parameters, 1e-6, 1e-6)
        # and the idealised cell has the lattice's symmetry in that setting
        assert s.ideal_cell.is_compatible_with_spacegroup(gemmi.SpaceGroup(LATTICE_GROUP[s.lattice]), 1e-4)
        assert s.metric_fit_deg < 1e-6  # an exact cell: every compatible lattice fits exactly


def test_insulin_22_solutions_and_cb_op():
    # the primitive (rhombohedral, 109.47 deg) cell of insulin's I-cubic lattice
    cell = transform_cell(gemmi.UnitCell(78.1, 78.1, 78.1, 90, 90, 90), TO_PRIMITIVE["I"])
    settings = find_bravais_settings(cell, 5.0)
    assert len(settings) == 22
    cI = settings[0]
    assert cI.lattice == "cI"
    # the cubic I cell from the primitive one: the three face diagonals a+b, a+c, b+c
    cols = sorted(tuple(np.abs(cI.P[:, i]).astype(int)) for i in range(3))
    assert cols == [(0, 1, 1), (1, 0, 1), (1, 1, 0)]
    assert cI.volume == pytest.approx(78.1 ** 3, rel=1e-9)
    assert settings[-1].cb_op == "a,b,c"  # the input is already the Niggli cell


def test_pseudo_cubic_tetragonal_metric_fit():
    # a = b = 42.45, c = 39.80: the cubic twofolds along the a-c diagonals have the Le Page
    # obliquity 2 atan(a/c) - 90 deg = 3.6907 deg (angle between [101] and (101))
    cell = gemmi.UnitCell(42.45, 42.45, 39.80, 90, 90, 90)
    expected = 2 * np.degrees(np.arctan(42.45 / 39.80)) - 90
    settings = find_bravais_settings(cell, 5.0)
    by = collections.defaultdict(list)
    for s in settings:
        by[s.lattice].append(s)
    assert by["cP"][0].metric_fit_deg == pytest.approx(expected, abs=1e-6)
    exact_tp = [s for s in by["tP"] if s.metric_fit_deg < 1e-6]
    assert len(exact_tp) == 1 and exact_tp[0].cb_op == "a,b,c"
    assert _close(exact_tp[0].ideal_cell, (42.45, 42.45, 39.80, 90, 90, 90))
    assert len(settings) == 22
    # below the pseudo-symmetry threshold only the tetragonal family remains
    assert collections.Counter(family(s.lattice) for s in find_bravais_settings(cell, 3.0)) == \
        CASES["tP"][1]


def test_pseudo_orthorhombic_monoclinic_beta_is_the_delta():
    # for a monoclinic cell the twofold along a has obliquity |beta - 90| (a vs a*)
    cell = random_setting(gemmi.UnitCell(40, 50, 60, 90, 91.2, 90), "P", 3)
    settings = find_bravais_settings(cell, 5.0)
    oP = [s for s in settings if s.lattice == "oP"]
    assert len(oP) == 1
    assert oP[0].metric_fit_deg == pytest.approx(1.2, abs=1e-6)
    assert _close(oP[0].ideal_cell, (40, 50, 60, 90, 90, 90), 0.5, 1e-6)
    assert [s.lattice for s in settings].count("mP") == 3
    assert find_bravais_settings(cell, 1.0)[0].lattice == "mP"


def test_pseudo_hexagonal_and_pseudo_cubic_cells():
    # oC with b/a = 1.75 (close to sqrt 3): hP appears at 0.51 deg
    s = find_bravais_settings(random_setting(gemmi.UnitCell(40, 70, 60, 90, 90, 90), "C", 4))
    assert s[0].lattice == "hP" and 0.4 < s[0].metric_fit_deg < 0.6
    assert collections.Counter(x.lattice for x in s)["oC"] == 3
    # hR with c/a = 2.5 (sqrt 6 = 2.449 would be cubic F): cF at 1.10 deg
    s = find_bravais_settings(random_setting(gemmi.UnitCell(60, 60, 150, 90, 90, 120), "R", 5))
    assert s[0].lattice == "cF" and s[0].metric_fit_deg == pytest.approx(1.1025, abs=1e-3)
    assert len(s) == 22


def test_best_monoclinic_beta_flag():
    cell = random_setting(gemmi.UnitCell(99.06, 31.01, 54.30, 90, 107.7, 90), "C", 6)
    c2 = find_bravais_settings(cell, best_monoclinic_beta=False)[0]
    assert c2.lattice == "mC" and c2.space_group.hm == "C 1 2 1"
    assert _close(c2.ideal_cell, (99.06, 31.01, 54.30, 90, 107.7, 90))
    i2 = find_bravais_settings(cell, best_monoclinic_beta=True)[0]
    assert i2.lattice == "mI" and i2.space_group.hm == "I 1 2 1"
    assert _close(i2.ideal_cell, (54.30, 31.01, 97.42, 90, 104.37, 90))
    # the I2 cell is the same lattice: a_I = a_C + c_C style transformation of one another
    M = np.linalg.inv(c2.P) @ i2.P
    assert np.abs(M - np.rint(M)).max() < 1e-9 and abs(np.linalg.det(M)) == pytest.approx(1)


def test_le_page_delta_agrees_with_gemmi():
    cell = gemmi.UnitCell(102.053, 46.612, 74.904, 95.00, 71.29, 95.00)
    red, _ = niggli_reduce(cell)
    G = metric_tensor(red)
    pairs = gemmi.find_lattice_2fold_ops(red, 5.0)
    assert pairs
    for op, delta in pairs:
        R = np.array(op.rot, float) / op.DEN
        assert le_page_delta(R, G) == pytest.approx(delta, abs=1e-6)


def test_chiral_space_groups():
    s = find_bravais_settings(gemmi.UnitCell(50, 50, 80, 90, 90, 90), 1.0)[0]
    assert s.lattice == "tP"
    assert s.chiral_space_groups == ["P4", "P41", "P42", "P43", "P422", "P4212", "P4122",
                                     "P41212", "P4222", "P42212", "P4322", "P43212"]
    assert s.space_group.hm == "P 4"


def test_bad_max_delta():
    with pytest.raises(LatticeSearchError, match="max_delta"):
        find_bravais_settings(gemmi.UnitCell(10, 10, 10, 90, 90, 90), max_delta=-1)


# -- cctbx's own regression expectations (iotbx.lattice_symmetry, max_delta as given) -------
# (input cell, centring, max_delta, [(lattice, metric fit deg, conventional cell), ...]);
# "I 1 2/m 1" conventional settings are listed as mI, "C 1 2/m 1" as mC.
CCTBX_CASES = [
    ((12.7923, 12.8923, 29.4356, 102.846, 103.846, 22.7475), "P", 3.0, [
        ("mI", 1.323, (5.06616, 57.1752, 12.8923, 90, 102.483, 90)),
        ("aP", 0.0, (5.06616, 12.7923, 29.1526, 78.6285, 87.746, 79.7351))]),
    ((12, 12.2, 12.1, 89, 90, 92), "F", 3.0, [
        ("cF", 2.236, (12.1003, 12.1003, 12.1003, 90, 90, 90)),
        ("tI", 2.236, (8.55628, 8.55628, 12.1, 90, 90, 90)),
        ("tI", 2.236, (8.59142, 8.59142, 12, 90, 90, 90)),
        ("tI", 2.236, (8.52071, 8.52071, 12.2, 90, 90, 90)),
        ("hR", 1.474, (8.63072, 8.63072, 20.5883, 90, 90, 120)),
        ("hR", 1.498, (8.481, 8.481, 21.3218, 90, 90, 120)),
        ("hR", 2.177, (8.53148, 8.53148, 21.0788, 90, 90, 120)),
        ("hR", 2.177, (8.58082, 8.58082, 20.8371, 90, 90, 120)),
        ("oI", 1.187, (8.40567, 8.70429, 12.1, 90, 90, 90)),
        ("oI", 2.000, (8.51612, 8.66606, 12, 90, 90, 90)),
        ("oI", 2.236, (8.52071, 8.52071, 12.2, 90, 90, 90)),
        ("oF", 2.236, (12, 12.1, 12.2, 90, 90, 90)),
        ("mI", 2.236, (8.52071, 12.2, 8.52071, 90, 90.4755, 90)),
        ("mI", 1.001, (8.40567, 12.1, 8.70429, 90, 90.9476, 90)),
        ("mI", 2.000, (8.51612, 12, 8.66606, 90, 90.4716, 90)),
        ("mI", 1.172, (8.40567, 8.70429, 12.1, 90, 90.7257, 90)),
        ("mI", 1.474, (8.51612, 8.66606, 12, 90, 91.4324, 90)),
        ("mI", 0.860, (8.52071, 8.52071, 12.2, 90, 92.1185, 90)),
        ("mI", 2.177, (8.52071, 8.52071, 12.2, 90, 90.6981, 90)),
        ("mI", 1.498, (8.66606, 8.51612, 12, 90, 91.4076, 90)),
        ("mI", 1.187, (8.70429, 8.40567, 12.1, 90, 90.7008, 90)),
        ("aP", 0.0, (8.40567, 8.51612, 8.52071, 61.4489, 61.5879, 60.4641))]),
    ((22.54, 22.64, 6.35, 90.1, 89.9, 90), "I", 3.0, [
        ("tI", 0.290, (22.5901, 22.5901, 6.35, 90, 90, 90)),
        ("oI", 0.141, (6.35, 22.54, 22.64, 90, 90, 90)),
        ("oF", 0.290, (6.35, 31.9472, 31.9472, 90, 90, 90)),
        ("mI", 0.141, (22.54, 6.35, 22.64, 90, 90, 90)),
        ("mC", 0.290, (6.35, 31.9472, 16.286, 90, 101.242, 90)),
        ("mC", 0.254, (6.35, 31.9472, 16.2784, 90, 101.106, 90)),
        ("mI", 0.100, (6.35, 22.54, 22.64, 90, 90.1, 90)),
        ("mI", 0.100, (6.35, 22.64, 22.54, 90, 90.1, 90)),
        ("aP", 0.0, (6.35, 16.2784, 16.286, 87.6037, 78.7584, 78.8942))]),
    ((78.9, 82.3, 57.0, 90, 93.4, 90.1), "C", 1.4, [
        ("hR", 0.100, (82.2678, 82.2678, 94.5557, 90, 90, 120)),
        ("mC", 0.065, (78.9065, 82.2173, 57.0552, 90, 93.4431, 90)),
        ("mC", 0.100, (78.9, 82.3, 57, 90, 93.4, 90)),
        ("mC", 0.069, (78.9783, 82.2861, 56.9558, 90, 93.446, 90)),
        ("aP", 0.0, (56.9558, 57, 57.0552, 92.3502, 92.4166, 92.3543))]),
]


@pytest.mark.parametrize("cell, centring, max_delta, expected", CCTBX_CASES)
def test_agrees_with_cctbx_lattice_symmetry(cell, centring, max_delta, expected):
    settings = find_bravais_settings(
        transform_cell(gemmi.UnitCell(*cell), TO_PRIMITIVE[centring]), max_delta)
    assert len(settings) == len(expected)
    unmatched = list(settings)
    for lattice, fit, params in expected:
        hit = [s for s in unmatched if s.lattice == lattice
               and abs(s.metric_fit_deg - fit) < 6e-4
               and np.allclose(s.ideal_cell.parameters, params, atol=1.5e-3)]
        assert hit, (lattice, fit, params)
        unmatched.remove(hit[0])
