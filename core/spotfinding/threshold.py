"""Local dispersion thresholds that pick the strong pixels of one image.

Both thresholds are those of DIALS spot finding (Parkhurst et al. (2014)
J. Appl. Cryst. 47, 512; Winter et al. (2018) Acta Cryst. D74, 85 for the
"extended" variant), which follow the XDS COLSPOT idea (Kabsch (2010) Acta
Cryst. D66, 125): in a background of Poisson counts the variance equals the
mean, so a local window whose index of dispersion var/mean is well above one
contains signal.

For each pixel the (2*ky+1) x (2*kx+1) window around it (clipped at the image
edges) is summed over *valid* pixels only: n pixels, sum S and sum of squares
Q, giving mean = S/n and unbiased variance (n*Q - S^2) / (n*(n-1)).

``dispersion``: a valid pixel with value v is strong when
  n >= min_local,
  var/mean > gain * (1 + sigma_background * sqrt(2/(n-1))),
  v > mean + sigma_strong * sqrt(gain * mean), and
  v > global_threshold.

``dispersion_extended``: (1) the dispersion test alone (no value test) marks
pixels that are not background, invalid pixels counting as not background;
(2) that set is eroded: only pixels whose Chebyshev distance to the nearest
background pixel is at least min(kx, ky) stay as spot cores; everything else
valid is background; (3) the mean of the background pixels in a window two
pixels wider in each direction gives the local mean, and a core pixel is
strong when v >= mean + sigma_strong*sqrt(gain*mean) and v > global_threshold.
This finds the weak edges of spots better than ``dispersion`` and keeps
strong spots from inflating their own background.

Window sums use summed-area tables (Crow (1984)), held as a ring of 2k+2 rows
so memory stays O(width). Integer images are summed in int64 (exact); values
of 2**24 or more never enter the sums, as in DIALS.

Kernels are numba ``njit(cache=True, nogil=True)`` and compile on first call.
"""

from __future__ import annotations

import numba
import numpy as np

BIG = 1 << 24  # counts at or above this never enter the window sums

DISPERSION = "dispersion"
DISPERSION_EXTENDED = "dispersion_extended"
ALGORITHMS = (DISPERSION_EXTENDED, DISPERSION)


@numba.njit(cache=True, nogil=True)
def _sat_row(image, static, tmin, tmax, use, r, ring_m, ring_x, ring_y, slot, prev):
    """Fill ring slot ``slot`` with summed-area-table row ``r``.

    A pixel enters when static[r, i] and tmin < v < tmax and v < BIG (and,
    if ``use`` has rows, use[r, i]).
    """
    nx = image.shape[1]
    has_use = use.shape[0] > 0
    m = 0
    x = ring_x[slot, 0] * 0
    y = x
    for i in range(nx):
        v = image[r, i]
        ok = static[r, i] and v > tmin and v < tmax and v < BIG
        if has_use:
            ok = ok and use[r, i]
        if ok:
            m += 1
            x += v
            y += v * v
        if r == 0:
            ring_m[slot, i] = m
            ring_x[slot, i] = x
            ring_y[slot, i] = y
        else:
            ring_m[slot, i] = ring_m[prev, i] + m
            ring_x[slot, i] = ring_x[prev, i] + x
            ring_y[slot, i] = ring_y[prev, i] + y


@numba.njit(cache=True, nogil=True)
def _local_pass(image, static, tmin, tmax, use, core, ky, kx, mode, gain, nsig_b, nsig_s,
                threshold, min_count, ring_m, ring_x, ring_y, out):
    """One sweep over the image with window sums; ``mode`` picks the test.

    mode 0: dispersion strong-pixel test (DIALS ``dispersion``).
    mode 1: dispersion-only test, invalid pixels set (extended, first pass).
    mode 2: extended final test against the mean of background pixels
            (``use`` = background, ``core`` = eroded non-background).
    """
    ny, nx = image.shape
    nring = ring_m.shape[0]
    for r in range(ny + ky):
        if r < ny:
            slot = r % nring
            prev = (r - 1) % nring
            _sat_row(image, static, tmin, tmax, use, r, ring_m, ring_x, ring_y, slot, prev)
        j = r - ky
        if j < 0:
            continue
        s1 = min(j + ky, ny - 1) % nring
        r0 = j - ky - 1
        s0 = r0 % nring if r0 >= 0 else 0
        for i in range(nx):
            v = image[j, i]
            valid = static[j, i] and v > tmin and v < tmax
            if not valid:
                out[j, i] = mode == 1
                continue
            c1 = min(i + kx, nx - 1)
            c0 = i - kx - 1
            m = ring_m[s1, c1]
            x = ring_x[s1, c1]
            y = ring_y[s1, c1]
            if c0 >= 0:
                m -= ring_m[s1, c0]
                x -= ring_x[s1, c0]
                y -= ring_y[s1, c0]
            if r0 >= 0:
                m -= ring_m[s0, c1]
                x -= ring_x[s0, c1]
                y -= ring_y[s0, c1]
                if c0 >= 0:
                    m += ring_m[s0, c0]
                    x += ring_x[s0, c0]
                    y += ring_y[s0, c0]
            if mode == 2:
                mean = x / m if m >= 2 else 0.0
                out[j, i] = (core[j, i] and v > threshold
                             and v >= mean + nsig_s * np.sqrt(gain * mean))
                continue
            result = False
            if m >= min_count and x >= 0 and (mode == 1 or v > threshold):
                a = m * y - x * x  # n^2 (n-1)/n * var * ... exact for integer data
                fm = float(m)
                fx = float(x)
                c = gain * fx * (fm - 1.0 + nsig_b * np.sqrt(2.0 * (fm - 1.0)))
                result = a > c
                if mode == 0 and result:
                    result = m * v - x > nsig_s * np.sqrt(gain * fx * fm)
            out[j, i] = result


