"""Scaling against truth: synthetic sweeps with known scale, decay and absorption-like terms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from scaling_synthetic import combine, deviation_from_truth, make_sweep

from gonio.core.merging import merge_equivalents
from gonio.core.reflection_table import Flags
from gonio.core.scaling import ScalingParams, scale


@pytest.fixture(scope="module")
def expt():
    return data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt")


@pytest.fixture(scope="module")
def sweep(expt):
    return make_sweep(expt, d_min=2.5)


@pytest.mark.parametrize("level", [None, "medium"])
def test_refined_scales_follow_the_applied_ones(sweep, level):
    exps, table, result = scale(sweep.experiments, sweep.table, ScalingParams(absorption_level=level))
    dev, _ = deviation_from_truth(table, sweep.g_true)
    assert np.sqrt(np.mean(dev ** 2)) < 0.01
    assert np.percentile(np.abs(dev), 99) < 0.02
    # the model is stored as DIALS stores it
    sm = exps[0].scaling_model
    assert sm["__id__"] == "physical" and sm["scale"]["n_parameters"] == 14  # 170 deg / 15 deg
    assert sm["decay"]["n_parameters"] == 11 and sm["absorption"]["n_parameters"] == (
        48 if level == "medium" else 24)
    assert len(sm["scale"]["est_standard_devs"]) == 14
    assert np.all(table["inverse_scale_factor_variance"][table.get_flags(Flags.scaled)] > 0)


def test_merged_intensities_closer_to_truth_after_scaling(sweep):
    _, table, _ = scale(sweep.experiments, sweep.table, ScalingParams())
    used = table.get_flags(Flags.scaled)
    sg = sweep.experiments[0].crystal.space_group
    hkl = table["miller_index"][used]
    g = table["inverse_scale_factor"][used]
    raw = merge_equivalents(hkl, table["intensity.sum.value"][used],
                            np.sqrt(table["intensity.sum.variance"][used]), sg)
    scaled = merge_equivalents(hkl, table["intensity.scale.value"][used] / g,
                               np.sqrt(table["intensity.scale.variance"][used]) / g, sg)
    truth = merge_equivalents(hkl, sweep.i_true[used], np.ones(used.sum()), sg)
    assert np.array_equal(raw.miller_index, truth.miller_index)
    r_raw = np.corrcoef(raw.intensity, truth.intensity)[0, 1]
    r_scaled = np.corrcoef(scaled.intensity, truth.intensity)[0, 1]
    assert r_scaled > r_raw
    # relative error of the merged intensities shrinks
    err = lambda m: np.median(np.abs(m.intensity / truth.intensity  # noqa: E731
                                     * np.median(truth.intensity / m.intensity) - 1))
    assert err(scaled) < 0.8 * err(raw)


def test_error_model_and_outliers(sweep):
    t = sweep.table.copy()
    rng = np.random.default_rng(4)
    strong = np.flatnonzero(t["intensity.sum.value"] > 3000)
    bad = rng.choice(strong, 30, replace=False)
    for k in ("sum", "prf"):
        t[f"intensity.{k}.value"][bad] *= 4.0
    _, table, result = scale(sweep.experiments, t, ScalingParams())
    a, b = result.error_model
    # the variances are Poisson: nothing to inflate (a = 1, b = 0)
    assert a == pytest.approx(1.0, abs=0.05)
    assert b < 0.02  # vs 0.037-0.053 on real data
    flagged = table.get_flags(Flags.outlier_in_scaling)
    assert flagged[bad].mean() > 0.9
    assert flagged.sum() < 3 * len(bad)


def test_two_sweeps_scaled_together_kb_and_physical(expt):
    a = make_sweep(expt, d_min=3.0, seed=1, amplitude=0.0, b_drift=0.0, absorption=0.0,
                   identifier="a")
    b = make_sweep(expt, d_min=3.0, seed=2, amplitude=0.0, b_drift=0.0, absorption=0.0,
                   overall_scale=0.5, overall_b=3.0, orientation_seed=1, identifier="b")
    both = combine([a, b])
    exps, table, result = scale(both.experiments, both.table, ScalingParams(model="KB"))
    k = [m.p_scale[0] for m in result.models]
    bb = [m.p_decay[0] for m in result.models]
    assert k[1] / k[0] == pytest.approx(0.5, rel=0.01)
    assert bb[1] - bb[0] == pytest.approx(3.0, abs=0.15)
    assert exps[1].scaling_model["__id__"] == "KB"
    # the physical model of each sweep finds the same relative scale
    _, table2, _ = scale(both.experiments, both.table, ScalingParams())
    dev, _ = deviation_from_truth(table2, both.g_true)
    assert np.sqrt(np.mean(dev ** 2)) < 0.01


def test_exclude_images_and_d_min(sweep):
    _, table, _ = scale(sweep.experiments, sweep.table,
                        ScalingParams(exclude_images="0:1:200", d_min=3.0))
    z = table["xyzobs.px.value"][:, 2]
    user = table.get_flags(Flags.user_excluded_in_scaling)
    assert user[(z < 199)].all() and user[table["d"] < 3.0].all()
    assert not table.get_flags(Flags.scaled)[user].any()
    assert not user[(z > 201) & (table["d"] > 3.0)].any()
