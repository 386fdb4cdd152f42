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

How (one sweep down the image, every loop over a row slice, which numba
vectorises):

- window sums are separable running box sums, the one-row-at-a-time form of a
  summed-area table (Crow (1984)): per column, the counts, sums and sums of
  squares over the window's rows are updated as the window moves down a row
  (the entering row added, the leaving one removed, both read from the image:
  no ring of rows), then summed across the window's columns, four taps at a
  time. The static mask and the trusted range are folded into the sums (an
  excluded pixel adds 0);
- integer images (int32) keep every sum in int32 lanes (eight per 256-bit
  vector): the count and the sum ride in one integer, S * 4**bits +
  n_clipped * 2**bits + n, and values with |v| >= clip (6620 counts for a
  7 x 7 window: a few pixels of the brightest peaks) add only to the counts,
  so that nothing overflows; the few windows holding one are summed afresh
  (int64). The sums are exact, so the float tests see the numbers a direct
  summation gives. Float images sum in float64, in a fixed order;
- the sqrt of the dispersion test is first replaced by a lower bound (its
  chord over n), a branch-free test over the whole row (in float32 for
  integer images, with a margin above its rounding error:
  :data:`SINGLE_MARGIN`); only the few pixels that pass it get the exact
  test, and the value test of ``dispersion``;
