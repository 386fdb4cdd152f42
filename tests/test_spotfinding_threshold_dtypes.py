"""Strong-pixel masks of the threshold kernels against an independent numpy implementation
of DIALS's definitions, on small images of every pixel type a reader or a user may hand in.

The reference takes exact window sums with scipy.ndimage (int64 for integer counts; float
images hold multiples of 1/4 small enough that float64 sums are exact in any order) and
applies the tests as DIALS writes them (dials/algorithms/image/threshold/local.h:
a = n Q - S^2, c = gain S (n - 1 + nsig_b sqrt(2 (n - 1))), b = n v - S,
d = nsig_s sqrt(gain S n); dispersion: a > c and b > d). Pixels are valid when static and
lo < v < hi, and enter the sums when also v < 2**24. The images have spots on all four
edges (clipped windows), a masked block, a module gap, peaks above the int32 clip of the
kernels' sums of squares and, where the type holds it, a valid value above 2**24.
"""

import numpy as np
import pytest
from scipy import ndimage

from gonio.core.spotfinding import threshold as kernels
from gonio.core.spotfinding.threshold import strong_pixel_indices, threshold_image

BIG = 2**24
TRUSTED = {np.uint8: (-1.0, 250.0), np.int16: (-1.0, 30000.0), np.uint16: (-1.0, 65000.0),
           np.int32: (-1.0, 2.0**25), np.uint32: (-1.0, 2.0**25), np.int64: (-1.0, 2.0**40),
           np.float32: (-1.0, 2.0**25), np.float64: (-1.0, 2.0**25)}


def window_sums(weight, values, k):
    """n, S, Q over the clipped (2ky+1) x (2kx+1) window (float64, exact here)."""
    ones = np.ones((2 * k[1] + 1, 2 * k[0] + 1))

    def box(a):
        return ndimage.correlate(a, ones, mode="constant", cval=0)

    if values.dtype.kind in "iu":
        v = np.where(weight, values, 0).astype(np.int64)
        return (box(weight.astype(np.int64)).astype(float), box(v).astype(float),
                box(v * v).astype(float))
    v = np.where(weight, values, 0.0)
    return box(weight.astype(float)), box(v), box(v * v)


def dispersed(n, s, q, gain, nsig_b, min_local):
    with np.errstate(invalid="ignore"):
        a = n * q - s * s
        c = gain * s * (n - 1.0 + nsig_b * np.sqrt(np.maximum(2.0 * (n - 1.0), 0.0)))
    return (n >= min_local) & (s >= 0) & (a > c)


def reference(image, static, algorithm, k, gain, nsig_b, nsig_s, min_local, threshold):
    lo, hi = TRUSTED[image.dtype.type]
    v = image.astype(np.float64)
    valid = static & (v > lo) & (v < hi)
    summed = valid & (v < BIG)
    n, s, q = window_sums(summed, image, k)
    signal = valid & dispersed(n, s, q, gain, nsig_b, min_local)
    if algorithm == "dispersion":
        with np.errstate(invalid="ignore"):
            b = n * v - s
            d = nsig_s * np.sqrt(np.maximum(gain * s * n, 0.0))
        return signal & (v > threshold) & (b > d)
    h = max(min(k) - 1, 0)  # cores: Chebyshev distance >= min(kx, ky) to the background
    core = ndimage.binary_erosion(signal | ~valid, np.ones((2 * h + 1, 2 * h + 1), bool),
                                  border_value=1) & signal
    nb, sb, _ = window_sums(summed & ~core, image, (k[0] + 2, k[1] + 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(nb >= 2, sb / np.maximum(nb, 1), 0.0)
        return core & (v > threshold) & (v >= mean + nsig_s * np.sqrt(gain * mean))


def make_image(dtype, seed=0):
    """64 x 72 px: Poisson background, spots on the edges and inside, a gap, bright peaks."""
    rng = np.random.default_rng(seed)
    ny, nx = 64, 72
    yy, xx = np.mgrid[0:ny, 0:nx]
    flux = np.full((ny, nx), 4.0)
    centres = [(0, 20), (ny - 1, 50), (30, 0), (20, nx - 1), (ny - 2, 3)]
    centres += list(zip(rng.uniform(0, ny, 12), rng.uniform(0, nx, 12)))
    for cy, cx in centres:
        flux += 90.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2 ** 2))
    image = rng.poisson(flux).astype(np.int64)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = min(info.max, 2**40) if info else 2**26
    for (cy, cx), peak in zip(centres[5:9], (8000, 20000, 3 * 10**6, BIG + 5)):
        image[int(cy), int(cx)] = min(peak, top - 1)  # above the int32 clip; above 2**24
    image[int(centres[8][0]), int(centres[8][1]) - 1] = min(9000, top - 1)  # both in a window
    image[:, 40] = -1 if (info is None or info.min < 0) else 0  # a module gap (or dead column)
    if dtype in (np.uint32, np.int64):
        image[5, 5] = top  # beyond the trusted range: invalid
    if dtype == np.int64:
        image[10, 60] = 2**35  # valid: the image cannot be thresholded in int32
    if dtype == np.uint8:
        image = np.minimum(image, 255)
    if np.dtype(dtype).kind == "f":
        return (image.astype(np.float64) * 0.75).astype(dtype)  # exact multiples of 1/4
    return image.astype(dtype)


