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
O(width). The sums are exact (integer accumulators for integer counts), so
the masks are those of a direct evaluation of the definitions. The sqrt of
the dispersion test is first replaced by a lower bound (its chord), and
only the few pixels that pass that cheap test get the exact one. The
second stage of dispersion_extended only visits pixels that passed the
first, and runs a few rows behind it. Values of 2**24 or more never enter
the sums, as in DIALS.

Speed notes (measured; see docs/findspots.md): the kernels work on uint8
0/1 masks and row slices (numba vectorises neither bool arithmetic nor
indexing with possible negative wraparound), and the image-sized work
arrays are kept per thread between images (fresh ones cost page faults).
For integer counts the window count rides in the low bits of the sum
(S * 2**bits + n: one array less to slide), and all sums are int32 (eight
lanes of a 256-bit vector rather than four): values enter clipped to a
bound that keeps the sums of squares in range, and the few windows that
hold a clipped value (the strongest Bragg peaks) are summed afresh, exactly;
an image with too many such pixels falls back to wide sums. The second
stage runs every 16 rows of the first pass, on the rows it has just
finished, while they are still in cache: after the first pass the image
has left the cache, and visiting scattered spot pixels cost a memory
latency each (about 60 ns per core pixel against 20 ns in cache). It
erodes with per-column counts of set pixels over the window's rows (one
row enters, one leaves), and keeps per-column background sums with the
row they belong to, so that a spot's next row only adds and removes one
row of them; all of it on row slices, which vectorise, and without
numba's slice assignment (which copies through a temporary).

Kernels are declared with :func:`gonio.core.jit.njit` (nogil, cached on disk) and compile
on first call; integer and float counts each compile only their own path
(:func:`_local_pass`); the kernels that only other kernels call have no Python
entry point and no machine code of their own (``_internal``), and the tiny ones
used per pixel are inlined where numba types their caller (``_inline``): a
shorter compilation on the first run.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from gonio.core.jit import INTERNAL, njit

from .params import ALGORITHMS, DISPERSION, DISPERSION_EXTENDED

BIG = 1 << 24  # counts at or above this never enter the window sums
GROUP_GAP = 32  # px: cores of a row closer than this are visited as one span (second stage)
EXTENDED_BATCH = 16  # rows of the first pass between two visits of the second stage


# No kernel here divides by zero: numpy's error model spares compiling an exception
# path for every division and modulo (a shorter compilation, the same results).
_kernel = njit(error_model="numpy")
# Tiny kernels used per pixel are inlined where numba types their caller (as kernels
# of their own, linked by LLVM, the threshold ran 5-10 % slower). Not for a kernel
# whose callers rely on numba pruning its branches on a None-typed argument
# (``_local_pass``'s markers): inlined code keeps both branches.
_inline = njit(error_model="numpy", inline="always")
# Kernels called only from other kernels: no Python or C entry point and no machine code
# of their own (:data:`gonio.core.jit.INTERNAL`); their callers link and optimise their
# LLVM IR. For the larger ones this compiles faster than numba's inlining, which copies
# and types their code again inside the caller (the threshold unit: -11 % of its
# compile CPU, the same speed; benchmarks/figures.md).
_internal = njit(error_model="numpy", **INTERNAL)


@_internal
def _enter_row(row, static_row, lo, sat_hi, f, w, f_out, w_out, cm, cx, cy):
    """The window moves down a row: the row's contributions (f = 1 where the
    pixel is summed: static, lo < v < sat_hi; w = its value there, else 0)
    go to the ring and into the column sums, those of the row that leaves
    (f_out, w_out) come out; squares in cy's type (exact)."""
    for i in range(len(row)):
        u = row[i]
        ok = static_row[i] & np.uint8(u > lo) & np.uint8(u < sat_hi)
        a = u if ok else 0
        b = w_out[i]
        cm[i] += ok - f_out[i]
        cx[i] += a - b
        qa = cy.dtype.type(a)
        qb = cy.dtype.type(b)
        cy[i] += qa * qa - qb * qb
        f[i] = ok
        w[i] = a


