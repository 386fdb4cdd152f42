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

Window sums are running (sliding) box sums, the one-row-at-a-time form of a
summed-area table (Crow (1984)): column sums over the window's rows, slid
down the image, then summed across the window's columns; memory stays
O(width). The second stage of dispersion_extended only visits pixels that
passed the first, so it costs little more than dispersion. Values of 2**24
or more never enter the sums, as in DIALS.

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
def _slide_rows(image, static, lo, sat_hi, r, slot, ring_m, ring_x, ring_y, cm, cx, cy):
    """Move the column sums down one row: row r enters (r < 0: none) and the
    row held in ring slot ``slot`` (the one 2ky+1 rows above) leaves."""
    nx = image.shape[1]
    if r >= 0:
        for i in range(nx):
            u = image[r, i]
            f = 1.0 if static[r, i] & (u > lo) & (u < sat_hi) else 0.0
            v = f * float(u)
            cm[i] += f - ring_m[slot, i]
            cx[i] += v - ring_x[slot, i]
            cy[i] += v * v - ring_y[slot, i]
            ring_m[slot, i] = f
            ring_x[slot, i] = v
            ring_y[slot, i] = v * v
    else:
        for i in range(nx):
            cm[i] -= ring_m[slot, i]
            cx[i] -= ring_x[slot, i]
            cy[i] -= ring_y[slot, i]
            ring_m[slot, i] = 0.0
            ring_x[slot, i] = 0.0
            ring_y[slot, i] = 0.0


@numba.njit(cache=True, nogil=True)
def _window_row(cm, kx, wm):
    """wm[i] = sum of cm over columns [i-kx, i+kx] clipped to the row.

    Summed offset by offset: no loop-carried dependency, so it vectorises
    (a running prefix sum would be bound by the add latency).
    """
    nx = len(cm)
    wm[:] = 0.0
    for d in range(-kx, kx + 1):
        lo = max(0, -d)
        hi = min(nx, nx - d)
        if hi <= lo:
            continue
        dst = wm[lo:hi]
        src = cm[lo + d:hi + d]
        for i in range(hi - lo):
            dst[i] += src[i]


@numba.njit(cache=True, nogil=True)
def _local_pass(image, static, lo, hi, sat_hi, ky, kx, mode, gain, nsig_b, nsig_s,
                threshold, min_count, out, found):
    """One sweep over the image with window sums; ``mode`` picks the test.

    mode 0: dispersion strong-pixel test (DIALS ``dispersion``).
    mode 1: dispersion-only test, invalid pixels set (extended, first pass).
    Valid pixels: static and lo < v < hi; they enter the sums if v < sat_hi.
    Window sums: column sums over the window's rows (updated as the window
    slides down: add the entering row, subtract the leaving one, whose
    contributions a ring of 2ky+1 rows keeps), then summed across the
    window's columns; for integer counts every partial sum is an integer
    below 2**53, so the float64 arithmetic is exact. The flat indices of the
    valid pixels that pass go to ``found``; returns how many.
    """
    ny, nx = image.shape
    cm, cx, cy = np.zeros(nx), np.zeros(nx), np.zeros(nx)
    nring = 2 * ky + 1  # row contributions of the window's rows, to subtract when they leave
    ring_m, ring_x, ring_y = np.zeros((nring, nx)), np.zeros((nring, nx)), np.zeros((nring, nx))
    wm, wx, wy = np.empty(nx), np.empty(nx), np.empty(nx)
    res = np.empty(nx, np.bool_)
    n_found = 0
    for r in range(min(ky, ny)):
        _slide_rows(image, static, lo, sat_hi, r, r % nring, ring_m, ring_x, ring_y, cm, cx, cy)
    for j in range(ny):
        # row j+ky enters, row j-ky-1 (same ring slot) leaves
        r = j + ky
        _slide_rows(image, static, lo, sat_hi, r if r < ny else -1, r % nring,
                    ring_m, ring_x, ring_y, cm, cx, cy)
        _window_row(cm, kx, wm)
        _window_row(cx, kx, wx)
        _window_row(cy, kx, wy)
        for i in range(nx):
            v = float(image[j, i])
            m, x, y = wm[i], wx[i], wy[i]
            valid = static[j, i] & (image[j, i] > lo) & (image[j, i] < hi)
            # n Q - S^2 > gain S (n - 1 + nsig_b sqrt(2 (n - 1)))
            dispersed = m * y - x * x > gain * x * (m - 1.0 + nsig_b * np.sqrt(
                max(2.0 * (m - 1.0), 0.0)))
            r_ = valid & (m >= min_count) & (x >= 0) & dispersed
            if mode == 0:
                r_ = r_ & (v > threshold) & (m * v - x > nsig_s * np.sqrt(max(gain * x * m, 0.0)))
            res[i] = r_
        for i in range(nx):
            if res[i]:
                found[n_found] = j * nx + i
                n_found += 1
            if mode == 1:
                valid = static[j, i] & (image[j, i] > lo) & (image[j, i] < hi)
                out[j, i] = res[i] | ~valid
            else:
                out[j, i] = res[i]
    return n_found


