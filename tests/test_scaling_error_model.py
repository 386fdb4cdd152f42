"""The error model's three minimisations against a known truth, and the R factors' mean.

Observations of each unique reflection on different scales g with errors drawn from
sigma'^2 = a^2 (sigma^2 + (b g I)^2) for known a, b: gonio's default (leave_one_out)
recovers a and b; DIALS's individual minimisation finds about a (n - 1) / n (its deviations
are scaled by sqrt((n-1)/n) about a mean that includes the observation) and the right b;
DIALS's regression overestimates a by 5-12 % (it divides by the observed, noisy I^2).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from scaling_synthetic import make_sweep

from gonio.core.merging import merging_statistics
from gonio.core.scaling import ScalingParams, scale
from gonio.core.scaling.error_model import refine_error_model


def simulate(a, b, mult, n_unique=3000, seed=0):
    rng = np.random.default_rng(seed)
    i_true = rng.exponential(3000.0, n_unique) + 50
    group = np.repeat(np.arange(n_unique), mult)
    g = rng.uniform(0.7, 1.3, len(group))
    expected = g * i_true[group]
    variance = expected + 20.0  # counting variance with a background
    sigma = a * np.sqrt(variance + (b * expected) ** 2)
    return group, n_unique, expected + rng.normal(0, 1, len(group)) * sigma, variance, g


CASES = [(1.0, 0.0), (1.5, 0.0), (1.2, 0.03), (1.0, 0.05)]


@pytest.mark.parametrize("a, b", CASES)
@pytest.mark.parametrize("mult", [3, 6])
def test_error_model_minimisations_against_truth(a, b, mult):
    data = simulate(a, b, mult)
    a1, b1 = refine_error_model("leave_one_out", *data)
    assert a1 == pytest.approx(a, rel=0.05)
    assert b1 == pytest.approx(b, abs=0.004)
    a2, b2 = refine_error_model("individual", *data)
    assert a2 == pytest.approx(a * (mult - 1) / mult, rel=0.09)  # 1-8 % above with b > 0
    assert b2 == pytest.approx(b, abs=0.005)
    a3, b3 = refine_error_model("regression", *data)
    assert 1.03 < a3 / a < 1.13
    assert b3 == pytest.approx(b, abs=0.007)


def test_engine_uses_the_chosen_minimisation():
    sweep = make_sweep(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt"), d_min=2.5)
    # summation intensities: the simulated profile and summation intensities are one and the
    # same number, so a profile/summation mix (combine) would carry w^2 + (1 - w)^2 of its
    # variance and a would come out ~1.1
    found = {m: scale(sweep.experiments, sweep.table,
                      ScalingParams(error_model_minimisation=m, intensity_choice="sum")
                      )[2].error_model
             for m in ("leave_one_out", "individual")}
    # Poisson errors: a = 1 (leave_one_out); individual: a (n - 1) / n at this multiplicity
    assert found["leave_one_out"][0] == pytest.approx(1.0, abs=0.05)
    assert 0.6 < found["individual"][0] < 0.95


def test_r_factors_about_the_weighted_mean():
    """Rmerge, Rmeas, Rpim about the merged (inverse-variance weighted) mean, as cctbx's
    merge_equivalents_obs (iotbx.merging_statistics, dials.scale) takes it."""
    rng = np.random.default_rng(3)
    n_unique, mult = 300, 5
    hkl = np.array([(h, k, l) for h in range(0, 7) for k in range(-6, 7) for l in range(-6, 7)
                    if (h, k, l) > (0, 0, 0)])[:n_unique]  # noqa: E741
    idx = np.repeat(np.arange(n_unique), mult)
    sigma = rng.uniform(5.0, 50.0, len(idx))  # very different weights within a group
    i = rng.exponential(500.0, n_unique)[idx] + rng.normal(0, 1, len(idx)) * sigma
    st = merging_statistics(hkl[idx], i, sigma, (60, 60, 60, 90, 90, 90), "P 1", n_bins=1)
    num = num_meas = num_pim = den = 0.0
    for j in range(n_unique):
        x, w = i[idx == j], 1 / sigma[idx == j] ** 2
        dev = np.abs(x - np.sum(w * x) / np.sum(w)).sum()
        num += dev
        num_meas += np.sqrt(mult / (mult - 1)) * dev
        num_pim += np.sqrt(1 / (mult - 1)) * dev
        den += x.sum()
    assert st.overall.r_merge == pytest.approx(num / den, rel=1e-9)
    assert st.overall.r_meas == pytest.approx(num_meas / den, rel=1e-9)
    assert st.overall.r_pim == pytest.approx(num_pim / den, rel=1e-9)