@_internal
def _enter_row_packed(row, static_row, lo, sat_hi, bits, clip, p, p_out, cp, cy):
    """As :func:`_enter_row` with count and sum packed in one integer,
    v * 2**bits + f (the count in the low ``bits`` bits), so that one
    array carries both through the ring, the column and the window sums.
    With ``clip`` > 0, values enter clipped to [-clip, clip] (so that narrow
    accumulators cannot overflow); returns whether any had |v| >= clip."""
    t = cp.dtype.type
    if clip:
        c_lo, c_hi = -clip, clip
    else:  # no clipping: bounds that hold every value entering the sums, and 0
        c_lo, c_hi = min(lo, lo - lo), max(sat_hi, sat_hi - sat_hi)
    v_min, v_max = c_hi, c_lo
    for i in range(len(row)):
        u = row[i]
        ok = static_row[i] & np.uint8(u > lo) & np.uint8(u < sat_hi)
        a = u if ok else 0
        v_min, v_max = min(v_min, a), max(v_max, a)
        a = min(max(a, c_lo), c_hi)
        q = p_out[i]
        b = q >> bits
        pa = (t(a) << bits) | t(ok)
        cp[i] += pa - q
        qa = cy.dtype.type(a)
        qb = cy.dtype.type(b)
        cy[i] += qa * qa - qb * qb
        p[i] = pa
    return clip != 0 and (v_max >= clip or v_min <= -clip)


@_inline
def _unpack(p, bits):
    """(n, S) from a packed sum S * 2**bits + n (integer counts only)."""
    return p & ((1 << bits) - 1), p >> bits


@_internal
def _valid_row(row, static_row, lo, hi, valid):
    """valid = static and lo < v < hi (0/1)."""
    for i in range(len(row)):
        u = row[i]
        valid[i] = static_row[i] & np.uint8(u > lo) & np.uint8(u < hi)


@_internal
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


@_inline
def _dispersed(m, x, y, gain, nsig_b):
    """The dispersion test on window sums n = m, S = x, Q = y (floats):
    n Q - S^2 > gain S (n - 1 + nsig_b sqrt(2 (n - 1)))."""
    return m * y - x * x > gain * x * (m - 1.0 + nsig_b * np.sqrt(max(2.0 * (m - 1.0), 0.0)))


@_internal
def _prefilter_row(valid, gain, min_count, c0, c1, use_bound, bits, fsum, wm, wx, wy,
                   mark_invalid, out, maybe):
    """Cheap first look at one row: ``maybe`` is set where the pixel is valid
    and may pass the dispersion test, ``out`` to maybe | (invalid and
    mark_invalid) (both uint8 0/1). Returns whether any is maybe.

    With ``use_bound`` (gain >= 0 and nsig_b >= 0) the sqrt of the test is
    replaced by its chord over n in [2, nwin], c0 + c1 n <= n - 1 + nsig_b
    sqrt(2 (n - 1)) (sqrt is concave), lowered by a relative 1e-9 so that
    rounding cannot reject a pixel the exact test accepts; n < 2 never
    passes (n Q - S^2 = 0 there). Only the few pixels that pass are tested
    exactly, by the caller. Without the bound every valid pixel is maybe.
    """
    no_bound = np.uint8(not use_bound)
    any_ = np.uint8(0)
    for i in range(len(valid)):
        if fsum is not None:  # float counts (see :func:`_local_pass` for the two markers)
            m, x = float(wm[i]), float(wx[i])
        elif bits is not None:  # count and sum packed in wx
            mi, xi = _unpack(wx[i], bits)
            m, x = float(mi), float(xi)
        y = float(wy[i])
        v = np.uint8(valid[i] & 1)
        r_ = v & np.uint8(m >= min_count) & np.uint8(x >= 0) & (no_bound | (
            np.uint8(m >= 2.0) & np.uint8(m * y - x * x > gain * x * (c0 + c1 * m))))
        maybe[i] = r_
        out[i] = r_ | (mark_invalid & (v ^ np.uint8(1)))
        any_ |= r_
    return any_


