"""French & Wilson (1978) amplitudes: the posterior moments, on synthetic Wilson data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from gonio.core.merge.french_wilson import binned_mean_intensity, french_wilson, posterior_moments
from gonio.core.merge.wilson import wilson_b


def _quadrature(I, sig, Sigma, centric):
    """<F>, sigF, <J> by direct numerical integration of the posterior (reference)."""
    def prior(J):
        return np.exp(-J / (2 * Sigma)) / np.sqrt(J) if centric else np.exp(-J / Sigma)

    def post(J):
        return np.exp(-(I - J) ** 2 / (2 * sig**2)) * prior(J)

    hi = max(I, 0) + 40 * sig
    pts = [max(I, 1e-9)]
    z = integrate.quad(post, 0, hi, limit=500, points=pts)[0]
    ef = integrate.quad(lambda J: np.sqrt(J) * post(J), 0, hi, limit=500, points=pts)[0] / z
    ej = integrate.quad(lambda J: J * post(J), 0, hi, limit=500, points=pts)[0] / z
    return ef, np.sqrt(ej - ef**2), ej


@pytest.mark.parametrize("centric", [False, True])
@pytest.mark.parametrize("h", [-3.5, -1.0, 0.0, 2.0, 5.0, 11.0, 13.0, 40.0])
def test_posterior_moments_match_quadrature(centric, h):
    sig, Sigma = 3.0, 80.0
    I = (h + sig / ((2 if centric else 1) * Sigma)) * sig
    r = posterior_moments([I], [sig], [Sigma], [centric])
    ef, sf, ej = _quadrature(I, sig, Sigma, centric)
    assert r.F[0] == pytest.approx(ef, rel=2e-4)
    assert r.sigF[0] == pytest.approx(sf, rel=2e-3)
    assert r.J[0] == pytest.approx(ej, rel=2e-4)


def test_french_wilson_table_values():
    """The acentric tables of French & Wilson (cctbx ac_zj, ac_zf): <J>/sigma and <F>/sqrt(sigma)."""
    # h = -3.9: ZJ 0.23037, h = 0: 0.79788 (= sqrt(2/pi)), h = 3: 3.00444 (ctruncate's tables)
    Sigma = 1e12  # sigma/Sigma -> 0 so that h = I/sigma
    r = posterior_moments([-3.9, 0.0, 3.0], [1.0] * 3, [Sigma] * 3, [False] * 3)
    assert r.J == pytest.approx([0.23037, 0.79788, 3.00444], abs=2e-5)


def test_strong_data_give_sqrt_i_and_negative_give_positive_f():
    I = np.array([1e4, 5e4, -30.0, -5.0, 0.0])
    sig = np.array([50.0, 100.0, 20.0, 20.0, 20.0])
    for centric in (False, True):
        r = posterior_moments(I, sig, np.full(5, 2e4), np.full(5, centric))
        assert r.F[:2] == pytest.approx(np.sqrt(I[:2]), rel=2e-4)
        assert r.sigF[:2] == pytest.approx(sig[:2] / (2 * np.sqrt(I[:2])), rel=2e-2)
        assert np.all(r.F[2:] > 0) and np.all(r.sigF[2:] > 0)
        assert r.F[2] < r.F[3] < r.F[4]  # more negative I -> smaller F


def test_rejection_below_h_minus_4():
    r = posterior_moments([-50.0, -39.0], [10.0, 10.0], [1e6, 1e6], [False, False])
    assert np.isnan(r.F[0]) and r.rejected[0]
    assert np.isfinite(r.F[1]) and not r.rejected[1]


def _wilson_data(n, centric, noise, seed, counting=True):
    """Wilson intensities (B = 20 A^2) with Gaussian noise: sigma^2 = noise * (I_true + 200)
    (counting statistics) or, with counting=False, noise * (Sigma + 200) (independent of I_true,
    the likelihood French & Wilson assume)."""
    rng = np.random.default_rng(seed)
    d = 1 / np.sqrt(rng.uniform(1 / 40**2, 1 / 1.8**2, n))
    Sigma = 10000 * np.exp(-20 / (2 * d * d))
    Itrue = Sigma * rng.standard_normal(n) ** 2 if centric else rng.exponential(1, n) * Sigma
    sig = np.sqrt(noise * ((Itrue if counting else Sigma) + 200.0))
    return d, Itrue, Itrue + rng.normal(size=n) * sig, sig, Sigma


def _r_linear(F, Ft):
    k = (F @ Ft) / (F @ F)
    return np.abs(k * F - Ft).sum() / Ft.sum()


@pytest.mark.parametrize("centric", [False, True])
def test_realistic_data_r_below_3_percent(centric):
    d, Itrue, I, sig, _ = _wilson_data(20000, centric, 1.0, seed=1)
    r = french_wilson(I, sig, d, np.ones(len(I)), np.full(len(I), centric))
    assert not r.rejected.any()
    assert _r_linear(r.F, np.sqrt(Itrue)) < 0.03


@pytest.mark.parametrize("centric", [False, True])
def test_weak_data_posterior_is_calibrated(centric):
    """Weak data (<I/sigma> ~ 9, many negative): F-W beats sqrt(max(I, 0)), is unbiased and its sigF is right."""
    d, Itrue, I, sig, _ = _wilson_data(40000, centric, 30.0, seed=2, counting=False)
    r = french_wilson(I, sig, d, np.ones(len(I)), np.full(len(I), centric))
    ok = ~r.rejected
    Ft, F, sF = np.sqrt(Itrue[ok]), r.F[ok], r.sigF[ok]
    naive = np.sqrt(np.clip(I[ok], 0, None))
    assert np.mean((F - Ft) ** 2) < 0.8 * np.mean((naive - Ft) ** 2)
    weak = F < np.quantile(F, 0.25)
    for sel in (np.ones(len(F), bool), weak):
        assert abs(np.mean(Ft[sel] - F[sel])) < 0.02 * np.mean(F[sel])
        assert np.sqrt(np.mean((Ft[sel] - F[sel]) ** 2)) / np.sqrt(np.mean(sF[sel] ** 2)) == \
            pytest.approx(1.0, abs=0.04)


def test_binned_mean_intensity_and_wilson_b():
    d, Itrue, I, sig, Sigma = _wilson_data(30000, False, 1.0, seed=3)
    est = binned_mean_intensity(I, d, np.ones(len(I)))
    inner = (d > 2.0) & (d < 20)
    assert np.median(np.abs(est[inner] / Sigma[inner] - 1)) < 0.05
    assert wilson_b(I, d, np.ones(len(I))) == pytest.approx(20.0, abs=1.0)
