"""Gaussian spots on pixels, evaluated only in a box around each spot (whole-array numpy).

A spot is a 2D Gaussian in pixel coordinates with centre (xc, yc) and
inverse covariance [[ia, ib], [ib, ic]]; the counts in a pixel are the
integral of the density over the pixel, taken as the mean of NSUB x NSUB
sub-pixel samples (midpoint rule; for sigma >= 0.5 px its error is far
below Poisson noise). Pixel (i, j) spans [i, i+1) x [j, j+1) in (fast, slow).

Every box pixel of every spot is one element of flat arrays (a few hundred
thousand per image), and sums over them are taken in the order of a loop
over spots, then rows, then pixels (``np.add.at`` and ``np.bincount`` add in
the order given). There is no compiled kernel: the simulator is the first
step of ``gonio demo``, which then starts without compiling anything.
"""

from __future__ import annotations

import numpy as np

NSUB = 3


#: Box pixels handled at once (a block of spots at a time): ~100 MB of work arrays.
BLOCK_PIXELS = 1 << 21


def _boxes(xc, yc, hx, hy, shape):
    """Each spot's box clipped to the panel: first fast and slow pixel, width, size."""
    _, ns, nf = shape
    i0 = np.maximum(np.floor(xc - hx).astype(np.int64), 0)
    i1 = np.minimum(np.floor(xc + hx).astype(np.int64) + 1, nf)
    j0 = np.maximum(np.floor(yc - hy).astype(np.int64), 0)
    j1 = np.minimum(np.floor(yc + hy).astype(np.int64) + 1, ns)
    width = np.maximum(i1 - i0, 0)
    return i0, j0, width, width * np.maximum(j1 - j0, 0)


def _box_pixels(panel, xc, yc, hx, hy, shape):
    """The pixels of the spots' boxes, spot by spot, row by row, in blocks of spots of
    about :data:`BLOCK_PIXELS` pixels: for each block (spot, flat index into an
    (n_panels, ns, nf) array, fast px i, slow px j)."""
    _, ns, nf = shape
    i0, j0, width, size = _boxes(xc, yc, hx, hy, shape)
    ends = np.cumsum(size)
    cuts = np.searchsorted(ends, np.arange(BLOCK_PIXELS, int(ends[-1]) if len(ends) else 0,
                                           BLOCK_PIXELS), side="right")
    for a, b in zip([0, *cuts], [*cuts, len(xc)]):
        if a == b:
            continue
        spot = np.repeat(np.arange(a, b), size[a:b])
        first = ends[a:b] - size[a:b] - (ends[a - 1] if a else 0)  # of each box, in the block
        within = np.arange(len(spot)) - np.repeat(first, size[a:b])
        dj, di = np.divmod(within, width[spot])
        i, j = i0[spot] + di, j0[spot] + dj
        yield spot, (np.asarray(panel, np.int64)[spot] * ns + j) * nf + i, i, j


def _pixel_fractions(i, j, xc, yc, ia, ib, ic, norm):
    """The fraction of each spot (arrays per box pixel) recorded in pixel (i, j)."""
    s = np.zeros(len(i))
    for u in range(NSUB):
        dx = i + (u + 0.5) / NSUB - xc
        for v in range(NSUB):
            dy = j + (v + 0.5) / NSUB - yc
            s += np.exp(-0.5 * (ia * dx * dx + 2.0 * ib * dx * dy + ic * dy * dy))
    return s * norm / (NSUB * NSUB)


def render_spots(image, panel, xc, yc, ia, ib, ic, norm, hx, hy, counts) -> None:
    """Add ``counts[k]`` x the pixel fractions of spot k to ``image`` (n_panels, ns, nf),
    in place."""
    target = image if image.flags.c_contiguous else np.ascontiguousarray(image)
    for spot, flat, i, j in _box_pixels(panel, xc, yc, hx, hy, image.shape):
        frac = _pixel_fractions(i, j, xc[spot], yc[spot], ia[spot], ib[spot], ic[spot],
                                norm[spot])
        np.add.at(target.reshape(-1), flat, counts[spot] * frac)
    if target is not image:
        image[...] = target


def spot_moments(valid, panel, xc, yc, ia, ib, ic, norm, hx, hy):
    """For each spot: the fraction of its profile on valid pixels and the centroid
    (pixel centres weighted by the expected counts) of that part (nan when none).
    ``valid`` is (n_panels, ns, nf) bool."""
    n = len(xc)
    frac, sx, sy = np.zeros(n), np.zeros(n), np.zeros(n)
    for spot, flat, i, j in _box_pixels(panel, xc, yc, hx, hy, valid.shape):
        on = valid.reshape(-1)[flat]
        spot, i, j = spot[on], i[on], j[on]
        w = _pixel_fractions(i, j, xc[spot], yc[spot], ia[spot], ib[spot], ic[spot],
                             norm[spot])
        # a spot's pixels all lie in one block: each sum starts from 0 in its block
        frac += np.bincount(spot, w, minlength=n)
        sx += np.bincount(spot, w * (i + 0.5), minlength=n)
        sy += np.bincount(spot, w * (j + 0.5), minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = np.where(frac > 0, sx / frac, np.nan)
        my = np.where(frac > 0, sy / frac, np.nan)
    return frac, mx, my