@_kernel
def _local_pass(image, static, lo, hi, sat_hi, ky, kx, mode, gain, nsig_b, nsig_s,
                threshold, min_count, bits, fsum, clip, big, force, row_work, out, found, ring_m,
                ring_x, col_m, col_x, col_y, wm, wx, wy, ext):
    """One sweep over the image with window sums; ``mode`` picks the test.

    mode 0: dispersion strong-pixel test (DIALS ``dispersion``).
    mode 1: dispersion-only test, invalid pixels set (extended, first
    pass), and the second stage of dispersion_extended a few rows behind,
    while those rows are still in cache (:func:`_extended_rows`, work
    arrays and state in ``ext``).
    Valid pixels: static and lo < v < hi; they enter the sums if v < sat_hi.
    Window sums: column sums over the window's rows (``col_*``, padded with
    kx zeros each side; updated as the window slides down by adding the
    entering row's contributions and subtracting those of the leaving one,
    which a ring of 2ky+2 rows keeps), then summed across the window's
    columns. The caller picks exact accumulator types (integers for integer
    counts; float64 only while every sum stays below 2**53), so the sums are
    exact and the test sees the same numbers as a direct summation. The flat
    indices of the valid pixels that pass go to ``found``; returns how many.

    With ``clip`` > 0 (integer counts, narrow accumulators) values enter the
    running sums clipped; the few pixels with |v| >= clip are listed in
    ``big`` (rows, columns), and the pixels whose windows hold one are
    ``force``d through the test with window sums taken directly. Returns -1
    when ``big`` fills up: the caller then runs again with wide accumulators.
    ``row_work`` = (maybe, its uint64 view, no_pixels, valid): row-sized work
    arrays from the caller (an allocation in a kernel compiles numpy's
    constructor along with it), ``maybe`` and ``no_pixels`` all 0.

    Integer and float counts take different paths, picked by two markers
    that numba reads at compile time (it drops the branches of an
    ``x is None`` test on an argument typed None): integer counts pass
    ``bits`` (> 0: count and sum packed) and ``fsum`` = None, float counts
    ``bits`` = None and ``fsum`` = 0.0. Each compiles only its own path.
    """
    ny, nx = image.shape
    nring = 2 * ky + 2
    ring_m[:] = 0
    ring_x[:] = 0
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
    maybe, maybe_words, no_pixels, valid_buf = row_work
    n_found = np.int64(0)  # not the literal 0: callees get one signature
    n_big, b0 = 0, 0  # big pixels listed; the first one that may be in the window of row r
    for r in range(-ky, ny):
        # row r + ky enters the window of row r, row r - ky - 1 leaves it
        r_in, s_in, s_out = r + ky, (r + ky) % nring, (r - ky - 1) % nring
        # below the last row, an all-masked row enters
        row_in, static_in = image[min(r_in, ny - 1)], static[r_in] if r_in < ny else no_pixels
        if fsum is not None:  # float counts: never packed
            _enter_row(row_in, static_in, lo, sat_hi, ring_m[s_in], ring_x[s_in], ring_m[s_out],
                       ring_x[s_out], cm, cx, cy)
        elif bits is not None:
            if _enter_row_packed(row_in, static_in, lo, sat_hi, bits, clip, ring_x[s_in],
                                 ring_x[s_out], cx, cy):
                for i in range(nx):
                    u = row_in[i]
                    if static_in[i] and lo < u < sat_hi and (u >= clip or u <= -clip):
                        if n_big == big.shape[1]:
                            return -1
                        big[0, n_big], big[1, n_big] = r_in, i
                        n_big += 1
        if r < 0:
            continue
        if fsum is not None:
            _window_row(col_m, wm)
        _window_row(col_x, wx)
        _window_row(col_y, wy)
        if sat_hi == hi:  # valid = summed: the row's count contributions (bit 0)
            valid = ring_m[r % nring]  # with bits, ring_m is ring_x
        else:
            valid = valid_buf
            _valid_row(image[r], static[r], lo, hi, valid)
        any_ = _prefilter_row(valid, gain, min_count, c0, c1, use_bound, bits, fsum, wm, wx, wy,
                              np.uint8(mode == 1), out[r], maybe)
        while b0 < n_big and big[0, b0] < r - ky:
            b0 += 1
        b1 = b0
        while b1 < n_big and big[0, b1] <= r + ky:  # windows with a clipped value
            for i in range(max(big[1, b1] - kx, 0), min(big[1, b1] + kx + 1, nx)):
                force[i] = 1
                maybe[i] = valid[i] & 1
                out[r, i] |= maybe[i]
                any_ |= maybe[i]
            b1 += 1
        if any_:
            n_found = _test_maybe(image, static, lo, sat_hi, r, ky, kx, mode, gain, nsig_b,
                                  nsig_s, threshold, min_count, bits, fsum, maybe, maybe_words,
                                  force, wm, wx, wy, out, found, n_found)
        for b in range(b0, b1):
            force[max(big[1, b] - kx, 0):min(big[1, b] + kx + 1, nx)] = 0
        if mode == 1 and (r % EXTENDED_BATCH == EXTENDED_BATCH - 1 or r == ny - 1):
            r_done = r if r < ny - 1 else r + ext[0] + ext[1]  # the last rows: all of them
            _extended_rows(r_done, image, static, lo, sat_hi, out, found, n_found, gain, nsig_s,
                           threshold, ext)
    return n_found


