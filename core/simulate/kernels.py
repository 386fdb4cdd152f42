"""Numba kernels: Gaussian spots on pixels, evaluated only in a box around each spot.

A spot is a 2D Gaussian in pixel coordinates with centre (xc, yc) and
inverse covariance [[ia, ib], [ib, ic]]; the counts in a pixel are the
integral of the density over the pixel, taken as the mean of NSUB x NSUB
sub-pixel samples (midpoint rule; for sigma >= 0.5 px its error is far
below Poisson noise). Pixel (i, j) spans [i, i+1) x [j, j+1) in (fast, slow).
Compiled lazily (first call), cached on disk.
"""

from __future__ import annotations

import math

import numpy as np

from gonio.core.jit import INTERNAL, njit

NSUB = 3


@njit(**INTERNAL)
def _pixel_fraction(i, j, xc, yc, ia, ib, ic, norm):
    s = 0.0
    for u in range(NSUB):
        dx = i + (u + 0.5) / NSUB - xc
        for v in range(NSUB):
            dy = j + (v + 0.5) / NSUB - yc
            s += math.exp(-0.5 * (ia * dx * dx + 2.0 * ib * dx * dy + ic * dy * dy))
    return s * norm / (NSUB * NSUB)


@njit
def render_spots(image, panel, xc, yc, ia, ib, ic, norm, hx, hy, counts):
    """Add ``counts[k]`` x the pixel fractions of spot k to ``image`` (n_panels, ns, nf)."""
    n_panels, ns, nf = image.shape
    for k in range(len(xc)):
        p = panel[k]
        i0 = max(int(math.floor(xc[k] - hx[k])), 0)
        i1 = min(int(math.floor(xc[k] + hx[k])) + 1, nf)
        j0 = max(int(math.floor(yc[k] - hy[k])), 0)
        j1 = min(int(math.floor(yc[k] + hy[k])) + 1, ns)
        for j in range(j0, j1):
            for i in range(i0, i1):
                image[p, j, i] += counts[k] * _pixel_fraction(i, j, xc[k], yc[k], ia[k], ib[k],
                                                              ic[k], norm[k])


def spot_moments(valid, panel, xc, yc, ia, ib, ic, norm, hx, hy):
    """For each spot: the fraction of its profile on valid pixels and the centroid
    (pixel centres weighted by the expected counts) of that part. ``valid`` is
    (n_panels, ns, nf) bool."""
    frac, mx, my = np.zeros(len(xc)), np.zeros(len(xc)), np.zeros(len(xc))
    _spot_moments(valid, panel, xc, yc, ia, ib, ic, norm, hx, hy, frac, mx, my)
    return frac, mx, my


@njit
def _spot_moments(valid, panel, xc, yc, ia, ib, ic, norm, hx, hy, frac, mx, my):
    """:func:`spot_moments` into the caller's ``frac``, ``mx``, ``my`` (an allocation
    in a kernel compiles numpy's constructor with it)."""
    n = len(xc)
    n_panels, ns, nf = valid.shape
    for k in range(n):
        p = panel[k]
        i0 = max(int(math.floor(xc[k] - hx[k])), 0)
        i1 = min(int(math.floor(xc[k] + hx[k])) + 1, nf)
        j0 = max(int(math.floor(yc[k] - hy[k])), 0)
        j1 = min(int(math.floor(yc[k] + hy[k])) + 1, ns)
        s = 0.0
        sx = 0.0
        sy = 0.0
        for j in range(j0, j1):
            for i in range(i0, i1):
                if valid[p, j, i]:
                    w = _pixel_fraction(i, j, xc[k], yc[k], ia[k], ib[k], ic[k], norm[k])
                    s += w
                    sx += w * (i + 0.5)
                    sy += w * (j + 0.5)
        frac[k] = s
        if s > 0:
            mx[k] = sx / s
            my[k] = sy / s
        else:
            mx[k] = np.nan
            my[k] = np.nan


def warm_up() -> None:
    """Compile (or load from the cache) the kernels with the argument types of
    :func:`gonio.core.simulate.simulate.simulate` (see :mod:`gonio.core.jit`)."""
    from .physics import SpotProfiles

    cov = np.array([[[1.0, 0.2], [0.2, 1.5]], [[2.0, 0.0], [0.0, 1.0]]])
    spots = SpotProfiles.from_covariance(np.zeros(2, np.uint64),
                                         np.array([[5.0, 6.0, 0.5], [9.0, 3.0, 0.5]]), cov)
    valid = np.ones((1, 12, 14), bool)
    spot_moments(valid, *spots.args(slice(None)))
    render_spots(np.zeros((1, 12, 14)), *spots.args(np.array([0, 1])), np.ones(2))