@numba.njit(cache=True, nogil=True)
def _erode(flag, h, out):
    """out = flag pixels whose (2h+1)^2 window (clipped) holds no unflagged pixel.

    Equivalent to Chebyshev distance to the nearest unflagged pixel >= h+1,
    with the outside of the image counting as flagged.
    """
    ny, nx = flag.shape
    nring = 2 * h + 2
    ring = np.zeros((nring, nx), np.int32)
    for r in range(ny + h):
        if r < ny:
            slot = r % nring
            prev = (r - 1) % nring
            run = 0
            for i in range(nx):
                if not flag[r, i]:
                    run += 1
                ring[slot, i] = run if r == 0 else ring[prev, i] + run
        j = r - h
        if j < 0:
            continue
        s1 = min(j + h, ny - 1) % nring
        r0 = j - h - 1
        s0 = r0 % nring if r0 >= 0 else 0
        for i in range(nx):
            if not flag[j, i]:
                out[j, i] = False
                continue
            c1 = min(i + h, nx - 1)
            c0 = i - h - 1
            n = ring[s1, c1]
            if c0 >= 0:
                n -= ring[s1, c0]
            if r0 >= 0:
                n -= ring[s0, c1]
                if c0 >= 0:
                    n += ring[s0, c0]
            out[j, i] = n == 0


def _prepare(image: np.ndarray):
    """The image as a kernel dtype and the matching accumulator dtype."""
    image = np.ascontiguousarray(image)
    if image.dtype.kind in "iu":
        if image.dtype.itemsize > 4 or image.dtype == np.uint32:
            image = image.astype(np.int64)
        elif image.dtype != np.int32:
            image = image.astype(np.int32)
        return image, np.int64
    return image.astype(np.float64, copy=False), np.float64


def _rings(nring: int, nx: int, acc):
    return np.zeros((nring, nx), np.int64), np.zeros((nring, nx), acc), np.zeros((nring, nx), acc)


def threshold_image(image: np.ndarray, static_mask: np.ndarray, trusted_range=(-np.inf, np.inf),
                    algorithm: str = DISPERSION_EXTENDED, kernel_size=(3, 3), gain: float = 1.0,
                    sigma_background: float = 6.0, sigma_strong: float = 3.0, min_local: int = 2,
                    global_threshold: float = 0.0) -> np.ndarray:
    """Strong-pixel mask (bool, shape of ``image``) of one panel image.

    ``image`` (slow, fast) counts; ``static_mask`` True where a pixel may be
    used (panel mask, user mask, resolution limits...); pixels are also
    invalid unless trusted_range[0] < value < trusted_range[1] (DIALS/dxtbx
    convention: both ends excluded, so Pilatus gaps at -1 are invalid).
    ``kernel_size`` is (kx, ky) half-widths in px: the window is
    (2*ky+1) rows by (2*kx+1) columns.
    """
    image, acc = _prepare(image)
    static = np.ascontiguousarray(static_mask, dtype=np.bool_)
    kx, ky = int(kernel_size[0]), int(kernel_size[1])
    tmin, tmax = float(trusted_range[0]), float(trusted_range[1])
    out = np.empty(image.shape, np.bool_)
    none = np.zeros((0, 0), np.bool_)
    ring_m, ring_x, ring_y = _rings(2 * ky + 2, image.shape[1], acc)
    args = (float(gain), float(sigma_background), float(sigma_strong),
            float(global_threshold), int(min_local))
    if algorithm == DISPERSION:
        _local_pass(image, static, tmin, tmax, none, none, ky, kx, 0, *args,
                    ring_m, ring_x, ring_y, out)
        return out
    if algorithm != DISPERSION_EXTENDED:
        raise ValueError(f"unknown threshold algorithm {algorithm!r}")
    # pass 1: not-background (dispersion only; invalid pixels count as not background)
    _local_pass(image, static, tmin, tmax, none, none, ky, kx, 1, *args,
                ring_m, ring_x, ring_y, out)
    core = np.empty(image.shape, np.bool_)
    _erode(out, min(kx, ky) - 1, core)
    # background = valid and not core; its mean over a window 2 px wider
    background = ~core
    ky2, kx2 = ky + 2, kx + 2
    ring_m, ring_x, ring_y = _rings(2 * ky2 + 2, image.shape[1], acc)
    _local_pass(image, static, tmin, tmax, background, core, ky2, kx2, 2, *args,
                ring_m, ring_x, ring_y, out)
    return out