@_internal
def _test_maybe(image, static, lo, sat_hi, r, ky, kx, mode, gain, nsig_b, nsig_s, threshold,
                min_count, bits, fsum, maybe, maybe_words, force, wm, wx, wy, out, found,
                n_found):
    """The exact test on the ``maybe`` pixels of row r (window sums taken
    directly where ``force``d; ``maybe_words``: ``maybe`` viewed as uint64);
    returns the new count of ``found``."""
    nx = image.shape[1]
    for word in range(len(maybe_words)):  # skip eight pixels at a time
        if maybe_words[word] == 0:
            continue
        for i in range(8 * word, min(8 * word + 8, nx)):
            if not maybe[i]:
                continue
            if bits is not None and force[i]:  # (integer counts only)
                mi, xi, yi = _direct_sums(image, static, lo, sat_hi, r, i, ky, kx)
                if not (mi >= min_count and xi >= 0):
                    out[r, i] = 0
                    continue
                m, x, y = float(mi), float(xi), float(yi)
            elif fsum is not None:  # float counts
                m, x, y = float(wm[i]), float(wx[i]), float(wy[i])
            elif bits is not None:  # integer counts, packed
                mi, xi = _unpack(wx[i], bits)
                m, x, y = float(mi), float(xi), float(wy[i])
            n_found = _exact_test(image, r, i, mode, gain, nsig_b, nsig_s, threshold, m, x, y,
                                  out, found, n_found)
    return n_found


@_inline
def _direct_sums(image, static, lo, sat_hi, r, i, ky, kx):
    """Count, sum and sum of squares (int64, exact) of the window of (r, i), summed directly."""
    ny, nx = image.shape
    m, x, y = np.int64(0), np.int64(0), np.int64(0)
    for jj in range(max(r - ky, 0), min(r + ky + 1, ny)):
        for ii in range(max(i - kx, 0), min(i + kx + 1, nx)):
            u = image[jj, ii]
            if static[jj, ii] and lo < u < sat_hi:
                m += 1
                x += np.int64(u)
                y += np.int64(u) * np.int64(u)
    return m, x, y


@_inline
def _exact_test(image, r, i, mode, gain, nsig_b, nsig_s, threshold, wm, wx, wy, out, found,
                n_found):
    """The full test on pixel (r, i), which passed the prefilter (window sums
    as floats): append it to ``found`` or clear it in ``out``; returns the new count."""
    m, x = wm, wx
    ok = _dispersed(m, x, wy, gain, nsig_b)
    if ok and mode == 0:
        v = float(image[r, i])
        ok = v > threshold and m * v - x > nsig_s * np.sqrt(max(gain * x * m, 0.0))
    if ok:
        found[n_found] = r * image.shape[1] + i
        return n_found + 1
    out[r, i] = 0
    return n_found


