"""The threshold's shortcuts give the strong pixels of the plain computation.

- The chord prefilter of integer images, in float32, keeps every pixel the exact
  test keeps: the same strong pixels as with no prefilter (every valid pixel
  tested exactly), for both algorithms, on images built so that many windows sit
  near the dispersion threshold (Poisson and over-dispersed backgrounds from 0.05
  to 3000 counts, spots, gaps, peaks above the int32 clip of the sums of squares),
  for several gains, sigma_background values and windows.
- uint32 images (Eiger counts, with 2**32 - 1 on masked pixels) are read as int32
  in place when the trusted range starts at -1 or above: the same strong pixels as
  the same counts in int64 (clipped into int32).
"""

import numpy as np
import pytest

from gonio.core.spotfinding import threshold as kernels
from gonio.core.spotfinding.threshold import strong_pixel_indices


def _near_threshold_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ny, nx = 160, 150
    mean = np.exp(rng.uniform(np.log(0.05), np.log(3000.0), (ny // 10, nx // 10)))
    mean = np.kron(mean, np.ones((10, 10)))
    image = rng.poisson(rng.gamma(4.0, mean / 4.0)).astype(np.int64)  # over-dispersed
    for _ in range(40):  # spots of every brightness
        y, x = rng.integers(3, ny - 3), rng.integers(3, nx - 3)
        image[y - 1:y + 2, x - 1:x + 2] += rng.poisson(rng.uniform(2, 40000), (3, 3))
    image[:, 70] = -1  # a module gap
    image[5, 5] = 9000  # above the int32 clip of the 7 x 7 sums of squares
    return image.astype(np.int32)


@pytest.mark.parametrize("algorithm", ["dispersion", "dispersion_extended"])
@pytest.mark.parametrize("gain, nsig_b, kernel", [(1.0, 6.0, (3, 3)), (0.5, 2.0, (3, 3)),
                                                 (3.0, 0.0, (2, 4)), (1.0, 1.0, (1, 1))])
def test_the_float32_prefilter_keeps_what_the_exact_test_keeps(monkeypatch, algorithm, gain,
                                                               nsig_b, kernel):
    static = np.ones((160, 150), bool)
    static[40:60, 100:130] = False
    n_window = (2 * kernel[0] + 1) * (2 * kernel[1] + 1)
    assert kernels._bounded(gain, nsig_b, *kernels._chord(n_window, nsig_b))
    n_total = 0
    for seed in range(3):
        image = _near_threshold_image(seed)
        args = dict(algorithm=algorithm, kernel_size=kernel, gain=gain, sigma_background=nsig_b,
                    sigma_strong=3.0, min_local=2)
        fast = strong_pixel_indices(image, static, (-1.0, 1e6), **args)
        with monkeypatch.context() as m:
            m.setattr(kernels, "_bounded", lambda *a: False)  # no prefilter
            exact = strong_pixel_indices(image, static, (-1.0, 1e6), **args)
        assert np.array_equal(fast, exact)
        n_total += len(fast)
    assert n_total > 300  # the images hold strong pixels to compare


def test_the_prefilter_is_not_used_where_its_bound_fails():
    assert kernels._bounded(1.0, 6.0, *kernels._chord(49, 6.0))
    assert not kernels._bounded(1e31, 6.0, 1.0, 1.0)
    assert not kernels._bounded(1.0, 6.0, -1.5, 1.0)
    assert not kernels._bounded(-1.0, 6.0, 1.0, 1.0)
    assert not kernels._bounded(1.0, -1.0, *kernels._chord(49, -1.0))
    assert not kernels._bounded(float("nan"), 6.0, 1.0, 1.0)
    # without the prefilter the pixels are still those of the definition
    image = _near_threshold_image(0)
    static = np.ones(image.shape, bool)
    strong = strong_pixel_indices(image, static, (-1.0, 1e6), gain=1e31)
    assert len(strong) == 0  # nothing is dispersed enough for such a gain


def _eiger_counts(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.poisson(0.8, (120, 130)).astype(np.uint32)
    for _ in range(25):
        y, x = rng.integers(2, 118), rng.integers(2, 128)
        image[y - 1:y + 2, x - 1:x + 2] += rng.poisson(rng.uniform(5, 3000), (3, 3)).astype(
            np.uint32)
    image[:, 60:62] = 2**32 - 1  # masked pixels (the module gap of an Eiger)
    image[10, 10:13] = 2**31 + 7  # beyond int32: invalid
    image[50, 20] = 2**31 - 5  # above the trusted range
    return image


@pytest.mark.parametrize("algorithm", ["dispersion", "dispersion_extended"])
@pytest.mark.parametrize("trusted", [(-1.0, 1e6), (0.0, 2.0**31 - 2), (-10.0, 1e6)])
def test_uint32_counts_read_in_place_give_the_clipped_counts_strong_pixels(algorithm, trusted):
    static = np.ones((120, 130), bool)
    for seed in range(2):
        image = _eiger_counts(seed)
        as_int32, _ = kernels._prepare(image, trusted, 49)
        # read in place exactly when the lower bound makes every value >= 2**31 invalid
        assert np.shares_memory(as_int32, image) == (trusted[0] >= -1)
        ours = strong_pixel_indices(image, static, trusted, algorithm=algorithm)
        clipped = strong_pixel_indices(image.astype(np.int64), static, trusted,
                                       algorithm=algorithm)
        assert np.array_equal(ours, clipped)
        assert len(ours) > 50
        assert not np.isin(np.flatnonzero(image >= 2**31 - 5), ours).any()
