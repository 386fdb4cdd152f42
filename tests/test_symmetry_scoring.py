"""The pieces of the Laue group scoring: subgroup enumeration, the CC likelihood model,
correlation sums, E^2 normalisation."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.symmetry.laue_group import (
    CCSums,
    _positive_sense,
    element_name,
    p_cc_given_not_s,
    trunccauchy_pdf,
)
from gonio.core.symmetry.normalise import correct_sigmas, quasi_normalise
from gonio.core.symmetry.subgroups import lattice_symmetry


def _names(cell, centring="P"):
    ls = lattice_symmetry(gemmi.UnitCell(*cell), centring)
    return sorted(s.patterson_group.xhm() for s in ls.subgroups), ls


def test_every_laue_subgroup_of_a_cubic_lattice():
    names, ls = _names((60, 60, 60, 90, 90, 90))
    assert len(names) == 30  # as cctbx metric_subgroups(bravais_types_only=False)
    assert set(names) == {"P m -3 m", "P m -3", "P 4/m m m", "P 4/m", "R -3 m:H", "R -3:H",
                          "P m m m", "C m m m", "P 1 2/m 1", "C 1 2/m 1", "P -1"}
    assert names.count("P 4/m") == 3 and names.count("R -3:H") == 4
    assert ls.lattice_group.patterson_group.xhm() == "P m -3 m"
    # the best settings keep the cubic axes where they can
    pm3 = next(s for s in ls.subgroups if s.patterson_group.xhm() == "P m -3")
    assert pm3.cb_op == "a,b,c" and pm3.space_group.xhm() == "P 2 3"


def test_hexagonal_lattice_has_both_trigonal_m_settings():
    names, _ = _names((50, 50, 70, 90, 90, 120))
    assert len(names) == 16
    assert {"P 6/m m m", "P 6/m", "P -3 m 1", "P -3 1 m", "P -3"} <= set(names)


def test_centred_input_cell():
    """A C-centred orthorhombic cell (as DIALS writes C 2 2 2 data) is reduced through its
    primitive cell, and the lattice group comes back in the C setting."""
    names, ls = _names((40, 50, 60, 90, 90, 90), "C")
    assert ls.lattice_group.patterson_group.xhm() == "C m m m"
    assert ls.lattice_group.cb_op == "a,b,c"
    assert ls.minimum_cell.volume == pytest.approx(40 * 50 * 60 / 2)


def test_max_delta_cuts_the_lattice():
    names, _ = _names((50, 50.9, 70, 90, 90, 90))  # tetragonal within ~1 deg
    assert "P 4/m m m" in names
    ls = lattice_symmetry(gemmi.UnitCell(50, 50.9, 70, 90, 90, 90), "P", max_delta=0.2)
    assert ls.lattice_group.patterson_group.xhm() == "P m m m"


def test_likelihood_model_is_normalised():
    cc = np.linspace(-1, 1, 20001)
    for sigma in (0.05, 0.1, 0.3):
        assert np.trapezoid(trunccauchy_pdf(cc, 0.9, sigma), cc) == pytest.approx(1, abs=1e-3)
        p_not = np.array([p_cc_given_not_s(x, sigma) for x in cc[::40]])
        assert np.trapezoid(p_not, cc[::40]) == pytest.approx(1, abs=2e-3)
    # an element measured with cc = E(CC) and sigma 0.1 scores ~0.95, one with cc = 0 ~0.1
    p_s, p_n = trunccauchy_pdf(0.95, 0.95, 0.1), p_cc_given_not_s(0.95, 0.1)
    assert 0.9 < p_s / (p_s + p_n) < 0.97
    p_s, p_n = trunccauchy_pdf(0.0, 0.95, 0.1), p_cc_given_not_s(0.0, 0.1)
    assert p_s / (p_s + p_n) < 0.15


def test_cc_sums_add_like_the_pooled_data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=500), rng.normal(size=500)
    y += x
    pooled = CCSums.of(x[:200], y[:200]) + CCSums.of(x[200:], y[200:])
    assert pooled.cc == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert pooled.n == 500 and CCSums().cc == 0.0


def test_elements_one_of_each_rotation_pair():
    ops = gemmi.SpaceGroup("P 4 3 2").operations()
    rots = [np.array(op.rot) / op.DEN for op in ops.sym_ops]
    els = _positive_sense(rots)
    assert len(els) == 17  # 1 + 3 + 6 twofolds + 4 threefolds + 3 fourfolds
    names = [element_name(R) for R in els]
    assert "1 |(0, 0, 0)" in names and "4^1 |(0, 0, 1)" in names and "3^1 |(1, 1, 1)" in names
    assert sum(n.startswith("2 ") for n in names) == 9


def test_quasi_normalisation_flattens_the_falloff():
    rng = np.random.default_rng(1)
    s2 = rng.uniform(0.001, 0.25, 30000)
    intensity = rng.exponential(1.0, s2.size) * 1000 * np.exp(-30 * s2 / 2)
    e2 = intensity / quasi_normalise(intensity, s2)
    shells = np.digitize(s2, np.linspace(0, 0.25, 11))
    means = [e2[shells == k].mean() for k in range(1, 11)]
    assert np.allclose(means, 1.0, atol=0.08)


def test_sigma_correction_as_pointless():
    i = np.array([100.0, 0.0, -10.0])
    s = np.array([10.0, 5.0, 4.0])
    out = correct_sigmas(i, s)
    assert out[0] == pytest.approx(2 * np.sqrt(100 + 9))
    assert out[1] == pytest.approx(10.0)