@_internal
def _extended_rows(r_done, image, static, lo, sat_hi, signal, found, n_found, gain, nsig_s,
                   threshold, ext):
    """Second stage of dispersion_extended on the rows that the first pass,
    done up to row ``r_done``, has made ready.

    ``signal`` is the first-pass mask (invalid pixels set) and ``found``
    the flat indices of its valid pixels (the candidates, raster order). A
    candidate is a core pixel when its (2h+1)^2 window (clipped at the
    edges) holds no unset pixel, i.e. its Chebyshev distance to the
    background is at least h+1; row q is eroded once signal rows up to
    q + h are final. Background = valid and not core; a core pixel is strong
    when v > threshold and v >= mean + nsig_s*sqrt(gain*mean), the mean
    taken over the background pixels (v < BIG) of its (2ky+1) x (2kx+1)
    window (0 when fewer than two); row p is tested once core rows up to
    p + ky are marked.

    ``ext`` = (h, ky, kx, bits, zero, core, cores, strong, col_p, col_row,
    col_set, state): ``core`` (uint8, all 0 at the start) marks the cores,
    listed in ``cores``; the strong pixels go to ``strong`` (raster order);
    ``bits``, ``zero``, ``col_p`` and ``col_row`` as in :func:`_test_row`,
    ``col_set`` as in :func:`_erode_row`; ``state`` (8 int64, all 0 at the
    start) holds the next row to erode, the next candidate, the number of
    cores, the next row to test, the next core, the number of strong
    pixels and the rows counted in ``col_set``.
    """
    h, ky, kx, bits, zero, core, cores, strong, col_p, col_row, col_set, state = ext
    ny, nx = image.shape
    while state[0] < min(r_done - h, ny - 1) + 1:
        q, k = state[0], state[1]
        while k < n_found and found[k] < (q + 1) * nx:
            k += 1
        if k > state[1]:
            state[2] = _erode_row(signal, found[state[1]:k], q, h, col_set, state[6:8], core,
                                  cores, state[2])
        state[0], state[1] = q + 1, k
    while state[3] < min(r_done - h - ky, ny - 1) + 1:
        p, k = state[3], state[4]
        while k < state[2] and cores[k] < (p + 1) * nx:
            k += 1
        if k > state[4]:
            state[5] = _test_row(image, static, lo, sat_hi, cores[state[4]:k], p, ky, kx, gain,
                                 nsig_s, threshold, bits, zero, core, col_p, col_row, strong,
                                 state[5], GROUP_GAP)
        state[3], state[4] = p + 1, k


@_internal
def _erode_row(signal, candidates, q, h, col_set, rows, core, cores, n_core):
    """Marks in ``core`` (and appends to ``cores`` after the first
    ``n_core``) the candidates of row q (flat indices, in order) whose
    (2h+1)^2 window of ``signal`` (clipped at the edges) is all set; returns
    the new number of cores.

    A separable erosion: ``col_set`` counts the set pixels of each column
    over the rows ``rows`` = [first, end) it holds, brought to the window's
    rows q-h..q+h by adding the rows that enter and removing those that
    leave (row slices, which vectorise); a candidate is a core when the
    count is full in its 2h+1 columns (one scan along the row).
    """
    ny, nx = signal.shape
    j0, j1 = max(q - h, 0), min(q + h + 1, ny)
    if rows[1] <= j0 or rows[0] > j0:  # nothing to keep: start afresh
        rows[0] = rows[1] = j0
        for i in range(nx):
            col_set[i] = 0
    while rows[1] < j1:
        s = signal[rows[1]]
        for i in range(nx):
            col_set[i] += s[i]
        rows[1] += 1
    while rows[0] < j0:
        s = signal[rows[0]]
        for i in range(nx):
            col_set[i] -= s[i]
        rows[0] += 1
    full = j1 - j0
    core_flat = core.reshape(-1)
    last_unset, t = -nx - h - 1, 0  # the last column seen with an unset pixel; next to see
    for c in candidates:
        i = c - q * nx
        t = max(t, i - h)
        while t <= min(i + h, nx - 1):
            last_unset = t if col_set[t] != full else last_unset
            t += 1
        is_core = np.uint8(last_unset < i - h)  # branch-free: about one in three is a core
        core_flat[c] = is_core
        cores[n_core] = c
        n_core += is_core
    return n_core


