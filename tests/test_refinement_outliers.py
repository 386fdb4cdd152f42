"""Outlier rejection: sauter_poon (Sauter & Poon 2010), alone and inside refinement, and the
C-steps of MCD."""

from __future__ import annotations

import numpy as np
import pytest
from test_indexing_synthetic import make_experiment, strong_spots

from gonio.core.errors import GonioError
from gonio.core.geometry.spots import centroid_px_to_mm
from gonio.core.refinement import RefinementParams, refine
from gonio.core.refinement.outliers import mcd_inliers, sauter_poon_inliers
from gonio.core.reflection_table import Flags


def test_sauter_poon_cuts_the_tail_beyond_the_rayleigh_core():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(3000, 2)) * 0.03  # mm: 0.17 px of a Pilatus
    d[:30] += rng.choice([-1, 1], size=(30, 2)) * rng.uniform(0.3, 1.5, size=(30, 2))
    ok = sauter_poon_inliers(d[:, 0], d[:, 1])
    assert not ok[:30].any()
    assert ok[30:].mean() > 0.99
    # the cut is a radius: everything kept lies inside everything rejected
    r = np.hypot(d[:, 0], d[:, 1])
    assert r[ok].max() < r[~ok].min()


def test_sauter_poon_keeps_clean_data_and_small_groups():
    rng = np.random.default_rng(4)
    d = rng.normal(size=(2000, 2)) * 0.05
    assert sauter_poon_inliers(d[:, 0], d[:, 1]).mean() > 0.99
    few = np.array([0.01, 0.02, 5.0])
    assert sauter_poon_inliers(few, few).all()  # below min_num_obs=20: not judged


def _indexed():
    truth = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=100, seed=5)
    strong, hkl, _ = strong_spots(truth, 3.0)
    strong["miller_index"] = hkl
    centroid_px_to_mm(truth, strong)
    return truth, strong


@pytest.mark.parametrize("px_sz", [None, (0.172, 0.172)])
def test_sauter_poon_in_refinement_flags_the_injected_outliers(px_sz):
    truth, refl = _indexed()
    n = len(refl)
    bad = np.arange(0, n, n // 25)[:25]  # spread over the scan and the detector
    rng = np.random.default_rng(0)
    refl["xyzobs.mm.value"][bad, 0] += rng.choice([-1, 1], len(bad)) * rng.uniform(0.5, 2.0, len(bad))
    refl["xyzobs.mm.value"][bad, 1] += rng.uniform(-0.5, 0.5, len(bad))
    _, out, result = refine(truth, refl, RefinementParams(outlier_algorithm="sauter_poon",
                                                          sauter_poon_px_sz=px_sz))
    flagged = out.get_flags(Flags.centroid_outlier)
    assert flagged[bad].all()
    assert not out.get_flags(Flags.used_in_refinement)[bad].any()
    good = np.setdiff1d(np.arange(n), bad)
    assert flagged[good].mean() < 0.03  # the good ones are kept
    assert result.rmsds[0] < 0.25 and result.rmsds[1] < 0.25  # the 0.2 px noise
    # without rejection the outliers spoil the fit
    _, _, plain = refine(truth, refl, RefinementParams(outlier_algorithm="null"))
    assert plain.rmsds[0] > 0.5


def test_sauter_poon_bad_pixel_size_is_an_error():
    truth, refl = _indexed()
    with pytest.raises(GonioError, match="px_sz"):
        refine(truth, refl, RefinementParams(outlier_algorithm="sauter_poon",
                                             sauter_poon_px_sz=(0.172, -1.0)))


def test_x4_sauter_poon_and_lbfgs_from_the_shell_reach_dials_rmsds(x4_session):
    from gonio.core.io.dials_refl import read_refl

    s, folder = x4_session
    head = s.head
    r = s.run_line("refine outlier.algorithm=sauter_poon sauter_poon.px_sz=0.172,-1")
    assert not r.ok and "px_sz" in r.text and s.head == head  # nothing changed
    r = s.run_line("refine outlier.algorithm=sauter_poon engine=LBFGS")
    assert r.ok, r.text
    assert "RMSDs by panel" not in r.text  # one panel
    dials = read_refl(folder / "indexed.refl")
    used = dials.get_flags(Flags.used_in_refinement)
    d = (dials["xyzcal.px"] - dials["xyzobs.px.value"])[used]
    theirs = np.sqrt(np.mean(d**2, axis=0))
    m = s.history.step(s.head).metrics
    assert m["rmsd_x_px"] <= 1.05 * theirs[0] and m["rmsd_y_px"] <= 1.05 * theirs[1]


def test_mcd_is_the_same_wherever_the_residuals_sit_and_whatever_their_units():
    """MCD is affine-equivariant: a systematic offset of the residuals (a million times
    their spread: the C-steps' sums of products must not lose it to cancellation) or
    other units change nothing; the planted outliers are found."""
    rng = np.random.default_rng(7)
    res = rng.normal(size=(3000, 3)) * [0.03, 0.02, 0.0004]
    res[:30] += [0.3, -0.2, 0.004]  # outliers, ten sigma away
    ok = mcd_inliers(res)
    assert not ok[:30].any() and ok[30:].mean() > 0.95
    shifted = res + np.array([0.03, -0.02, 0.0004]) * 1e6
    assert np.array_equal(mcd_inliers(shifted), ok)
    assert np.array_equal(mcd_inliers(res * [1000.0, 1.0, 57.3]), ok)


def test_the_c_steps_mean_and_covariance_from_sums_equal_the_direct_ones():
    from gonio.core.refinement.outliers import _masked_mean_cov, _stacked_nearest, _terms

    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    masks = rng.random((4, 500)) < 0.5
    mu, cov = _masked_mean_cov(_terms(x), masks, 3)
    for k, m in enumerate(masks):
        assert np.allclose(mu[k], x[m].mean(axis=0), rtol=0, atol=1e-13)
        assert np.allclose(cov[k], np.cov(x[m].T), rtol=0, atol=1e-13)
    # the h nearest rows in Mahalanobis distance, for each of the (mean, covariance) pairs
    near = _stacked_nearest(_terms(x), mu, cov, 100)
    for k in range(4):
        d = x - mu[k]
        d2 = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov[k]), d)
        assert near[k].sum() == 100 and np.array_equal(near[k], d2 <= np.sort(d2)[99])
