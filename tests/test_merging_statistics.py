"""Merging statistics (gonio.core.merging.statistics): definitions checked by brute force, shells,
completeness, the resolution estimate, and self-consistency on DIALS's scaled L-cysteine data."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from conftest import data_path

from gonio.core.merging import estimate_resolution, merging_statistics
from gonio.core.merging.statistics import ShellStatistics, shell_edges

CELL = (30.0, 40.0, 50.0, 90.0, 90.0, 90.0)


def _observations(rng, n_unique=400, mult=6, noise=0.15):
    cell = gemmi.UnitCell(*CELL)
    full = gemmi.make_miller_array(cell, gemmi.SpaceGroup("P 21 21 21"), 2.5, 0, unique=True)
    full = full[rng.choice(len(full), n_unique, replace=False)]
    truth = rng.exponential(1000.0, len(full))
    counts = rng.integers(1, 2 * mult, len(full))
    idx = np.repeat(np.arange(len(full)), counts)
    # equivalent indices by random symmetry operations, and Friedel flips
    ops = list(gemmi.SpaceGroup("P 21 21 21").operations().sym_ops)
    hkl = np.array([ops[rng.integers(len(ops))].apply_to_hkl([int(x) for x in full[j]])
                    for j in idx])
    flip = rng.random(len(idx)) < 0.5
    hkl[flip] *= -1
    i = truth[idx] * (1 + noise * rng.normal(size=len(idx)))
    s = np.full(len(idx), noise) * truth[idx] + 1.0
    return full, truth, idx, hkl, i, s


def test_r_factors_and_cc_half_brute_force():
    rng = np.random.default_rng(7)
    full, truth, idx, hkl, i, s = _observations(rng)
    st = merging_statistics(hkl, i, s, CELL, "P 21 21 21", n_bins=1)
    # brute force over the unique reflections (groups with n >= 2)
    num = num_meas = num_pim = den = 0.0
    means, errs = [], []
    for j in range(len(full)):
        x = i[idx == j]
        n = len(x)
        if n < 2:
            continue
        dev = np.abs(x - x.mean()).sum()
        num += dev
        num_meas += np.sqrt(n / (n - 1)) * dev
        num_pim += np.sqrt(1 / (n - 1)) * dev
        den += x.sum()
        means.append(x.mean())
        errs.append(x.var(ddof=1) / n)
    o = st.overall
    assert o.r_merge == pytest.approx(num / den, rel=1e-9)
    assert o.r_meas == pytest.approx(num_meas / den, rel=1e-9)
    assert o.r_pim == pytest.approx(num_pim / den, rel=1e-9)
    vy, ve = np.var(means, ddof=1), np.mean(errs)
    assert o.cc_half == pytest.approx((vy - ve) / (vy + ve), rel=1e-9)
    assert o.n_obs == len(i) and o.n_unique == len(full)
    assert o.multiplicity == pytest.approx(len(i) / len(full))


def test_sigma_tau_cc_half_is_the_expected_half_data_set_correlation():
    """Assmann et al. (2016): sigma-tau CC1/2 estimates the mean of random-split CC1/2."""
    rng = np.random.default_rng(11)
    full, truth, idx, hkl, i, s = _observations(rng, n_unique=600, mult=8, noise=0.8)
    st = merging_statistics(hkl, i, s, CELL, "P 21 21 21", n_bins=1)
    ccs = []
    for _ in range(200):
        a, b = [], []
        for j in range(len(full)):
            x = rng.permutation(i[idx == j])
            if len(x) < 2:
                continue
            h = len(x) // 2
            a.append(x[:h].mean())
            b.append(x[h:2 * h].mean())
        ccs.append(np.corrcoef(a, b)[0, 1])
    assert 0.3 < st.overall.cc_half < 0.95
    assert st.overall.cc_half == pytest.approx(np.mean(ccs), abs=0.03)


def test_shells_equal_volume_and_complete():
    rng = np.random.default_rng(5)
    sg = gemmi.SpaceGroup("P 21 21 21")
    cell = gemmi.UnitCell(*CELL)
    full = gemmi.make_miller_array(cell, sg, 2.0001, 0, unique=True)  # no reflection at the limit
    hkl = np.repeat(full, 3, axis=0)
    i = rng.exponential(500.0, len(hkl)) + 10
    st = merging_statistics(hkl, i, np.sqrt(i), CELL, sg, n_bins=10)
    assert st.overall.completeness == pytest.approx(1.0)
    assert all(sh.completeness == pytest.approx(1.0) for sh in st.shells)
    assert sum(sh.n_obs for sh in st.shells) == st.overall.n_obs == len(hkl)
    e = shell_edges(st.overall.d_max, st.overall.d_min, 10)
    assert np.allclose(np.diff(e ** -3.0), (e[-1] ** -3.0 - e[0] ** -3.0) / 10)
    # equal volume: the shells hold about the same number of unique reflections
    n = np.array([sh.n_unique for sh in st.shells])
    assert n.min() > 0.8 * n.mean()
    # half the reflections measured: half complete
    half = merging_statistics(hkl[::2], i[::2], np.sqrt(i[::2]), CELL, sg, n_bins=10)
    assert half.overall.completeness == pytest.approx(
        half.overall.n_unique / st.overall.n_unique)


def test_anomalous_signal_seen_by_cc_ano():
    rng = np.random.default_rng(2)
    sg = gemmi.SpaceGroup("P 21 21 21")
    cell = gemmi.UnitCell(*CELL)
    full = gemmi.make_miller_array(cell, sg, 2.5, 0, unique=True)
    acentric = ~sg.operations().centric_flag_array(full).astype(bool)
    full = full[acentric]
    base = rng.exponential(1000, len(full))
    dano = rng.normal(0, 100, len(full))
    hkl, i = [], []
    for sign in (1, -1):
        for _ in range(4):
            hkl.append(sign * full)
            i.append(base + sign * dano / 2 + rng.normal(0, 10, len(full)))
    hkl, i = np.concatenate(hkl), np.concatenate(i)
    st = merging_statistics(hkl, i, np.full(len(i), 10.0), CELL, sg, anomalous=True, n_bins=4)
    assert st.overall.cc_anom > 0.9
    assert st.overall.anom_completeness == pytest.approx(1.0)
    assert st.overall.anom_multiplicity == pytest.approx(4.0)
    flat = merging_statistics(hkl, base[np.tile(np.arange(len(full)), 8)] + rng.normal(0, 10, len(i)),
                              np.full(len(i), 10.0), CELL, sg, anomalous=True, n_bins=4)
    assert abs(flat.overall.cc_anom) < 0.2


def test_resolution_estimate_from_a_known_curve():
    d_true = 1.8
    x0, r = 1 / d_true ** 2, 0.03
    x_lim = x0 + r * np.arctanh(1 - 2 * 0.3)  # where the curve crosses 0.3
    edges = shell_edges(5.0, 1.5, 20)
    shells = []
    for a, b in zip(edges[:-1], edges[1:]):
        x = (a ** -2 + b ** -2) / 2
        cc = 0.5 * (1 - np.tanh((x - x0) / r))
        isig = 40 * np.exp(-10 * x)
        shells.append(ShellStatistics(a, b, 100, 50, 50, 2, 1, 1, isig, 0.1, 0.1, 0.1, cc, 0, 0, 0))
    res = estimate_resolution(shells)
    assert res.cc_half == pytest.approx(1 / np.sqrt(x_lim), rel=1e-3)
    assert res.i_over_sigma == pytest.approx(1 / np.sqrt(np.log(40) / 10), rel=0.01)
    never = estimate_resolution([ShellStatistics(a, b, 1, 1, 1, 1, 1, 1, 50, 0, 0, 0, 0.99, 0, 0, 0)
                                 for a, b in zip(edges[:-1], edges[1:])])
    assert never.cc_half is None and never.i_over_sigma is None and never.suggested == 1.5


def test_lcysteine_dials_scaled_self_consistent():
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl
    from gonio.core.reflection_table import Flags

    t = read_refl(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl"))
    e = read_expt(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt"))[0]
    ok = ~t.get_flags(Flags.bad_for_scaling, all_bits=False) & (t["inverse_scale_factor"] > 0)
    t = t.select(ok)
    g = t["inverse_scale_factor"]
    st = merging_statistics(t["miller_index"], t["intensity.scale.value"] / g,
                            np.sqrt(t["intensity.scale.variance"]) / g,
                            e.crystal.unit_cell.parameters, "P 21 21 21")
    o = st.overall
    assert o.n_obs == sum(s.n_obs for s in st.shells) == len(t) - np.sum(
        gemmi.SpaceGroup("P 21 21 21").operations().systematic_absences(t["miller_index"]))
    assert o.n_unique == sum(s.n_unique for s in st.shells)
    assert 0.0 < o.r_pim < o.r_merge < o.r_meas < 0.1
    assert o.cc_half > 0.99 and 0.6 < o.completeness <= 1.0  # one sweep of four
    assert st.shells[0].d_max > st.shells[-1].d_max
    assert all(s.completeness <= 1.0 for s in st.shells)
    assert 10 < o.mean_i_over_sigma < 100


def test_cc_ano_needs_enough_friedel_pairs():
    """A few pairs correlate by chance (-0.8 was seen on data without anomalous signal):
    below MIN_ANOMALOUS_PAIRS measured in both halves CC_ano is not given."""
    from gonio.core.merging.statistics import MIN_ANOMALOUS_PAIRS

    rng = np.random.default_rng(5)
    sg = gemmi.SpaceGroup("P 21 21 21")
    full = gemmi.make_miller_array(gemmi.UnitCell(*CELL), sg, 2.5, 0, unique=True)
    full = full[~sg.operations().centric_flag_array(full).astype(bool)][:MIN_ANOMALOUS_PAIRS - 5]
    base = rng.exponential(1000, len(full))
    hkl = np.concatenate([s * full for s in (1, 1, -1, -1)])
    i = np.tile(base, 4) + rng.normal(0, 10, 4 * len(full))
    st = merging_statistics(hkl, i, np.full(len(i), 10.0), CELL, sg, anomalous=True, n_bins=1)
    assert np.isnan(st.overall.cc_anom)
    assert st.overall.anom_completeness > 0  # the pairs are still counted


def test_undefined_figures_print_as_a_dash():
    """Every reflection measured once: no R factor, CC1/2 or anomalous CC is defined. The
    table shows "-" there (not "nan"), the step's figures None, the defined columns numbers."""
    rng = np.random.default_rng(3)
    full, truth, idx, hkl, i, s = _observations(rng)
    first = np.unique(idx, return_index=True)[1]  # one observation of each reflection
    st = merging_statistics(hkl[first], i[first], s[first], CELL, "P 21 21 21", n_bins=3,
                            anomalous=True)
    for row in st.table_rows():
        assert "nan" not in " ".join(row)
        assert row[8:] == ["-"] * 5  # r_merge, r_meas, r_pim, cc1/2, cc_ano
        assert float(row[4]) == pytest.approx(1.0) and float(row[7]) > 0
    m = st.metrics()
    assert m["cc_half"] is None and m["r_meas"] is None and m["multiplicity"] == 1.0