@_internal
def _add_background_row(image, static, core, lo, sat_hi, bits, j, c0, c1, sign, col_p):
    """Adds (sign = 1) or removes (-1) the background pixels of row j,
    columns c0..c1-1, to or from the packed column sums (v * 2**bits + 1 per
    pixel)."""
    v, s, c = image[j, c0:c1], static[j, c0:c1], core[j, c0:c1]  # slices: no index checks
    cp = col_p[c0:c1]
    for t in range(len(v)):
        u = v[t]
        ok = s[t] & (c[t] ^ np.uint8(1)) & np.uint8(u > lo) & np.uint8(u < sat_hi)
        cp[t] += sign * (((np.int64(u) << bits) | 1) if ok else np.int64(0))


@_internal
def _test_row(image, static, lo, sat_hi, cores, p, ky, kx, gain, nsig_s, threshold, bits, zero,
              core, col_p, col_row, strong, n_strong, gap):
    """The strong test on the cores of row p (flat indices); returns the new
    number of strong pixels.

    With ``bits`` > 0 (integer counts whose packed sums S * 2**bits + n fit
    in int64: exact, in any order) group by group (cores less than ``gap``
    px apart): the background count and sum of each column over the
    window's rows are kept packed in ``col_p`` with the row they belong to
    (``col_row``), so the columns of a group that were summed for the row
    above only add the row that enters and remove the one that leaves (row
    slices, which vectorise; the rest are summed afresh), and the window
    sums slide along runs of cores. Float counts (``bits`` None, ``zero`` =
    0.0), whose sums depend on the order: each window summed afresh, column
    by column. Integer counts pass ``zero`` = None: numba then compiles
    their path only (see :func:`_local_pass`).
    """
    ny, nx = image.shape
    if zero is not None:  # float counts
        j0, j1 = max(p - ky, 0), min(p + ky + 1, ny)
        for c in cores:
            i = c - p * nx
            v = image[p, i]
            if not v > threshold:
                continue
            m, x = np.int64(0), zero
            for ii in range(max(i - kx, 0), min(i + kx + 1, nx)):
                dm, dx = _background_column(image, static, core, lo, sat_hi, zero, j0, j1, ii)
                m += dm
                x += dx
            if _is_strong(v, m, x, gain, nsig_s):
                strong[n_strong] = c
                n_strong += 1
        return n_strong
    if bits is None:  # never: float counts returned above (keeps their compilation to their path)
        return n_strong
    low = (1 << bits) - 1
    k = 0
    while k < len(cores):
        e = k + 1  # a group: cores less than ``gap`` apart
        while e < len(cores) and cores[e] - cores[e - 1] <= gap:
            e += 1
        c0, c1 = max(cores[k] - p * nx - kx, 0), min(cores[e - 1] - p * nx + kx + 1, nx)
        t = c0
        while t < c1:  # bring the columns to row p, a stretch of equal state at a time
            state, f = col_row[t], t + 1
            while f < c1 and col_row[f] == state:
                f += 1
            slide = state == p - 1  # row p - ky - 1 leaves, row p + ky enters
            if state != p:
                if slide:
                    j, j_end, j_step = p - ky - 1, p + ky + 1, 2 * ky + 1
                else:  # summed afresh
                    for ii in range(t, f):
                        col_p[ii] = 0
                    j, j_end, j_step = p - ky, p + ky + 1, 1
                while j < j_end:  # one call site: its code is linked and optimised once
                    if 0 <= j < ny:
                        sign = np.int64(-1) if slide and j < p else np.int64(1)
                        _add_background_row(image, static, core, lo, sat_hi, bits, j, t, f, sign,
                                            col_p)
                    j += j_step
            for ii in range(t, f):
                col_row[ii] = p
            t = f
        w, prev = np.int64(0), -2
        for c in cores[k:e]:
            i = c - p * nx
            if i == prev + 1:  # the window moves one pixel along the row
                if i + kx < nx:
                    w += col_p[i + kx]
                if i - kx - 1 >= 0:
                    w -= col_p[i - kx - 1]
            else:
                w = np.int64(0)
                for ii in range(max(i - kx, 0), min(i + kx + 1, nx)):
                    w += col_p[ii]
            prev = i
            v = image[p, i]
            if v > threshold and _is_strong(v, w & low, w >> bits, gain, nsig_s):
                strong[n_strong] = c
                n_strong += 1
        k = e
    return n_strong