- dispersion_extended runs its two later stages a few rows behind the first
  pass, on rows still in cache: the erosion on 0/1 rows (a vertical then a
  horizontal AND; a ring of 2h+1 rows of the first pass's marks), and the
  background test on the cores only (a ring of 2*ky+5 rows of cores), row by
  row: per stretch of nearby cores, the background counts and sums of each
  column over the window's rows, then per core the sum of its window's
  columns. Values of 2**24 or more never enter the sums, as in DIALS.

Each image type compiles one specialisation of the kernels: int32 (every
integer image is converted to it when exact, see :func:`_prepare`) and float64
(float images, and integer images whose values could overflow int32 sums).
Integer and float images take different branches in two kernels, picked at
compile time by an argument that is None for integer images (numba drops the
branch of an ``x is None`` test on such an argument). Work arrays are
allocated here, in Python, once per thread (:func:`_scratch`), and passed
in: allocating inside a kernel compiles numpy's constructor with it.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from gonio.core.jit import INTERNAL, njit

from .params import ALGORITHMS, DISPERSION, DISPERSION_EXTENDED

BIG = 1 << 24  # counts at or above this never enter the window sums
MIN_CLIP = 1000  # integer images are summed in int32 while their clip is at least this

# No kernel here divides by zero: numpy's error model spares compiling an exception
# path for every division (a shorter compilation, the same results).
_kernel = njit(error_model="numpy")
# Tiny helpers used per pixel: inlined where numba types their caller.
_inline = njit(error_model="numpy", inline="always")
# Kernels that only the main kernel calls: LLVM IR only, linked and optimised by their
# caller (:data:`gonio.core.jit.INTERNAL`; the unit compiled in 4.1 s of CPU instead of
# 5.5 s with plain kernels, medians at load 5, benchmarks/figures.md). Each image type
# must compile its own copies: a caller compiled in a later process (the float64 kernels,
# after the warm-up compiled int32) would link cached INTERNAL code that runs unoptimised
# (measured 2.6x slower). Helpers whose arguments do not depend on the image type take
# ``like``, a value of the image's type, for that reason alone.
_internal = njit(error_model="numpy", **INTERNAL)


@_internal
def _slide_columns(v_in, s_in, v_out, s_out, lo, sat_hi, clips, bits, cp, cs, cq):
    """The window moves down a row: the summed pixels of the entering row
    (static, lo < v < sat_hi) are added to the column sums, those of the
    leaving row removed: ``cp`` counts, ``cs`` values, ``cq`` squares.

    Integer images (``cs`` None) keep everything in int32: ``cp`` packs the
    sum S, the count of clipped pixels (|v| >= ``clip``) and the count n as
    S * 4**bits + n_clipped * 2**bits + n, a clipped value adding 0 to S
    and to ``cq``, so that no sum can overflow (:func:`_exact_row` sums the
    windows holding a clipped value afresh). Float images: ``cp`` counts,
    ``cs`` and ``cq`` float64 (clip = inf). ``clips`` = (-clip, clip) in the
    image's type."""
    neg_clip, clip = clips
    zero_n, one = np.int32(0), np.int32(1)
    one_big = np.add(one, np.left_shift(one, bits))  # a clipped pixel
    shift = np.int32(2 * bits)
    zero, zero_q = v_in.dtype.type(0), cq.dtype.type(0)
    for i in range(len(cp)):  # ufuncs keep int32 arithmetic in int32 (numba widens + and -)
        a = v_in[i]
        b = v_out[i]
        fa = (s_in[i] != 0) & (a > lo) & (a < sat_hi)
        fb = (s_out[i] != 0) & (b > lo) & (b < sat_hi)
        a = a if fa else zero
        b = b if fb else zero
        ga = (a >= clip) | (a <= neg_clip)
        gb = (b >= clip) | (b <= neg_clip)
        if cs is None:  # integer counts (numba drops the other branch when cs is None)
            pa = one_big if ga else np.bitwise_or(np.left_shift(np.int32(a), shift), one)
            pb = one_big if gb else np.bitwise_or(np.left_shift(np.int32(b), shift), one)
        else:
            pa, pb = one, one
            cs[i] = np.add(cs[i], np.subtract(a, b))
        cp[i] = np.add(cp[i], np.subtract(pa if fa else zero_n, pb if fb else zero_n))
        qa = zero_q if ga else cq.dtype.type(a)
        qb = zero_q if gb else cq.dtype.type(b)
        cq[i] = np.add(cq[i], np.subtract(np.multiply(qa, qa), np.multiply(qb, qb)))


@_internal
def _box_row(padded, out, like):
    """out[i] = sum of padded[i : i + width], width = len(padded) - len(out) + 1
    (``like``: see :data:`_internal`).

    ``padded`` holds the column sums with kx zeros at each end, so the
    clipped windows of the edge pixels need no special case. Taps are added
    four at a time, ((a + b) + (c + d)), from slices (no wraparound checks),
    which numba vectorises; float sums always take this order.
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
def _unpack(p, ws, i, bits):
    """(n, n_clipped, S) of the window sums of pixel i: packed in ``p`` (integer
    images, ``ws`` None) or S in ``ws``."""
    low = np.int32((1 << bits) - 1)
    if ws is None:
        return np.bitwise_and(p, low), np.bitwise_and(np.right_shift(p, bits), low), \
            np.right_shift(p, np.add(bits, bits))
    return p, np.int32(0), ws[i]


@_internal
def _candidates(row, static_row, lo, hi, wp, ws, wq, tests, sig, maybe):
    """The cheap test on one row, branch-free (numba vectorises it): ``maybe``
    = 1 where the pixel is valid (static, lo < v < hi), n >= min_count, and
    either its window holds a clipped value (:func:`_slide_columns`: its S
    and Q are not in the sums), or S >= 0 and (``no_bound`` or n >= 2 and n
    Q - S^2 > gain S (c0 + c1 n)): c0 + c1 n is the chord of the exact
    test's n - 1 + nsig_b sqrt(2 (n - 1)) over n in [2, nwin] (sqrt is
    concave: the chord lies below it; lowered by a relative 1e-9 so that
    rounding cannot reject a pixel the exact test accepts; n < 2 never
    passes, n Q - S^2 = 0 there). ``sig`` = 1 where the pixel is invalid.
    Returns whether any pixel is maybe.

    Integer images make the chord test in float32 (twice the lanes of
    float64; ``single`` = gain, c0, c1 and the margin in float32, see
    :data:`SINGLE_MARGIN`), which keeps every pixel the float64 test would
    keep; parameters outside the margin's bound set ``no_bound``."""
    gain, _, _, _, min_count, c0, c1, no_bound, _, bits, single = tests
    any_ = False
    if ws is None:  # integer images (numba drops this branch for float images)
        gain_1, c0_1, c1_1, margin_1 = single
        for i in range(len(row)):
            u = row[i]
            valid = (static_row[i] != 0) & (u > lo) & (u < hi)
            n, n_big, x = _unpack(wp[i], ws, i, bits)
            m, xf, y = np.float32(n), np.float32(x), np.float32(wq[i])
            a = m * y
            ok = valid & (n >= min_count) & ((n_big > 0) | ((x >= 0) & (no_bound | (
                (n >= 2) & ((a - xf * xf) - gain_1 * xf * (c0_1 + c1_1 * m) > margin_1 * a)))))
            maybe[i] = ok
            sig[i] = not valid
            any_ |= ok
        return any_
    for i in range(len(row)):
        u = row[i]
        valid = (static_row[i] != 0) & (u > lo) & (u < hi)
        n, n_big, x = _unpack(wp[i], ws, i, bits)
        m, xf, y = np.float64(n), np.float64(x), np.float64(wq[i])
        ok = valid & (n >= min_count) & ((n_big > 0) | ((x >= 0) & (no_bound | (
            (n >= 2) & (m * y - xf * xf > gain * xf * (c0 + c1 * m))))))
        maybe[i] = ok
        sig[i] = not valid
        any_ |= ok
    return any_


