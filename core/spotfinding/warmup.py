"""Compile (or load from the cache) the spot-finding kernels on tiny inputs.

Called by :mod:`gonio.core.jit` to prepare the kernels ahead of the first
``findspots`` (see ``UNITS`` there), in two units that can compile in two
processes at once: the threshold kernels (:func:`warm_up_threshold`, most of the
compilation) and the rest (:func:`warm_up`: labelling, spot measurement and the
strong table's shoeboxes; writing them in the table's DIALS bytes is the unit of
:mod:`gonio.core.io.shoebox_kernels`, which ``findspots`` lists after these two).
Both make the calls
:func:`gonio.core.spotfinding.finder.find_spots` makes, with its argument
types: every integer image is thresholded as int32 (int64 for 32-bit
unsigned and wider counts) and strong-pixel values are measured as float64,
so one image type covers the usual formats.
"""

from __future__ import annotations

import numpy as np


def _image(k: int = 0) -> np.ndarray:
    rng = np.random.default_rng(k)
    image = rng.poisson(2.0, (48, 40)).astype(np.int32)
    image[10 + k:13 + k, 10:13] += 300
    image[30:32, 25:28] += 80
    image[40, 5] += 500  # a one-pixel spot: dropped by min_spot_size (spot selection)
    image[:, 20] = -1  # a module gap
    return image


def warm_up_threshold() -> None:
    from .params import SpotFinderParams
    from .threshold import ALGORITHMS, strong_pixel_indices

    p = SpotFinderParams()
    static = np.ones((48, 40), bool)
    static[:, :2] = False
    for algorithm in ALGORITHMS:
        strong_pixel_indices(_image(), static, (-1.0, 1e6), algorithm=algorithm,
                             kernel_size=tuple(p.kernel_size), gain=p.gain,
                             sigma_background=p.sigma_background, sigma_strong=p.sigma_strong,
                             min_local=p.min_local, global_threshold=p.global_threshold)


def warm_up() -> None:
    from .finder import _table
    from .labelling import label_pixels
    from .spots import SpotPixels, make_shoeboxes, measure_spots

    images = [_image(0), _image(1)]
    # strong pixels as the threshold gives them: flat indices (int64) of the bright ones
    flat = [np.flatnonzero(im.reshape(-1) > 50).astype(np.int64) for im in images]
    ny, nx = images[0].shape
    z = np.repeat(np.arange(2, dtype=np.int64), [len(f) for f in flat])
    y, x = np.divmod(np.concatenate(flat), nx)
    value = np.concatenate([im.reshape(-1)[f].astype(np.float64) for im, f in zip(images, flat)])
    pix = SpotPixels(z, y, x, value, label_pixels(z, y, x, (ny, nx)))
    spots = measure_spots(pix)
    keep = pix.sizes() >= 2
    keep[0] = False
    shoeboxes = make_shoeboxes(pix, spots.bbox, 0, keep)
    _table(spots, keep, 0, shoeboxes)