@_inline
def _is_strong(v, m, x, gain, nsig_s):
    """v >= mean + nsig_s sqrt(gain mean), mean = x / m (0 when m < 2)."""
    mean = x / m if m >= 2 else 0.0
    return v >= mean + nsig_s * np.sqrt(gain * mean)


@_internal
def _background_column(image, static, core, lo, sat_hi, zero, j0, j1, i):
    """Count and sum of the background pixels (static, not core, lo < v <
    sat_hi) of column i, rows j0..j1-1."""
    m, x = np.int64(0), zero
    for jj in range(j0, j1):
        u = image[jj, i]
        ok = static[jj, i] & (core[jj, i] ^ np.uint8(1)) & np.uint8(u > lo) & np.uint8(u < sat_hi)
        m += ok
        x += u if ok else 0
    return m, x


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype, zero: bool = False) -> np.ndarray:
    """A work array of this thread, kept between images (zeroed when made if ``zero``).

    A fresh multi-megabyte array costs a page fault per 4 kB page on first
    touch (about 1 ms for a Pilatus 6M image), as much as a whole pass of a
    kernel, so the image-sized arrays are allocated once per thread.
    """
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    a = arrays.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = arrays[name] = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    return a


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
        # clipped in Python: float64(int64 max) is 2**63, which int64 cannot hold
        lo, hi = (info.min if t <= info.min else info.max if t >= info.max else int(t)
                  for t in (np.floor(tmin), np.ceil(tmax)))
        return image.dtype.type(lo), image.dtype.type(hi), image.dtype.type(min(hi, BIG))
    return tmin, tmax, min(tmax, float(BIG))


