"""The simulator's spot rendering (core/simulate/render.py) against the integral it
approximates and against a pixel-by-pixel evaluation of the same sum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gonio.core.simulate import render
from gonio.core.simulate.physics import SpotProfiles
from gonio.core.simulate.render import NSUB, render_spots, spot_moments


def reference(shape, spots: SpotProfiles, counts):
    """The midpoint-rule sum, one pixel and one spot at a time (plain Python)."""
    image = np.zeros(shape)
    for k in range(len(spots.xc)):
        p, xc, yc = spots.panel[k], spots.xc[k], spots.yc[k]
        ia, ib, ic, norm = spots.ia[k], spots.ib[k], spots.ic[k], spots.norm[k]
        for j in range(max(math.floor(yc - spots.hy[k]), 0),
                       min(math.floor(yc + spots.hy[k]) + 1, shape[1])):
            for i in range(max(math.floor(xc - spots.hx[k]), 0),
                           min(math.floor(xc + spots.hx[k]) + 1, shape[2])):
                s = 0.0
                for u in range(NSUB):
                    dx = i + (u + 0.5) / NSUB - xc
                    for v in range(NSUB):
                        dy = j + (v + 0.5) / NSUB - yc
                        s += math.exp(-0.5 * (ia * dx * dx + 2 * ib * dx * dy + ic * dy * dy))
                image[p, j, i] += counts[k] * s * norm / NSUB**2
    return image


def profiles(xy, cov, panel=None):
    xy = np.asarray(xy, float)
    xyz = np.column_stack([xy, np.zeros(len(xy))])
    return SpotProfiles.from_covariance(np.zeros(len(xy), np.uint64) if panel is None
                                        else np.asarray(panel), xyz, np.asarray(cov, float))


def test_one_spot_integrates_to_its_counts_at_its_centre():
    spots = profiles([[20.3, 14.7]], [[[1.2, 0.3], [0.3, 0.8]]])
    image = np.full((1, 30, 40), 5.0)
    render_spots(image, *spots.args(slice(None)), np.array([1000.0]))
    signal = image[0] - 5.0
    assert abs(signal.sum() - 1000.0) < 0.5  # the 5-sigma box holds all but ~1e-5
    jj, ii = np.mgrid[0:30, 0:40]
    assert abs((signal * (ii + 0.5)).sum() / signal.sum() - 20.3) < 1e-3
    assert abs((signal * (jj + 0.5)).sum() / signal.sum() - 14.7) < 1e-3
    strided = np.full((1, 40, 30), 5.0).transpose(0, 2, 1)  # not C-contiguous: still in place
    render_spots(strided, *spots.args(slice(None)), np.array([1000.0]))
    assert np.array_equal(strided, image)


@pytest.mark.parametrize("block", [1 << 21, 40])  # one block; many (some spots > 40 px)
def test_overlapping_and_clipped_spots_equal_the_pixel_by_pixel_sum(monkeypatch, block):
    monkeypatch.setattr(render, "BLOCK_PIXELS", block)
    rng = np.random.default_rng(4)
    n = 25
    xy = np.column_stack([rng.uniform(-2, 26, n), rng.uniform(-2, 20, n)])  # some off the edge
    a = rng.uniform(0.3, 3.0, n)
    c = rng.uniform(0.3, 3.0, n)
    b = rng.uniform(-0.5, 0.5, n) * np.sqrt(a * c)
    cov = np.stack([np.stack([a, b], 1), np.stack([b, c], 1)], 1)
    spots = profiles(xy, cov, panel=rng.integers(0, 2, n))
    counts = rng.uniform(10, 5000, n)
    image = np.zeros((2, 18, 24))
    render_spots(image, *spots.args(np.arange(n)), counts)
    np.testing.assert_allclose(image, reference(image.shape, spots, counts), rtol=1e-12,
                               atol=1e-9)
    valid = rng.random((2, 18, 24)) > 0.2
    frac, mx, my = spot_moments(valid, *spots.args(np.arange(n)))
    # each spot alone, on the valid pixels
    for k in range(n):
        one = reference(image.shape, profiles(xy[k:k + 1], cov[k:k + 1],
                                              panel=spots.panel[k:k + 1]), [1.0]) * valid
        assert frac[k] == pytest.approx(one.sum(), rel=1e-12, abs=1e-15)
        if one.sum() > 0:
            jj, ii = np.nonzero(one.sum(axis=0))
            w = one.sum(axis=0)[jj, ii]
            assert mx[k] == pytest.approx((w * (ii + 0.5)).sum() / w.sum(), rel=1e-12)
            assert my[k] == pytest.approx((w * (jj + 0.5)).sum() / w.sum(), rel=1e-12)
        else:
            assert np.isnan(mx[k]) and np.isnan(my[k])


def test_spot_moments_of_a_half_masked_and_an_unrecorded_spot():
    spots = profiles([[20.0, 15.0], [60.0, 15.0]], [[[1.0, 0.0], [0.0, 1.0]]] * 2)
    valid = np.ones((1, 30, 40), bool)
    valid[0, :, :20] = False  # the left half of the first spot is in a gap
    frac, mx, my = spot_moments(valid, *spots.args(slice(None)))
    assert abs(frac[0] - 0.5) < 1e-4
    # the centroid of the pixel centres weighted by the integral of a unit Gaussian over
    # each pixel column of the right half (sqrt(2 / pi) px right of the centre, plus the
    # bias of taking pixel centres)
    cdf = [0.5 * (1 + math.erf(t / math.sqrt(2))) for t in range(0, 7)]
    w = np.diff(cdf)
    assert abs(mx[0] - 20.0 - (w * (np.arange(6) + 0.5)).sum() / w.sum()) < 5e-3  # 3x3 samples
    assert abs(my[0] - 15.0) < 1e-5  # the 5-sigma box truncates both sides a little
    assert frac[1] == 0.0 and np.isnan(mx[1]) and np.isnan(my[1])  # off the panel
