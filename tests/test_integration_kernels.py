"""The background estimators against Poisson truth."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("mu", [0.05, 0.8, 5.0, 60.0])
def test_glm_background_is_unbiased_for_poisson_counts(mu):
    """The robust Poisson GLM is Fisher-consistent: no bias at any count rate, also where
    most pixels are zero (a mean of the pixels below a threshold would be biased)."""
    from gonio.core.integration.box_kernels import glm_constant

    rng = np.random.default_rng(7)
    est = [glm_constant(rng.poisson(mu, 2000).astype(float), 2000, 1.345) for _ in range(200)]
    assert abs(np.mean(est) / mu - 1) < 0.02


def test_glm_background_ignores_a_neighbouring_spot():
    from gonio.core.integration.box_kernels import glm_constant

    rng = np.random.default_rng(8)
    y = rng.poisson(2.0, 3000).astype(float)
    y[:60] += rng.poisson(200.0, 60)  # 2 % of the pixels are a neighbour's spot
    # bounded influence: a 6-sigma-per-pixel contamination moves it by a few per cent
    # where the plain mean more than doubles
    assert abs(glm_constant(y, len(y), 1.345) / 2.0 - 1) < 0.08
    assert np.mean(y) > 5.0


def test_a_huge_tuning_constant_gives_the_plain_mean_at_once():
    """With no residual clipped (tuning constant 1e9) the GLM is the Poisson maximum
    likelihood, the plain mean; the expectation's Poisson sums once ran to mu + 1e9 sd."""
    import time

    from gonio.core.integration.box_kernels import glm_constant

    rng = np.random.default_rng(9)
    y = rng.poisson(3.0, 500).astype(float)
    y[:5] = 300.0
    glm_constant(y, len(y), 1.345)  # compiled
    t0 = time.perf_counter()
    assert glm_constant(y, len(y), 1e9) == pytest.approx(np.mean(y), rel=1e-6)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("outlier", [1, 2, 3, 4])
def test_simple_background_rejects_outliers(outlier):
    from gonio.core.integration.box_kernels import simple_background

    rng = np.random.default_rng(9)
    n = 3000
    y = rng.normal(100.0, 10.0, n)
    y[:30] += 500.0
    X = np.ones((n, 4))
    coef, keep = simple_background(y, X, n, 1, outlier, 3.0, 3.0, 1.5)
    assert not keep[:30].any()
    assert abs(coef[0] - 100.0) < 1.0