def _sum_types(image: np.ndarray, lo, sat_hi, n_window: int, narrow: bool) -> tuple:
    """Packing, accumulator dtypes (count, sum, sum of squares) and clip value
    that keep every window sum exact (or exactly recoverable): (bits, types, clip).

    Integer images: the count packed into the low ``bits`` bits of the sum,
    S * 2**bits + n. ``narrow``: all int32 (8 lanes of a 256-bit vector, not
    4), values clipped to +-clip so that no sum can overflow (clip = 0 when
    no value that enters the sums reaches it), and windows holding a clipped
    value summed afresh by the kernel in int64. Otherwise int32 or int64
    packed sums and float64 sums of squares while they stay below 2**53
    (int64 beyond), clip = 0; the caller makes sure that packed int64 sums
    fit. Float images: bits = 0, int32 counts, float64 sums.
    """
    float_types = 0, (np.int32, np.float64, np.float64), 0
    if image.dtype.kind == "f":
        return float_types
    big = max(abs(int(lo) + 1), abs(int(sat_hi) - 1))  # largest |v| that enters the sums
    bits = int(n_window).bit_length()
    sq = n_window * big * big
    if narrow and sq < 2**63:
        clip = min(math.isqrt((2**31 - 1) // n_window), ((2**31 >> bits) - 1) // n_window)
        if clip >= 1:
            return bits, (np.int32,) * 3, image.dtype.type(clip if big >= clip else 0)
    packed = (n_window * big + 1) << bits
    t = np.int32 if packed < 2**31 else np.int64
    return bits, (t, t, np.float64 if sq < 2**53 or sq >= 2**63 else np.int64), 0


def _packed_bits(image: np.ndarray, lo, sat_hi, n_window: int) -> int:
    """Bits of the count in packed int64 background sums S * 2**bits + n
    over ``n_window`` pixels, or 0 when they would not fit (or counts are
    floats)."""
    if image.dtype.kind == "f":
        return 0
    bits = int(n_window).bit_length()
    big = max(abs(int(lo) + 1), abs(int(sat_hi) - 1))  # largest |v| that enters the sums
    return bits if (n_window * big + 1) << bits < 2**63 else 0


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
    static = np.ascontiguousarray(static_mask, dtype=np.bool_).view(np.uint8)
    kx, ky = int(kernel_size[0]), int(kernel_size[1])
    lo, hi, sat_hi = _bounds(image, trusted_range)
    n_ext = (2 * kx + 5) * (2 * ky + 5)  # the second stage of extended: a window 2 px wider
    if image.dtype.kind != "f" and not _packed_bits(image, lo, sat_hi, n_ext):
        # a trusted range so wide that packed int64 sums could overflow: the counts are
        # thresholded as float64 (the same numbers up to 2**53)
        image = image.astype(np.float64)
        lo, hi, sat_hi = _bounds(image, trusted_range)
    packed = image.dtype.kind != "f"  # integer counts: packed sums everywhere
    fsum = None if packed else 0.0  # compile-time markers of the path: see _local_pass
    args = (float(gain), float(sigma_background), float(sigma_strong),
            float(global_threshold), int(min_local))
    found = _scratch("found", (image.size,), np.int64)  # pages are only touched as they fill
    mask = _scratch("mask", image.shape, np.uint8)  # 0/1: numba vectorises integer masks, not bool
    mode = 0 if algorithm == DISPERSION else 1
    ny, nx = image.shape
    big = _scratch("big", (2, 1024), np.int64)  # clipped values: few, or wide sums are faster
    force = _scratch("force", (nx,), np.uint8, zero=True)  # the kernel leaves it all 0
    maybe = _scratch("maybe", (8 * ((nx + 7) // 8),), np.uint8, zero=True)  # whole words
    no_pixels = _scratch("no_pixels", (nx,), np.uint8, zero=True)  # never written
    # the second stage of extended (a window two pixels wider), run behind the first pass
    extended = mode == 1
    h = max(min(kx, ky) - 1, 0)  # erosion half-width (0: the pixel itself, which is set)
    core = _scratch("core", image.shape if extended else (1, 1), np.uint8, zero=True)
    cores = _scratch("cores", (image.size if extended else 1,), np.int64)
    strong = _scratch("strong", (image.size if extended else 1,), np.int64)
    col_p, col_row = np.empty(nx, np.int64), np.empty(nx, np.int64)
    col_set = np.empty(nx, np.uint8 if 2 * h + 1 < 256 else np.int32)  # set pixels per column
    state = np.empty(8, np.int64)
    ext = (h, ky + 2, kx + 2, _packed_bits(image, lo, sat_hi, n_ext) if packed else None, fsum,
           core, cores, strong, col_p, col_row, col_set, state)
    for narrow in (True, False):
        bits, types, clip = _sum_types(image, lo, sat_hi, (2 * kx + 1) * (2 * ky + 1), narrow)
        ring = [np.empty((2 * ky + 2, nx), t) for t in types[:2]]  # ring of row contributions
        if bits:  # counts packed with the sums: one ring, no count sums
            ring[0] = ring[1]
        buffers = (ring + [np.empty(1 if bits and k == 0 else nx + 2 * kx, t)
                           for k, t in enumerate(types)]  # padded column sums
                   + [np.empty(1 if bits and k == 0 else nx, t)
                      for k, t in enumerate(types)])  # window sums of one row
        col_row[:] = -2  # no column sums yet
        state[:] = 0
        row_work = (maybe, maybe.view(np.uint64), no_pixels, np.empty(nx, ring[0].dtype))
        n = _local_pass(image, static, lo, hi, sat_hi, ky, kx, mode, *args,
                        bits if packed else None, fsum, clip, big, force, row_work, mask, found,
                        *buffers, ext)
        if extended:
            core.reshape(-1)[cores[:state[2]]] = 0  # ``core`` must be all 0 for the next image
        if n >= 0:
            break
    if not extended:
        return found[:n].copy()
    return strong[:state[5]].copy()  # raster order: cores are visited in it


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
