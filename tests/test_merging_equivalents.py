"""Symmetry equivalents and weighted merging (gonio.core.merging.equivalents) against gemmi and
brute force."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.merging import group_equivalents, map_to_asu, merge_equivalents

GROUPS = ["P 1", "P -1", "C 1 2 1", "P 21 21 21", "I 41/a", "P 4 2 2", "P 43 21 2", "P 31",
          "P 3 1 2", "P 3 2 1", "R 3", "H 3 2", "P 61 2 2", "P 6/m m m", "P 2 3", "F d -3 m",
          "I 4 3 2"]


@pytest.mark.parametrize("symbol", GROUPS)
def test_asu_and_isym_as_gemmi(symbol):
    rng = np.random.default_rng(abs(hash(symbol)) % 2**32)
    sg = gemmi.SpaceGroup(symbol)
    hkl = rng.integers(-12, 13, (400, 3))
    m = map_to_asu(hkl, sg)
    asu, ops = gemmi.ReciprocalAsu(sg), sg.operations()
    ref = [asu.to_asu([int(x) for x in h], ops) for h in hkl]
    assert np.array_equal(m.hkl_asu, np.array([r[0] for r in ref]))
    assert np.array_equal(m.isym, np.array([r[1] for r in ref]))
    assert np.array_equal(m.centric, ops.centric_flag_array(hkl.astype(np.int32)).astype(bool))
    # Friedel minus mates are acentric images of -hkl (even ISYM)
    assert not (m.friedel_minus & m.centric).any()
    assert np.array_equal(m.friedel_minus, (m.isym % 2 == 0) & ~m.centric)


def test_group_sizes_in_p212121():
    sg = gemmi.SpaceGroup("P 21 21 21")
    h = np.array([[1, 2, 3], [-1, 2, 3], [1, -2, 3], [-1, -2, -3], [2, 2, 3], [-2, -2, -3]])
    g = group_equivalents(map_to_asu(h, sg).hkl_asu)
    assert len(g) == 2 and sorted(g.count.tolist()) == [2, 4]
    m = map_to_asu(h, sg)
    ga = group_equivalents(m.hkl_asu, m.friedel_minus)
    # (1,2,3), (-1,2,3)... : 222 keeps h,k,l signs pairs; Friedel mates split the groups
    assert len(ga) == 4 and ga.count.sum() == 6


def test_weighted_mean_brute_force():
    rng = np.random.default_rng(3)
    sg = gemmi.SpaceGroup("P 4 2 2")
    hkl = rng.integers(-6, 7, (600, 3))
    hkl = hkl[hkl.any(axis=1)]
    i = rng.normal(100, 30, len(hkl))
    s = rng.uniform(1, 10, len(hkl))
    merged = merge_equivalents(hkl, i, s, sg)
    asu, ops = gemmi.ReciprocalAsu(sg), sg.operations()
    keys = [tuple(asu.to_asu([int(x) for x in h], ops)[0]) for h in hkl]
    for row, h in enumerate(merged.miller_index[:40]):
        sel = np.array([k == tuple(h) for k in keys])
        w = 1 / s[sel] ** 2
        assert merged.intensity[row] == pytest.approx(np.sum(w * i[sel]) / np.sum(w))
        assert merged.sigma[row] == pytest.approx(1 / np.sqrt(np.sum(w)))
        assert merged.multiplicity[row] == sel.sum()


def test_anomalous_mates_merged_apart():
    sg = gemmi.SpaceGroup("P 21 21 21")
    hkl = np.array([[1, 2, 3], [1, 2, 3], [-1, -2, -3], [0, 2, 3], [0, -2, -3]])
    i = np.array([10.0, 12.0, 20.0, 5.0, 7.0])
    s = np.ones(5)
    m = merge_equivalents(hkl, i, s, sg, anomalous=True)
    row = [tuple(h) for h in m.miller_index].index((1, 2, 3))
    assert (m.i_plus[row], m.n_plus[row], m.i_minus[row], m.n_minus[row]) == (11.0, 2, 20.0, 1)
    assert m.intensity[row] == pytest.approx(14.0)
    c = [tuple(h) for h in m.miller_index].index((0, 2, 3))  # centric: all in I(+)
    assert m.centric[c] and m.n_plus[c] == 2 and m.n_minus[c] == 0 and m.i_plus[c] == 6.0


def test_bad_sigmas_ignored():
    hkl = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0]])
    m = merge_equivalents(hkl, [1.0, 2.0, 1e9], [1.0, 1.0, 0.0], "P 1")
    assert m.multiplicity.tolist() == [2] and m.intensity[0] == pytest.approx(1.5)