@_internal
def _exact_row(image, static, bounds, r, ky, kx, bits, maybe, maybe_words, wp, ws, wq, gain,
               nsig_b, nsig_s, threshold, extended, sig, found, n_found):
    """The exact test on the ``maybe`` pixels of row r (``maybe_words``:
    ``maybe`` viewed as uint64, to skip eight pixels at a time). The
    dispersion test on the window sums as floats, S >= 0 and n Q - S^2 >
    gain S (n - 1 + nsig_b sqrt(2 (n - 1))), S and Q summed afresh (int64)
    in windows with a clipped value; for ``dispersion`` also v > threshold
    and n v - S > nsig_s sqrt(gain S n). A pixel that passes is appended to
    ``found`` (flat index; ``dispersion``) or marked 3 in ``sig``
    (``dispersion_extended``: signal and candidate core). Returns
    ``n_found`` plus the number that passed."""
    ny, nx = image.shape
    lo, _, sat_hi = bounds
    for word in range(len(maybe_words)):
        if maybe_words[word] == 0:
            continue
        for i in range(8 * word, min(8 * word + 8, nx)):
            if not maybe[i]:
                continue
            n, n_big, x = _unpack(wp[i], ws, i, bits)
            m, xf, y = np.float64(n), np.float64(x), np.float64(wq[i])
            if n_big:  # a clipped value in the window (integer images only)
                sx, sq = np.int64(0), np.int64(0)
                for jj in range(max(r - ky, 0), min(r + ky + 1, ny)):
                    for ii in range(max(i - kx, 0), min(i + kx + 1, nx)):
                        u = np.int64(image[jj, ii])
                        if static[jj, ii] and lo < u < sat_hi:
                            sx += u
                            sq += u * u
                if sx < 0:
                    continue
                xf, y = np.float64(sx), np.float64(sq)
            ok = m * y - xf * xf > gain * xf * (m - 1.0 + nsig_b * np.sqrt(max(2.0 * (m - 1.0),
                                                                                0.0)))
            if ok and not extended:
                v = np.float64(image[r, i])
                ok = v > threshold and m * v - xf > nsig_s * np.sqrt(max(gain * xf * m, 0.0))
            if ok:
                if extended:
                    sig[i] = 3
                else:
                    found[n_found] = r * nx + i
                n_found += 1
    return n_found


