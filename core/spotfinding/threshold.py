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
def _contributions(row, static_row, lo, sat_hi, f, w, q):
    """What one image row adds to the column sums: f = 1 where the pixel is
    summed (static, lo < v < sat_hi), w = its value there (else 0), q = w^2."""
    for i in range(len(row)):
        u = row[i]
        ok = static_row[i] & (u > lo) & (u < sat_hi)
        f[i] = ok
        w[i] = u if ok else 0
    for i in range(len(row)):
        q[i] = w[i]
        q[i] *= q[i]


@numba.njit(cache=True, nogil=True)
def _slide(col, entering, leaving):
    """col += entering - leaving, element-wise (the window moves down a row)."""
    for i in range(len(col)):
        col[i] += entering[i] - leaving[i]


@numba.njit(cache=True, nogil=True)
def _window_row(padded, out):
    """out[i] = sum of padded[i : i + width], width = len(padded) - len(out) + 1.

    ``padded`` is a row of column sums with kx zeros at each end, so the
    clipped windows of the edge pixels need no special case. Taps are added
    four at a time from slices (no wraparound index checks), which numba
    vectorises; a running sum would be bound by its add latency.
    """
    nx = len(out)
    width = len(padded) - nx + 1
    for t in range(0, width, 4):
        k = min(width - t, 4)
        a = padded[t:t + nx]
        if k == 1:
            for i in range(nx):
                out[i] = (out[i] if t else 0) + a[i]
            continue
        b = padded[t + 1:t + 1 + nx]
        if k == 2:
            for i in range(nx):
                out[i] = (out[i] if t else 0) + (a[i] + b[i])
            continue
        c = padded[t + 2:t + 2 + nx]
        if k == 3:
            for i in range(nx):
                out[i] = (out[i] if t else 0) + (a[i] + b[i]) + c[i]
            continue
        d = padded[t + 3:t + 3 + nx]
        for i in range(nx):
            out[i] = (out[i] if t else 0) + (a[i] + b[i]) + (c[i] + d[i])


@numba.njit(cache=True, nogil=True)
def _dispersed(m, x, y, gain, nsig_b):
    """The dispersion test on window sums n = m, S = x, Q = y (floats):
    n Q - S^2 > gain S (n - 1 + nsig_b sqrt(2 (n - 1)))."""
    return m * y - x * x > gain * x * (m - 1.0 + nsig_b * np.sqrt(max(2.0 * (m - 1.0), 0.0)))


@numba.njit(cache=True, nogil=True)
def _prefilter_row(row, static_row, lo, hi, gain, nsig_b, min_count, c0, c1, use_bound,
                   wm, wx, wy, mark_invalid, out, maybe):
    """Cheap first look at one row: ``maybe`` is set where the pixel is valid
    and may pass the dispersion test, ``out`` to maybe | (invalid and
    mark_invalid). Returns how many are maybe.

    With ``use_bound`` (gain >= 0 and nsig_b >= 0) the sqrt of the test is
    replaced by its chord over n in [2, nwin], c0 + c1 n <= n - 1 + nsig_b
    sqrt(2 (n - 1)) (sqrt is concave), lowered by a relative 1e-9 so that
    rounding cannot reject a pixel the exact test accepts; n < 2 never
    passes (n Q - S^2 = 0 there). Only the few pixels that pass are tested
    exactly, by the caller. Without the bound every valid pixel is maybe.
    """
    n = 0
    for i in range(len(row)):
        u = row[i]
        valid = static_row[i] & (u > lo) & (u < hi)
        m, x, y = float(wm[i]), float(wx[i]), float(wy[i])
        bound = (m >= 2.0) & (m * y - x * x > gain * x * (c0 + c1 * m))
        r_ = valid & (m >= min_count) & (x >= 0) & (bound | ~use_bound)
        maybe[i] = r_
        out[i] = r_ | (mark_invalid & ~valid)
        n += r_
    return n


