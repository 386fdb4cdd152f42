"""The reflections that enter the minimisation (dials.scale's reflection_selection)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from scaling_synthetic import combine, deviation_from_truth, make_sweep

from gonio.core.reflection_table import Flags
from gonio.core.scaling import ScalingParams, scale
from gonio.core.scaling.selection import (
    connected_across_datasets,
    fill_classes,
    normalised_e2,
    select_for_minimisation,
)


@pytest.fixture(scope="module")
def expt():
    return data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt")


@pytest.fixture(scope="module")
def sweep(expt):
    return make_sweep(expt, d_min=2.5)


def _rms_from_truth(table, g_true):
    """rms of log(g / g_true) after removing the free overall scale and B."""
    return float(np.sqrt(np.mean(deviation_from_truth(table, g_true)[0] ** 2)))


def test_fill_classes_reproduces_dials_worked_example():
    """The example in dials.scale's reflection_selection.py: 3 classes x 7 groups, 5 per
    class wanted -> groups 1, 5, 0, 4 (totals 8, 7, 7)."""
    counts = np.array([[3, 3, 2, 0, 1, 1, 1],
                       [0, 2, 0, 0, 3, 2, 1],
                       [2, 1, 1, 5, 0, 4, 0]], float)
    order = np.argsort(-(counts > 0).sum(axis=0), kind="stable")
    assert list(order) == [1, 5, 0, 2, 4, 6, 3]
    used = fill_classes(counts[:, order], 5, 0, 1000)
    assert sorted(order[used]) == [0, 1, 4, 5]
    assert list(counts[:, order[used]].sum(axis=1)) == [8, 7, 7]


def test_random_subset_minimises_on_its_groups_and_scales_everything(sweep):
    full = scale(sweep.experiments, sweep.table, ScalingParams())
    p = ScalingParams(reflection_selection_method="random", random_min_groups=400,
                      random_min_reflections=1)
    _, table, result = scale(sweep.experiments, sweep.table, p)
    sel = result.selection
    assert sel.n_groups_used == 400 and sel.mask.sum() < 0.2 * len(sel.mask)
    assert full[2].selection.mask.all() and full[2].selection.method == "use_all"
    # every reflection still gets a scale factor, flags and statistics as with use_all
    assert np.array_equal(table.get_flags(Flags.scaled), full[1].get_flags(Flags.scaled))
    assert np.all(table["inverse_scale_factor"][table.get_flags(Flags.scaled)] > 0)
    rms_sub, rms_all = (_rms_from_truth(t, sweep.g_true) for t in (table, full[1]))
    print(f"rms from truth: 400 random groups {rms_sub:.4f}, all {rms_all:.4f}")
    assert rms_all < rms_sub < 0.02  # a subset is noisier, and still follows the truth


def test_random_takes_min_reflections_at_the_mean_multiplicity(sweep):
    t = sweep.table
    p = ScalingParams(reflection_selection_method="quasi_random", random_min_groups=1,
                      random_min_reflections=5000)
    _, _, result = scale(sweep.experiments, t, p)
    sel = result.selection
    # groups chosen: ceil(5000 / mean multiplicity of the candidate groups)
    assert 4500 < sel.mask.sum() < 5500
    assert sel.n_groups_used < sel.n_groups


def test_intensity_ranges(sweep):
    t = sweep.table
    rows = np.arange(len(t))
    i = t["intensity.prf.value"]
    v = t["intensity.prf.variance"]
    from gonio.core.merging.equivalents import group_equivalents, map_to_asu

    grp = group_equivalents(map_to_asu(t["miller_index"], sweep.experiments[0].crystal.space_group
                                       ).hkl_asu)
    part = np.where(rows % 10 == 0, 0.9, 1.0)  # a tenth below min_partiality
    p = ScalingParams(reflection_selection_method="intensity_ranges", isigma_range=(2.0, 0.0))
    sel = select_for_minimisation(p, grp.group, len(grp), np.zeros(len(t), int), 1, i, v, part,
                                  t["d"])
    e2 = normalised_e2(i, t["d"], np.zeros(len(t), int), 1)
    m = sel.mask
    assert np.all((e2[m] > 0.8) & (e2[m] < 5.0) & (i[m] / np.sqrt(v[m]) > 2.0) & (part[m] > 0.95))
    assert np.mean(e2) == pytest.approx(1.0, abs=0.05)
    want = (e2 > 0.8) & (e2 < 5.0) & (i / np.sqrt(v) > 2.0) & (part > 0.95)
    assert np.array_equal(m, want)


def test_cross_sweep_selection_prefers_groups_in_more_sweeps():
    """Groups measured in all three sweeps are taken before those in one sweep, and each
    sweep gets its share."""
    rng = np.random.default_rng(0)
    n_groups = 600
    members = [rng.choice(3, size=k, replace=False) for k in rng.integers(1, 4, n_groups)]
    group = np.concatenate([np.full(len(m), g) for g, m in enumerate(members)])
    dataset = np.concatenate(members)
    d = np.full(len(group), 2.0)
    cand = np.bincount(group, minlength=n_groups) > 1
    mask = connected_across_datasets(group, n_groups, dataset, 3, d, cand, min_total=20 * 60)
    chosen = np.unique(group[mask])
    n_sweeps = np.array([len(m) for m in members])
    assert np.all(n_sweeps[chosen] >= 2)  # single-sweep groups never (not candidates)
    assert n_sweeps[chosen].mean() > n_sweeps[cand].mean()
    assert np.all(np.bincount(dataset[mask], minlength=3) >= 20 * 60 / 12 / 20)


def test_quasi_random_with_several_sweeps(expt):
    both = combine([make_sweep(expt, d_min=3.0, seed=s, orientation_seed=s, identifier=str(s))
                    for s in (1, 2)])
    p = ScalingParams(reflection_selection_method="quasi_random", random_min_groups=300,
                      random_min_reflections=3000)
    _, table, result = scale(both.experiments, both.table, p)
    sel = result.selection
    assert 3000 <= sel.mask.sum() < 0.8 * len(sel.mask)
    assert _rms_from_truth(table, both.g_true) < 0.02


def test_a_sweep_without_selected_reflections_keeps_its_own():
    """Three sweeps; the only group of the third is too weak (mean I/sigma 0.5 < 1) to be a
    candidate: that sweep keeps all of its reflections, so that its model is determined."""
    group = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    dataset = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    i = np.array([100.0] * 6 + [5.0] * 2)
    v = np.full(8, 100.0)  # I/sigma 10, and 0.5 for group 3
    p = ScalingParams(reflection_selection_method="random", random_min_groups=1,
                      random_min_reflections=1)
    sel = select_for_minimisation(p, group, 4, dataset, 3, i, v, np.ones(8), np.ones(8))
    assert sel.mask[dataset == 2].all()
    assert sel.n_groups_used == 2 and sel.mask[:6].sum() == 2  # one random group + group 3