PARAMS = [dict(k=(3, 3), gain=1.0, nsig_b=6.0, nsig_s=3.0, min_local=2, threshold=0.0),
          dict(k=(2, 4), gain=1.7, nsig_b=4.0, nsig_s=2.5, min_local=20, threshold=5.0),
          dict(k=(6, 5), gain=0.8, nsig_b=5.0, nsig_s=3.0, min_local=2, threshold=0.0)]


@pytest.mark.parametrize("dtype", list(TRUSTED))
@pytest.mark.parametrize("params", PARAMS, ids=["defaults", "other", "wide_window"])
@pytest.mark.parametrize("algorithm", ["dispersion", "dispersion_extended"])
def test_masks_equal_the_dials_definition(dtype, params, algorithm):
    image = make_image(dtype)
    static = np.ones(image.shape, bool)
    static[12:20, 25:33] = False  # a masked block
    static[0, :10] = False
    ref = reference(image, static, algorithm, params["k"], params["gain"], params["nsig_b"],
                    params["nsig_s"], params["min_local"], params["threshold"])
    ours = threshold_image(image, static, TRUSTED[dtype], algorithm, kernel_size=params["k"],
                           gain=params["gain"], sigma_background=params["nsig_b"],
                           sigma_strong=params["nsig_s"], min_local=params["min_local"],
                           global_threshold=params["threshold"])
    assert ref.sum() >= 40  # spots found, on the edges too
    assert ref[:2].any() and ref[-2:].any() and ref[:, :2].any() and ref[:, -2:].any()
    assert np.array_equal(ours, ref)


def test_bright_peaks_take_the_exact_sums_and_bright_images_too():
    """Values at or above the clip of the int32 sums of squares (6620 counts for a 7 x 7
    window) are summed afresh where they sit in a window: a few of them, and an image
    where most pixels are (a background of 7000 counts), give the reference masks."""
    rng = np.random.default_rng(5)
    for background in (30.0, 7000.0):
        image = rng.poisson(np.full((50, 60), background)).astype(np.int32)
        image[10:13, 10:13] += 9000
        image[30, 40] += 40000
        static = np.ones(image.shape, bool)
        assert (image >= 6620).sum() >= 10
        for algorithm in ("dispersion", "dispersion_extended"):
            ref = reference(image, static, algorithm, (3, 3), 1.0, 6.0, 3.0, 2, 0.0)
            assert ref[10:13, 10:13].all()
            assert np.array_equal(threshold_image(image, static, TRUSTED[np.int32], algorithm),
                                  ref)


def test_one_specialisation_per_image_type():
    """Every integer type is thresholded as int32 and every float type as float64: each
    kernel compiles once per image type, whatever the images (the box sum twice for
    float images: their counts are int32, their values float64)."""
    static = np.ones((64, 72), bool)
    for dtype in TRUSTED:
        for algorithm in ("dispersion", "dispersion_extended"):
            strong_pixel_indices(make_image(dtype), static, TRUSTED[dtype], algorithm)
    assert len(kernels._threshold.signatures) == 2
    assert {sig[0].dtype.name for sig in kernels._threshold.signatures} == {"int32", "float64"}
    # its helpers (compiled with it, or nothing to load when it comes from the cache)
    for name in ("_slide_columns", "_candidates", "_exact_row", "_erode", "_background_test"):
        assert len(getattr(kernels, name).signatures) <= 2, name
    assert len(kernels._box_row.signatures) <= 3