@numba.njit(cache=True, nogil=True)
def _local_pass(image, static, lo, hi, sat_hi, ky, kx, mode, gain, nsig_b, nsig_s,
                threshold, min_count, out, found, ring_m, ring_x, ring_y, col_m, col_x, col_y,
                wm, wx, wy):
    """One sweep over the image with window sums; ``mode`` picks the test.

    mode 0: dispersion strong-pixel test (DIALS ``dispersion``).
    mode 1: dispersion-only test, invalid pixels set (extended, first pass).
    Valid pixels: static and lo < v < hi; they enter the sums if v < sat_hi.
    Window sums: column sums over the window's rows (``col_*``, padded with
    kx zeros each side; updated as the window slides down by adding the
    entering row's contributions and subtracting those of the leaving one,
    which a ring of 2ky+2 rows keeps), then summed across the window's
    columns. The caller picks exact accumulator types (integers for integer
    counts; float64 only while every sum stays below 2**53), so the sums are
    exact and the test sees the same numbers as a direct summation. The flat
    indices of the valid pixels that pass go to ``found``; returns how many.
    """
    ny, nx = image.shape
    nring = 2 * ky + 2
    ring_m[:] = 0
    ring_x[:] = 0
    ring_y[:] = 0
    col_m[:] = 0
    col_x[:] = 0
    col_y[:] = 0
    cm, cx, cy = col_m[kx:kx + nx], col_x[kx:kx + nx], col_y[kx:kx + nx]
    nwin = (2 * kx + 1) * (2 * ky + 1)
    use_bound = gain >= 0 and nsig_b >= 0
    c1 = 1.0 + nsig_b * (np.sqrt(2.0 * (nwin - 1)) - np.sqrt(2.0)) / (nwin - 2) if nwin > 2 \
        else 1.0
    c0 = -1.0 + nsig_b * np.sqrt(2.0) - (c1 - 1.0) * 2.0
    c0, c1 = c0 - 1e-9 * abs(c0), c1 - 1e-9 * abs(c1)
    maybe = np.empty(nx, np.bool_)
    n_found = 0
    for r in range(-ky, ny):
        # row r + ky enters the window of row r, row r - ky - 1 leaves it
        r_in, s_in, s_out = r + ky, (r + ky) % nring, (r - ky - 1) % nring
        if r_in < ny:
            _contributions(image[r_in], static[r_in], lo, sat_hi, ring_m[s_in], ring_x[s_in],
                           ring_y[s_in])
        else:
            ring_m[s_in] = 0
            ring_x[s_in] = 0
            ring_y[s_in] = 0
        _slide(cm, ring_m[s_in], ring_m[s_out])
        _slide(cx, ring_x[s_in], ring_x[s_out])
        _slide(cy, ring_y[s_in], ring_y[s_out])
        if r < 0:
            continue
        _window_row(col_m, wm)
        _window_row(col_x, wx)
        _window_row(col_y, wy)
        if _prefilter_row(image[r], static[r], lo, hi, gain, nsig_b, min_count, c0, c1,
                          use_bound, wm, wx, wy, mode == 1, out[r], maybe) == 0:
            continue
        for i in range(nx):
            if not maybe[i]:
                continue
            m, x = float(wm[i]), float(wx[i])
            ok = _dispersed(m, x, float(wy[i]), gain, nsig_b)
            if ok and mode == 0:
                v = float(image[r, i])
                ok = v > threshold and m * v - x > nsig_s * np.sqrt(max(gain * x * m, 0.0))
            if ok:
                found[n_found] = r * nx + i
                n_found += 1
            else:
                out[r, i] = False
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


def _sum_types(image: np.ndarray, lo, sat_hi, n_window: int) -> tuple:
    """Accumulator dtypes (count, sum, sum of squares) that keep every window sum exact.

    Counts: int32; integer images: int32 or int64 sums and float64 sums of
    squares while they stay below 2**53 (int64 beyond); float images (and
    integer ranges too wide for int64 squares): float64.
    """
    if image.dtype.kind == "f":
        return np.int32, np.float64, np.float64
    big = max(abs(int(lo) + 1), abs(int(sat_hi) - 1))  # largest |v| that enters the sums
    sq = n_window * big * big
    return (np.int32, np.int32 if n_window * big < 2**31 else np.int64,
            np.float64 if sq < 2**53 or sq >= 2**63 else np.int64)


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
    ny, nx = image.shape
    types = _sum_types(image, lo, sat_hi, (2 * kx + 1) * (2 * ky + 1))
    buffers = ([np.empty((2 * ky + 2, nx), t) for t in types]  # ring of row contributions
               + [np.empty(nx + 2 * kx, t) for t in types]  # padded column sums
               + [np.empty(nx, t) for t in types])  # window sums of one row
    n = _local_pass(image, static, lo, hi, sat_hi, ky, kx, mode, *args, mask, found, *buffers)
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