@_internal
def _erode(sig_ring, q, ny, h, tmp, core, like):
    """``core`` = 1 on the candidates of row q (bit 1 of ``sig_ring``) whose
    (2h+1)^2 window of signal (bit 0; rows and columns beyond the image count
    as signal) is all set: a vertical AND of the window's rows, then a
    horizontal one (``tmp``: a row with h ones at each end). Rows of
    ``sig_ring`` (row j in j % len) are padded with h ones at each end.
    Returns the number of cores. (``like``: see :data:`_internal`.)"""
    nring = sig_ring.shape[0]
    nx = len(core)
    t = tmp[h:h + nx]
    j0, j1 = max(q - h, 0), min(q + h + 1, ny)
    s = sig_ring[j0 % nring, h:h + nx]
    for i in range(nx):
        t[i] = s[i]
    for j in range(j0 + 1, j1):
        s = sig_ring[j % nring, h:h + nx]
        for i in range(nx):
            t[i] &= s[i]
    centre = sig_ring[q % nring, h:h + nx]
    for i in range(nx):
        core[i] = (centre[i] >> np.uint8(1)) & np.uint8(1)
    for d in range(2 * h + 1):
        t = tmp[d:d + nx]
        for i in range(nx):
            core[i] &= t[i]
    n = np.int64(0)
    for i in range(nx):
        n += core[i]
    return n


@_internal
def _background_test(image, static, lo, sat_hi, core_ring, core_words, p, ky, kx, gain, nsig_s,
                     threshold, zero, cols, bn, bs, strong, n_strong):
    """The strong test on the cores of row p (``core_ring`` row p % len,
    viewed as uint64 words in ``core_words``): v > threshold and v >= mean +
    nsig_s sqrt(gain mean), the mean over the background pixels (static,
    not core, lo < v < sat_hi) of the (2ky+1) x (2kx+1) window (0 with fewer
    than two). Cores closer than a window width share one stretch of
    columns, whose background counts ``bn`` and sums ``bs`` over the
    window's rows are summed once (rows outside, columns inside: slices);
    each core then adds its window's columns, left to right, from ``zero``
    (0 in the sum type: int64 or float64). Strong pixels are appended to
    ``strong`` (flat indices, raster order); returns their new count."""
    ny, nx = image.shape
    nring = core_ring.shape[0]
    words = core_words[p % nring]
    crow = core_ring[p % nring]
    n_cols = 0
    for w in range(len(words)):
        if words[w] == 0:
            continue
        for i in range(8 * w, min(8 * w + 8, nx)):
            if crow[i]:
                cols[n_cols] = i
                n_cols += 1
    j0, j1 = max(p - ky, 0), min(p + ky + 1, ny)
    k = 0
    while k < n_cols:
        e = k + 1
        while e < n_cols and cols[e] - cols[e - 1] <= 2 * kx + 1:
            e += 1
        c0, c1 = max(cols[k] - kx, 0), min(cols[e - 1] + kx + 1, nx)
        sn, ss = bn[c0:c1], bs[c0:c1]
        for t in range(c1 - c0):
            sn[t] = 0
            ss[t] = zero
        for j in range(j0, j1):
            v, s, c = image[j, c0:c1], static[j, c0:c1], core_ring[j % nring, c0:c1]
            for t in range(c1 - c0):
                u = v[t]
                ok = s[t] & (c[t] ^ np.uint8(1)) & np.uint8(u > lo) & np.uint8(u < sat_hi)
                sn[t] += ok
                ss[t] += u if ok else 0
        for kk in range(k, e):
            i = cols[kk]
            v0 = image[p, i]
            if not v0 > threshold:
                continue
            m, x = np.int64(0), zero
            for ii in range(max(i - kx, 0), min(i + kx + 1, nx)):
                m += bn[ii]
                x += bs[ii]
            mean = x / m if m >= 2 else 0.0
            if v0 >= mean + nsig_s * np.sqrt(gain * mean):
                strong[n_strong] = p * nx + i
                n_strong += 1
        k = e
    return n_strong