@numba.njit(cache=True, nogil=True)
def _extended_final(image, static, lo, hi, signal, candidates, h, ky, kx, gain, nsig_s,
                    threshold, core, strong):
    """Second stage of dispersion_extended, visiting only candidate pixels.

    ``signal`` is the first-pass mask (invalid pixels set) and
    ``candidates`` the flat indices of its valid pixels. A candidate is a
    core pixel when its (2h+1)^2 window (clipped at the edges) holds no
    unset pixel, i.e. its Chebyshev distance to the background is at least
    h+1. Background = valid and not core; a core pixel is strong when
    v > threshold and v >= mean + nsig_s*sqrt(gain*mean), the mean taken
    over the background pixels (v < BIG) of its (2ky+1) x (2kx+1) window
    (0 when fewer than two). ``core`` must come in False. The flat indices
    of the strong pixels go to ``strong`` (raster order); returns how many.
    """
    ny, nx = image.shape
    cores = np.empty(len(candidates), np.int64)
    n_core = 0
    for c in candidates:
        j, i = c // nx, c % nx
        ok = True
        for jj in range(max(j - h, 0), min(j + h + 1, ny)):
            for ii in range(max(i - h, 0), min(i + h + 1, nx)):
                if not signal[jj, ii]:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            core[j, i] = True
            cores[n_core] = c
            n_core += 1
    n_strong = 0
    for c in cores[:n_core]:
        j, i = c // nx, c % nx
        v = image[j, i]
        if not v > threshold:
            continue
        m = 0
        x = 0.0
        for jj in range(max(j - ky, 0), min(j + ky + 1, ny)):
            for ii in range(max(i - kx, 0), min(i + kx + 1, nx)):
                u = image[jj, ii]
                if static[jj, ii] and not core[jj, ii] and u > lo and u < hi and u < BIG:
                    m += 1
                    x += u
        mean = x / m if m >= 2 else 0.0
        if v >= mean + nsig_s * np.sqrt(gain * mean):
            strong[n_strong] = c
            n_strong += 1
    return n_strong


def _prepare(image: np.ndarray) -> np.ndarray:
    """The image as one of the kernel dtypes (int32, int64 or float64), C-contiguous."""
    image = np.ascontiguousarray(image)
    if image.dtype.kind in "iu":
        if image.dtype.itemsize > 4 or image.dtype == np.uint32:
            return image.astype(np.int64)
        return image.astype(np.int32, copy=False)
    return image.astype(np.float64, copy=False)


def _bounds(image: np.ndarray, trusted_range):
    """(lo, hi, sat_hi) in the image's type: valid if lo < v < hi, summed if also v < sat_hi."""
    tmin, tmax = float(trusted_range[0]), float(trusted_range[1])
    if image.dtype.kind in "iu":
        info = np.iinfo(image.dtype)
        lo = int(np.clip(np.floor(tmin), info.min, info.max))
        hi = int(np.clip(np.ceil(tmax), info.min, info.max))
        return image.dtype.type(lo), image.dtype.type(hi), image.dtype.type(min(hi, BIG))
    return tmin, tmax, min(tmax, float(BIG))


def strong_pixel_indices(image: np.ndarray, static_mask: np.ndarray,
                         trusted_range=(-np.inf, np.inf), algorithm: str = DISPERSION_EXTENDED,
                         kernel_size=(3, 3), gain: float = 1.0, sigma_background: float = 6.0,
                         sigma_strong: float = 3.0, min_local: int = 2,
                         global_threshold: float = 0.0) -> np.ndarray:
    """Flat indices (raster order, int64) of the strong pixels of one panel image.

    ``image`` (slow, fast) counts; ``static_mask`` True where a pixel may be
    used (panel mask, user mask, resolution limits...); pixels are also
    invalid unless trusted_range[0] < value < trusted_range[1] (DIALS/dxtbx
    convention: both ends excluded, so Pilatus gaps at -1 are invalid).
    ``kernel_size`` is (kx, ky) half-widths in px: the window is
    (2*ky+1) rows by (2*kx+1) columns.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown threshold algorithm {algorithm!r}")
    image = _prepare(image)
    static = np.ascontiguousarray(static_mask, dtype=np.bool_)
    kx, ky = int(kernel_size[0]), int(kernel_size[1])
    lo, hi, sat_hi = _bounds(image, trusted_range)
    args = (float(gain), float(sigma_background), float(sigma_strong),
            float(global_threshold), int(min_local))
    found = np.empty(image.size, np.int64)  # pages are only touched as they fill
    mask = np.empty(image.shape, np.bool_)
    mode = 0 if algorithm == DISPERSION else 1
    n = _local_pass(image, static, lo, hi, sat_hi, ky, kx, mode, *args, mask, found)
    if algorithm == DISPERSION:
        return found[:n].copy()
    # extended: ``mask`` holds the not-background pixels; erode to spot cores and test
    # them against the mean of the background
    core = np.zeros(image.shape, np.bool_)
    strong = np.empty(n, np.int64)
    n = _extended_final(image, static, lo, hi, mask, found[:n], min(kx, ky) - 1, ky + 2, kx + 2,
                        float(gain), float(sigma_strong), float(global_threshold), core, strong)
    return np.sort(strong[:n])


def threshold_image(image: np.ndarray, static_mask: np.ndarray, trusted_range=(-np.inf, np.inf),
                    algorithm: str = DISPERSION_EXTENDED, kernel_size=(3, 3), gain: float = 1.0,
                    sigma_background: float = 6.0, sigma_strong: float = 3.0, min_local: int = 2,
                    global_threshold: float = 0.0) -> np.ndarray:
    """Strong-pixel mask (bool, shape of ``image``); arguments as :func:`strong_pixel_indices`."""
    out = np.zeros(np.shape(image), np.bool_)
    out.reshape(-1)[strong_pixel_indices(
        image, static_mask, trusted_range, algorithm, kernel_size, gain, sigma_background,
        sigma_strong, min_local, global_threshold)] = True
    return out