@_kernel
def _threshold(image, static, bounds, ky, kx, extended, tests, cs, ws, sums, rows, ext, found):
    """Strong pixels of one image in one sweep; returns how many are in ``found``
    (flat indices, raster order).

    ``bounds`` = (lo, hi, sat_hi): valid pixels are static with lo < v < hi,
    and enter the sums if v < sat_hi. ``tests`` = (gain, nsig_b, nsig_s,
    threshold, min_count, c0, c1, no_bound, (-clip, clip), bits): the
    parameters, the chord of :func:`_candidates` and the packing of
    :func:`_slide_columns`. ``cs``, ``ws``: column and window sums of the
    values of float images (None for integer images, whose sums are packed
    in ``cp``, ``wp``). ``sums`` = (cp, cq, wp, wq): column sums (padded
    with kx zeros at each end, zeroed here) and window sums of one row.
    ``rows`` = (maybe, its uint64 view, no_pixels (all 0), sig (a row for
    ``dispersion``)). ``ext`` (dispersion_extended) = (h, ky2, kx2, zero,
    sig_ring, has_candidates, tmp, core_ring, its uint64 view, n_cores,
    cols, bn, bs): the erosion half-width, the background window, the
    background sums' zero (int64 or float64), the rings of :func:`_erode`
    and :func:`_background_test` (row j in j % len) and their work rows.
    Row r of the first pass, the erosion of row r - h and the background
    test of row r - h - ky2 run together: each stage sees the rows it needs
    completed.
    """
    ny, nx = image.shape
    lo, hi, sat_hi = bounds
    gain, nsig_b, nsig_s, threshold, _, _, _, _, clips, bits, _ = tests
    cp, cq, wp, wq = sums
    maybe, maybe_words, no_pixels, sig_row = rows
    h, ky2, kx2, zero, sig_ring, has_candidates, tmp, core_ring, core_words, n_cores, cols, bn, \
        bs = ext
    for i in range(len(cp)):
        cp[i] = 0
        cq[i] = 0
    cp_, cq_ = cp[kx:kx + nx], cq[kx:kx + nx]
    if cs is None:  # integer images (numba drops the other branch when cs is None)
        cs_ = None
    else:
        for i in range(len(cs)):
            cs[i] = 0
        cs_ = cs[kx:kx + nx]
    n_found = np.int64(0)  # not the literal 0: callees get one signature
    n_strong = np.int64(0)
    lag = h + ky2 if extended else 0
    for r in range(-ky, ny + lag):
        if r < ny:  # the first pass
            r_in, r_out = r + ky, r - ky - 1  # row r_in enters the window of row r, r_out leaves
            _slide_columns(image[min(r_in, ny - 1)], static[r_in] if r_in < ny else no_pixels,
                           image[max(r_out, 0)], static[r_out] if r_out >= 0 else no_pixels,
                           lo, sat_hi, clips, bits, cp_, cs_, cq_)
            if r >= 0:
                _box_row(cp, wp, lo)
                if cs is not None:
                    _box_row(cs, ws, lo)
                _box_row(cq, wq, lo)
                sig = sig_ring[r % len(sig_ring), h:h + nx] if extended else sig_row
                n = np.int64(0) if extended else n_found
                if _candidates(image[r], static[r], lo, hi, wp, ws, wq, tests, sig, maybe):
                    n = _exact_row(image, static, bounds, r, ky, kx, bits, maybe, maybe_words, wp,
                                   ws, wq, gain, nsig_b, nsig_s, threshold, extended, sig, found,
                                   n)
                if extended:
                    has_candidates[r % len(has_candidates)] = n
                else:
                    n_found = n
        if not extended:
            continue
        q = r - h  # erosion
        if 0 <= q < ny:
            core = core_ring[q % len(core_ring), :nx]
            if has_candidates[q % len(has_candidates)]:
                n_cores[q % len(n_cores)] = _erode(sig_ring, q, ny, h, tmp, core, lo)
            else:
                for i in range(nx):
                    core[i] = 0
                n_cores[q % len(n_cores)] = 0
        p = q - ky2  # the background test
        if 0 <= p < ny and n_cores[p % len(n_cores)]:
            n_strong = _background_test(image, static, lo, sat_hi, core_ring, core_words, p, ky2,
                                        kx2, gain, nsig_s, threshold, zero, cols, bn, bs, found,
                                        n_strong)
    return n_strong if extended else n_found


_SCRATCH = threading.local()

#: Where each row-sized work array of a thread starts, in bytes modulo 4096: the first at
#: 1024, each next one 192 bytes further (all within 1024-3712). Where malloc happened to
#: put them, the threshold of the thaumatin Pilatus 6M image ran 2.5-3x slower in some
#: processes (6.1 against 2.2-2.3 ns per pixel, benchmarks/figures.md), most likely from
#: 4k aliasing: a loop that stores to one array while loading from another whose address
#: agrees in its 12 low bits a little further on waits on every vector. Images from the
#: decoders usually start at offset 16, and an image row of 4096 bytes (1024 int32 pixels)
#: keeps every row there: the arrays stay clear of 0-1024.
_SLOTS = {name: k for k, name in enumerate((
    "col_p", "col_q", "col_s", "win_p", "win_q", "win_s", "maybe", "no_pixels", "sig_row",
    "sig_ring", "tmp", "core_ring", "cols", "bn", "bs"))}
_OFFSET_START, _OFFSET_STEP = 1024, 192


def _scratch(name: str, shape: tuple, dtype, fill=None) -> np.ndarray:
    """A work array of this thread, kept between images (filled with ``fill`` when made).

    A fresh multi-megabyte array costs a page fault per 4 kB page on first
    touch (about 1 ms for a Pilatus 6M image), as much as a whole pass of the
    kernel, so the image-sized ones are allocated once per thread. The
    row-sized ones start at staggered addresses (:data:`_SLOTS`).
    """
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    a = arrays.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        slot = _SLOTS.get(name)
        if slot is None:
            a = np.empty(shape, dtype)
        else:
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            buffer = np.empty(nbytes + 4096, np.uint8)
            start = (_OFFSET_START + slot * _OFFSET_STEP - buffer.ctypes.data) % 4096
            a = buffer[start:start + nbytes].view(dtype).reshape(shape)
        if fill is not None:
            a[...] = fill
        arrays[name] = a
    return a


_INT32 = np.iinfo(np.int32)


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


def _clip(n_window: int) -> int:
    """The clip of integer images' packed int32 sums (:func:`_slide_columns`): values
    below it in magnitude keep S * 4**bits + ... and the sums of squares below 2**31."""
    bits = n_window.bit_length()
    return min(math.isqrt((2**31 - 1) // n_window), (2**31 >> 2 * bits) // n_window)


def _exact_in_int32(image: np.ndarray, lo, sat_hi, n_window: int) -> bool:
    """Are the int32 window sums of this int32 image exact (|S| < 2**31)?

    Every summed value lies in (lo, sat_hi); when the bounds allow too large
    a value (a trusted range open below), the image's own extremes decide.
    Then the int64 sums of the windows holding a clipped value are exact too.
    A window so large that its clip would catch ordinary counts (13 x 13 px
    or more) is summed in float64 instead.
    """
    if _clip(n_window) < MIN_CLIP:
        return False
    if n_window * max(abs(int(lo) + 1), abs(int(sat_hi) - 1)) < 2**31:
        return True
    return n_window * max(abs(int(image.min())), abs(int(image.max()))) < 2**31


def _prepare(image: np.ndarray, trusted_range, n_window: int):
    """The image as int32 or float64 (C-contiguous) and its (lo, hi, sat_hi).

    Integer images become int32 when that is exact: narrower types always;
    wider ones when the trusted range lies within int32 (values beyond it are
    invalid either way, so they are clipped to it). Their sums are exact
    (:func:`_exact_in_int32`); otherwise, and for float images, float64.
    uint32 images (Eiger) with a trusted range from -1 or above are read as
    int32 in place, without a copy: a value of 2**31 or more (the Eiger's
    2**32 - 1 of masked pixels) then reads as a negative one, at or below
    the lower bound, so invalid, as it would be clipped.
    """
    image = np.ascontiguousarray(image)
    if image.dtype.kind in "iu":
        if image.dtype.itemsize > 4 or image.dtype == np.uint32:
            lo, hi, _ = _bounds(image, trusted_range)
            if _INT32.min <= lo and hi <= _INT32.max:
                signed = image.view(np.int32) if image.dtype == np.uint32 else None
                if signed is not None and _bounds(signed, trusted_range)[0] >= -1:
                    image = signed
                else:
                    image = np.clip(image, _INT32.min, _INT32.max).astype(np.int32)
        else:
            image = image.astype(np.int32, copy=False)
        if image.dtype == np.int32:
            bounds = _bounds(image, trusted_range)
            if _exact_in_int32(image, bounds[0], bounds[2], n_window):
                return image, bounds
    image = image.astype(np.float64, copy=False)
    return image, _bounds(image, trusted_range)


def _chord(n_window: int, nsig_b: float) -> tuple[float, float]:
    """(c0, c1): c0 + c1 n <= n - 1 + nsig_b sqrt(2 (n - 1)) on n in [2, n_window]
    (the chord of a concave function), lowered by a relative 1e-9 for rounding."""
    c1 = 1.0 + nsig_b * (np.sqrt(2.0 * (n_window - 1)) - np.sqrt(2.0)) / (n_window - 2) \
        if n_window > 2 else 1.0
    c0 = -1.0 + nsig_b * np.sqrt(2.0) - (c1 - 1.0) * 2.0
    return c0 - 1e-9 * abs(c0), c1 - 1e-9 * abs(c1)


#: The float32 chord test (:func:`_candidates`) passes a pixel when (n Q - S^2) - gain S
#: (c0 + c1 n) > -2**-18 n Q, all in float32. A pixel the exact chord test passes has
#: S^2 + gain S (c0 + c1 n) < n Q, each term >= 0 when gain, c1 >= 0, S >= 0 and
#: c0 >= -1.25 c1 (then c0 + c1 n >= 0.75 c1 for n >= 2, and |c0| + c1 n is at most
#: 4.4 times c0 + c1 n, so rounding c0, c1 and the multiply-add changes c0 + c1 n by at
#: most 13 * 2**-24 of itself). The float32 roundings (Q, S and gain once each, then the
#: products, the square and the 2 differences, each within 2**-24 relative) then change
#: the left side by less than 27 * 2**-24 n Q: below half of the margin.
SINGLE_MARGIN = -(2.0**-18)


def _bounded(gain: float, nsig_b: float, c0: float, c1: float) -> bool:
    """May the chord prefilter reject pixels? Only when gain and nsig_b are >= 0 (the
    chord lies below the exact test's coefficient) and the float32 test's error bound
    holds (:data:`SINGLE_MARGIN`: c1 >= 0, c0 >= -1.25 c1, as for every nsig_b >= 0,
    and all below 1e30 in magnitude, so that none overflows float32 and a product that
    does, to inf, rejects only pixels whose float64 test fails too); otherwise every
    valid pixel goes to the exact test (``no_bound``)."""
    return bool(gain >= 0 and nsig_b >= 0 and c1 >= 0 and c0 >= -1.25 * c1
                and max(abs(gain), abs(c0), abs(c1)) < 1e30)


def _extended_work(nx: int, h: int, ky2: int, kx2: int, integer: bool, extended: bool) -> tuple:
    """``ext`` of :func:`_threshold`: the rings and rows of the later stages of
    dispersion_extended (tiny placeholders for dispersion)."""
    def work(name, shape, dtype, fill=None):
        return _scratch(name, shape if extended else (1,) * (len(shape) - 1) + (8,), dtype, fill)

    core_ring = work("core_ring", (2 * ky2 + 1, 8 * ((nx + 7) // 8)), np.uint8, 0)  # whole words
    wide = integer  # background sums of integer counts: int64 (exact), else float64
    return (h, ky2, kx2, np.int64(0) if wide else 0.0,
            work("sig_ring", (2 * h + 1, nx + 2 * h), np.uint8, 1),  # the ends stay 1
            np.zeros(2 * h + 1, np.int64), work("tmp", (nx + 2 * h,), np.uint8, 1),
            core_ring, core_ring.view(np.uint64), np.zeros(2 * ky2 + 1, np.int64),
            work("cols", (nx,), np.int64), work("bn", (nx,), np.int64),
            work("bs", (nx,), np.int64 if wide else np.float64))


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
    kx, ky = int(kernel_size[0]), int(kernel_size[1])
    extended = algorithm != DISPERSION
    h, ky2, kx2 = max(min(kx, ky) - 1, 0), ky + 2, kx + 2  # erosion; background window
    n_window = (2 * kx + 1) * (2 * ky + 1)
    image, bounds = _prepare(image, trusted_range, n_window)
    static = np.ascontiguousarray(static_mask, dtype=np.bool_).view(np.uint8)
    ny, nx = image.shape
    c0, c1 = _chord(n_window, float(sigma_background))
    integer = image.dtype == np.int32
    bits = n_window.bit_length()
    clip = _clip(n_window) if integer else np.inf
    clips = (image.dtype.type(-clip), image.dtype.type(clip))
    bounded = _bounded(gain, sigma_background, c0, c1)
    tests = (float(gain), float(sigma_background), float(sigma_strong), float(global_threshold),
             # min_count in int32, as n: an int64 one widened the row test's compare to int64
             # in 512-bit registers, the only ones in the kernel (~10 % slower, figures.md)
             np.int32(min(max(int(min_local), -2**31), 2**31 - 1)),
             c0, c1, not bounded, clips,
             np.int32(bits),  # int32: shifts by an int64 widen the packed sums to int64
             tuple(np.float32(v) for v in ((gain, c0, c1) if bounded else (0.0, 0.0, 0.0))
                   + (SINGLE_MARGIN,)))
    acc = np.int32 if integer else np.float64
    cs, ws = (None, None) if integer else (_scratch("col_s", (nx + 2 * kx,), np.float64),
                                           _scratch("win_s", (nx,), np.float64))
    sums = (_scratch("col_p", (nx + 2 * kx,), np.int32), _scratch("col_q", (nx + 2 * kx,), acc),
            _scratch("win_p", (nx,), np.int32), _scratch("win_q", (nx,), acc))
    maybe = _scratch("maybe", (8 * ((nx + 7) // 8),), np.uint8, 0)  # whole words, padding 0
    rows = (maybe, maybe.view(np.uint64), _scratch("no_pixels", (nx,), np.uint8, 0),
            _scratch("sig_row", (nx,), np.uint8))
    found = _scratch("found", (image.size,), np.int64)  # pages are only touched as they fill
    ext = _extended_work(nx, h, ky2, kx2, integer, extended)
    n = _threshold(image, static, bounds, ky, kx, extended, tests, cs, ws, sums, rows, ext,
                   found)
    return found[:n].copy()


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
