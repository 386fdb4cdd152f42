"""Numba kernels of integration on whole shoeboxes: their pixel bounds (:func:`box_extent`),
their background, summation and centroid (:func:`process`) and their move between
buffers (:func:`repack`): a unit of kernels of its own (``gonio.core.jit.UNITS``), which
compiles in one process while the pixel kernels of :mod:`.kernels` (cutting frames into
shoeboxes, reference profiles, profile fitting) compile in another.

The background models are DIALS's: the robust Poisson GLM (``glm``, a constant) and
``simple`` (a constant or plane after outlier rejection), whose kernels, which only a
user's choice reaches, are a unit of their own (:data:`SIMPLE`): they compile when a step
first needs them. Mask codes: :mod:`.mask_codes`.
"""

from __future__ import annotations

import math

import numpy as np

from gonio.core.jit import INTERNAL, njit

from .mask_codes import BACKGROUND, FOREGROUND, OVERLAPPED, VALID

# -- bounds and buffers ---------------------------------------------------------------------


@njit(error_model="numpy")
def box_extent(s1, s0, m2, e1, e2, half, lo, hi, panel, pg, out):
    """The pixel extent of each reflection's spot over its rotation range: where the
    diffracted beams through the 4 corners of the square +-``half[r]`` (1/A, along e1 and
    e2 about s1) meet the detector at 4 angles evenly spaced from ``lo[r]`` to ``hi[r]``
    (rad, relative to the reflection's angle; the lattice point rotated about the unit
    axis m2, Rodrigues). out[r] = (min x, max x, min y, max y, all 16 on the panel plane
    in front of the sample: 1 or 0), px, the parallax shift applied as
    :meth:`Panel.millimeter_to_pixel` does."""
    for r in range(s1.shape[0]):
        # row views, then 1D reads: less code to compile than 2D reads
        pp, s1r, e1r, e2r = pg[panel[r]], s1[r], e1[r], e2[r]
        xmin = ymin = np.inf
        xmax = ymax = -np.inf
        good = 1.0
        for i in range(4):
            ang = lo[r] + (i / 3.0) * (hi[r] - lo[r])
            c, sn = math.cos(ang), math.sin(ang)
            for k in range(4):
                a = -1.0 if k % 2 == 0 else 1.0
                b = -1.0 if k < 2 else 1.0
                v0 = s1r[0] - s0[0] + half[r] * (a * e1r[0] + b * e2r[0])
                v1 = s1r[1] - s0[1] + half[r] * (a * e1r[1] + b * e2r[1])
                v2 = s1r[2] - s0[2] + half[r] * (a * e1r[2] + b * e2r[2])
                md = (m2[0] * v0 + m2[1] * v1 + m2[2] * v2) * (1.0 - c)
                r0 = s0[0] + v0 * c + (m2[1] * v2 - m2[2] * v1) * sn + m2[0] * md
                r1 = s0[1] + v1 * c + (m2[2] * v0 - m2[0] * v2) * sn + m2[1] * md
                r2 = s0[2] + v2 * c + (m2[0] * v1 - m2[1] * v0) * sn + m2[2] * md
                w = pp[6] * r0 + pp[7] * r1 + pp[8] * r2
                if not w > 0.0:
                    good = 0.0
                    continue
                x = (pp[0] * r0 + pp[1] * r1 + pp[2] * r2) / w
                y = (pp[3] * r0 + pp[4] * r1 + pp[5] * r2) / w
                if pp[22] > 0.0:
                    l0 = pp[9] + x * pp[12] + y * pp[15]
                    l1 = pp[10] + x * pp[13] + y * pp[16]
                    l2 = pp[11] + x * pp[14] + y * pp[17]
                    norm = math.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
                    l0, l1, l2 = l0 / norm, l1 / norm, l2 / norm
                    cos_t = l0 * pp[18] + l1 * pp[19] + l2 * pp[20]
                    mu, t0 = pp[21], pp[22]
                    o = 1.0 / mu - (t0 / cos_t + 1.0 / mu) * math.exp(-mu * t0 / cos_t)
                    dx = (l0 * pp[12] + l1 * pp[13] + l2 * pp[14]) * o
                    dy = (l0 * pp[15] + l1 * pp[16] + l2 * pp[17]) * o
                    x, y = x + dx, y + dy
                x /= pp[23]
                y /= pp[24]
                if not (math.isfinite(x) and math.isfinite(y)):
                    good = 0.0
                    continue
                xmin, xmax = min(xmin, x), max(xmax, x)
                ymin, ymax = min(ymin, y), max(ymax, y)
        out[r, 0], out[r, 1], out[r, 2], out[r, 3], out[r, 4] = xmin, xmax, ymin, ymax, good


@njit(error_model="numpy")
def repack(rows, old_off, new_off, sizes, src, dst, mask_src, mask_dst):
    """Copy shoeboxes ``rows`` from ``src`` (and their mask codes from ``mask_src``) at
    ``old_off`` to ``dst`` (``mask_dst``) at ``new_off``: both buffers in one kernel, one
    specialisation."""
    for ii in range(rows.shape[0]):
        r = rows[ii]
        a = old_off[r]
        b = new_off[r]
        for j in range(sizes[r]):
            dst[b + j] = src[a + j]
        for j in range(sizes[r]):
            mask_dst[b + j] = mask_src[a + j]


# -- the GLM background ------------------------------------------------------------------


@njit(error_model="numpy", **INTERNAL)
def _poisson_terms(j1, j2, mu):
    """P(Y <= j1), P(Y <= j2), P(Y = j1), P(Y = j2) for Y ~ Poisson(mu), j1 <= j2: the
    probabilities by the recurrence P(k + 1) = P(k) mu / (k + 1) from the start of the
    window where the mass is (one exponential per call)."""
    k0 = max(0, int(mu - 12.0 * math.sqrt(mu) - 10.0))
    # beyond k_top the probabilities are below 1e-23: the window ends there (a tuning
    # constant of 1e9 once made the loop run to mu + 1e9 sqrt(mu))
    k_top = int(mu + 12.0 * math.sqrt(mu) + 10.0)
    c1 = c2 = p1 = p2 = 0.0
    if j2 < k0:
        return c1, c2, p1, p2
    # P(k0); for k0 = 0 (mu below ~170) exp(-mu): the same number without a log and lgamma
    pk = math.exp(k0 * math.log(mu) - mu - math.lgamma(k0 + 1.0)) if k0 > 0 else math.exp(-mu)
    s = 0.0
    for k in range(k0, min(j2, k_top) + 1):
        s += pk
        if k == j1:
            c1, p1 = s, pk
        if k == j2:
            c2, p2 = s, pk
        pk *= mu / (k + 1.0)
    if j1 > k_top:
        c1 = s
    if j2 > k_top:
        c2 = s
    return min(c1, 1.0), min(c2, 1.0), p1, p2


@njit(error_model="numpy", **INTERNAL)
def _glm_score(vals, cnts, m, n, mu, c):
    """Sum of Huber psi of Pearson residuals minus its expectation under Poisson(mu)
    (Cantoni & Ronchetti (2001) J. Am. Stat. Assoc. 96, 1022: the Fisher-consistent
    robust quasi-likelihood); decreasing in mu. The pixels are given as m distinct
    values ``vals`` with multiplicities ``cnts`` (n in all)."""
    sd = math.sqrt(mu)
    s = 0.0
    for i in range(m):
        r = (vals[i] - mu) / sd
        s += cnts[i] * max(-c, min(c, r))
    j1 = int(math.floor(mu - c * sd))
    j2 = int(math.floor(mu + c * sd))
    c1, c2, p1, p2 = _poisson_terms(j1, j2, mu)
    e = c * (1.0 - c2 - c1) + sd * (p1 - p2)
    return s - n * e


@njit(error_model="numpy", **INTERNAL)
def _glm_hist_root(hist, nh, imax, n, c, vals, cnts):
    """The GLM constant (:func:`_glm_solve`) of n counts given as 4 interleaved histograms
    of bins 0..imax (< nh) in ``hist`` (4 nh, int64: count v of histogram q at 4 v + q;
    :func:`_gather` fills them in turn), which it leaves zero. ``vals``, ``cnts``: scratch
    of nh."""
    m = np.int64(0)
    for v in range(imax + 1):
        q = 4 * v
        k = hist[q] + hist[q + 1] + hist[q + 2] + hist[q + 3]
        hist[q] = hist[q + 1] = hist[q + 2] = hist[q + 3] = 0
        if k > 0:
            vals[m] = v
            cnts[m] = k
            m += 1
    if imax <= 0:
        return 0.0
    return _glm_solve(vals, cnts, m, n, c, float(imax))


@njit(error_model="numpy", **INTERNAL)
def _glm_solve(vals, cnts, m, n, c, ymax):
    """The root of :func:`_glm_score` for the n pixels given as m distinct values ``vals``
    (ascending) with multiplicities ``cnts``, the largest ``ymax`` > 0."""
    # the root in x = log(mu) by false position with the Illinois modification (a
    # bracket that shrinks from both sides: ~10 evaluations instead of bisection's ~30)
    lo = math.log(1e-6)
    hi = math.log(ymax + 1.0)
    f_lo = _glm_score(vals, cnts, m, n, math.exp(lo), c)
    if f_lo <= 0.0:
        return 0.0
    f_hi = _glm_score(vals, cnts, m, n, math.exp(hi), c)
    if f_hi > 0.0:
        return math.exp(hi)
    side = 0
    for _ in range(100):
        x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not (lo < x < hi):
            x = 0.5 * (lo + hi)
        fx = _glm_score(vals, cnts, m, n, math.exp(x), c)
        if fx > 0.0:
            lo, f_lo = x, fx
            if side == -1:
                f_hi *= 0.5
            side = -1
        else:
            hi, f_hi = x, fx
            if side == 1:
                f_lo *= 0.5
            side = 1
        if hi - lo < 1e-7 or fx == 0.0:
            break
    return math.exp(0.5 * (lo + hi)) if fx != 0.0 else math.exp(x)


@njit(error_model="numpy", **INTERNAL)
def _glm_constant(y, n, c, vals, cnts, counts):
    """The GLM constant (:func:`_glm_solve`) of the n pixels y[:n], whatever their values:
    their distinct values ``vals`` and multiplicities ``cnts`` (scratch of n) from the
    histogram ``counts`` (zero on entry and left zero) when they are integer counts below
    its length, else from y[:n] sorted in place (:func:`_heapsort`). NaN when n = 0, 0
    when no pixel is positive."""
    if n == 0:
        return np.nan
    ymax = y[0]
    integral = True
    for i in range(n):
        ymax = max(ymax, y[i])
        if y[i] < 0 or y[i] != math.floor(y[i]):
            integral = False
    if ymax <= 0.0:
        return 0.0
    m = np.int64(0)
    if integral and ymax < counts.shape[0]:  # counts: a histogram, O(n + ymax)
        for i in range(n):
            counts[int(y[i])] += 1.0
        for v in range(int(ymax) + 1):
            if counts[v] > 0:
                vals[m] = v
                cnts[m] = counts[v]
                counts[v] = 0.0
                m += 1
    else:
        _heapsort(y, n)
        for i in range(n):
            if m > 0 and y[i] == vals[m - 1]:
                cnts[m - 1] += 1.0
            else:
                vals[m] = y[i]
                cnts[m] = 1.0
                m += 1
    return _glm_solve(vals, cnts, m, n, c, ymax)


@njit(error_model="numpy")
def glm_constant(y, n, c):
    """The GLM constant of y[:n] called from Python (:func:`_glm_constant` on a copy; the
    kernels call that kernel themselves: this entry point compiles only when Python calls
    it)."""
    return _glm_constant(y[:n].copy(), n, c, np.empty(n), np.empty(n), np.zeros(4 * n + 1024))


@njit(error_model="numpy", **INTERNAL)
def _heapsort(y, n):
    """Sort y[:n] ascending in place (heapsort: a few lines that compile in a fraction of
    the time numba's np.sort takes)."""
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(y, start, n)
    for end in range(n - 1, 0, -1):
        y[0], y[end] = y[end], y[0]
        _sift_down(y, np.int64(0), end)


@njit(error_model="numpy", **INTERNAL)
def _sift_down(y, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and y[child + 1] > y[child]:
            child += 1
        if y[root] >= y[child]:
            return
        y[root], y[child] = y[child], y[root]
        root = child


# -- background, summation and centroids -------------------------------------------------------


#: :func:`_gather`'s modes: what it keeps of the background pixels
GATHER_SIMPLE, GATHER_HIST, GATHER_VALUES = 0, 1, 2


@njit(error_model="numpy", **INTERNAL)
def _gather(r, bbox, off, sb_data, sb_mask, g, mode, nh, yv, X, fg_v, fg_xyz, hist):
    """One pass over shoebox r: the counts and positions of its valid foreground pixels
    into ``fg_v``, ``fg_xyz``, and its background pixels' counts / gain as ``mode`` says:
    GATHER_SIMPLE, into ``yv`` and their offsets from the box centre into ``X`` (1, x, y,
    z; the ``simple`` models); GATHER_HIST, only into 4 interleaved histograms of nh bins in
    ``hist`` (int64, :func:`_glm_hist_root`) in turn, while they are integers below nh (else
    ``spill``: the GLM then gathers them again with GATHER_VALUES, into ``yv`` only).
    Returns (n valid, n background, n foreground, n overlapped, a bad foreground pixel,
    largest count in the histograms, spill).

    The loop over a plain background pixel (mask code Valid | Background, most of the
    box) updates only what the pixel changes, in registers: the valid pixels outside the
    background, the foreground and the overlapped ones are counted on the other branch,
    the largest count as a float (x86 has few integer registers: a count kept on the
    stack is a store and a load on every pixel's path)."""
    box = bbox[r]  # one view, then 1D reads: less code to compile than 2D reads
    x0, y0, z0 = box[0], box[2], box[4]
    w = box[1] - x0
    h = box[3] - y0
    d = box[5] - z0
    nbg = np.int64(0)
    nval = 0  # the valid pixels not in the background (nbg adds the others at the end)
    nsum = np.int64(0)
    nov = 0
    bad_fg = False
    ymax = 0.0  # the largest count in the histograms
    spill = False
    unit = g == 1.0  # x / 1 is x: no division per pixel
    u2, u3 = np.uint64(2), np.uint64(3)
    j = off[r]
    for zz in range(d):
        for yy in range(h):
            # row views indexed from 0: no negative-index test per pixel
            mr = sb_mask[j:j + w]
            dr = sb_data[j:j + w]
            j += w
            for xx in range(w):
                m = mr[xx]
                if (m & (VALID | BACKGROUND)) == VALID | BACKGROUND:
                    val = dr[xx] if unit else dr[xx] / g
                    if mode == GATHER_HIST:
                        if 0.0 <= val < nh and val == int(val):
                            # the four histograms in turn (count v of histogram q at
                            # 4 v + q; unsigned: no negative-index test): one would wait on
                            # its own last increment (neighbouring pixels mostly have
                            # equal counts)
                            hist[(np.uint64(val) << u2) | (np.uint64(nbg) & u3)] += 1
                            ymax = max(ymax, val)
                        else:
                            spill = True
                    else:
                        yv[nbg] = val
                        if mode == GATHER_SIMPLE:
                            X[nbg, 0] = 1.0
                            X[nbg, 1] = xx - 0.5 * w
                            X[nbg, 2] = yy - 0.5 * h
                            X[nbg, 3] = zz - 0.5 * d
                    nbg += 1
                if m != VALID | BACKGROUND:  # the rest, one test for most pixels
                    if (m & (VALID | BACKGROUND)) != VALID | BACKGROUND:
                        nval += m & VALID
                    if m & FOREGROUND:
                        if m & VALID:
                            fg_v[nsum] = dr[xx]
                            fg_xyz[nsum, 0] = xx
                            fg_xyz[nsum, 1] = yy
                            fg_xyz[nsum, 2] = zz
                            nsum += 1
                        else:  # a gap, masked or untrusted pixel in the foreground
                            bad_fg = True
                    if m & OVERLAPPED:
                        nov += 1
    nval += nbg
    imax = np.int64(ymax)
    return nval, nbg, nsum, nov, bad_fg, imax, spill


@njit(error_model="numpy", **INTERNAL)
def _finish(r, bbox, g, c0, c1, c2, c3, var_b, nused, status, gathered, fg_v, fg_xyz, bg_coef,
            out_f, out_i):
    """Store reflection r's background model (``c0``..``c3``, photons per pixel; var_b the
    variance of its mean) and the background-subtracted sums and centroid of its
    foreground (:func:`_gather`'s pixels and counts, ``gathered``): see :func:`process`."""
    nval, nbg, nsum, nov, bad_fg, _, _ = gathered
    box = bbox[r]  # one view, then 1D reads: less code to compile than 2D reads
    x0, y0, z0 = box[0], box[2], box[4]
    w = box[1] - x0
    h = box[3] - y0
    d = box[5] - z0
    nfg = nsum
    coef, res, res_i = bg_coef[r], out_f[r], out_i[r]  # row views: 1D writes, as box
    coef[0] = c0
    coef[1] = c1
    coef[2] = c2
    coef[3] = c3
    # sums over the valid foreground, background subtracted
    flat = c1 == 0.0 and c2 == 0.0 and c3 == 0.0
    b_flat = max(c0, 0.0) * g
    isum = 0.0
    csum = 0.0
    bsum = 0.0
    sx = 0.0
    sy = 0.0
    sz = 0.0
    sxx = 0.0
    syy = 0.0
    szz = 0.0
    sw = 0.0
    for k in range(nsum):
        xx, yy, zz = fg_xyz[k, 0], fg_xyz[k, 1], fg_xyz[k, 2]
        b = b_flat
        if not flat:
            b = c0 + c1 * (xx - 0.5 * w) + c2 * (yy - 0.5 * h) + c3 * (zz - 0.5 * d)
            b = max(b, 0.0) * g
        v = fg_v[k]
        isum += v - b
        csum += v
        bsum += b
        wt = v - b
        if wt > 0:
            px = x0 + xx + 0.5
            py = y0 + yy + 0.5
            pz = z0 + zz + 0.5
            sw += wt
            sx += wt * px
            sy += wt * py
            sz += wt * pz
            sxx += wt * px * px
            syy += wt * py * py
            szz += wt * pz * pz
    if nfg == 0:
        status = 2 if status == 0 else status
    res[0] = c0 * g
    res[1] = var_b * g * g
    res[2] = isum
    res[3] = g * max(csum, 0.0) + nfg * nfg * var_b * g * g
    if sw > 0:
        mx, my, mz = sx / sw, sy / sw, sz / sw
        res[4] = mx
        res[5] = my
        res[6] = mz
        # variance of the centroid: spread / sum of weights (DIALS centroid variance)
        res[7] = max(sxx / sw - mx * mx, 1.0 / 12.0) / sw
        res[8] = max(syy / sw - my * my, 1.0 / 12.0) / sw
        res[9] = max(szz / sw - mz * mz, 1.0 / 12.0) / sw
    else:
        for a in range(4, 10):
            res[a] = np.nan
    res[10] = bsum
    res[11] = nfg * nfg * var_b * g * g
    res_i[0] = nval
    res_i[1] = nbg
    res_i[2] = nfg
    res_i[3] = nused
    res_i[4] = 3 if (status == 0 and bad_fg) else status
    res_i[5] = nov


@njit(error_model="numpy")
def process_glm(rows, bbox, off, sb_data, sb_mask, gain, panel, glm_c, bg_coef, out_f, out_i, yv,
                X, fg_v, fg_xyz, hist, vals, cnts, all_vals, all_cnts, counts):
    """:func:`process` with the GLM background: from the histograms (``hist``: 4 of nh
    bins, int64, zero on entry and left zero; ``vals``, ``cnts``: scratch of nh) when the
    background pixels are all integer counts below nh, else from all of them
    (:func:`_glm_constant`; ``all_vals``, ``all_cnts``: scratch as long as ``yv``;
    ``counts``: a histogram, zero on entry and left zero): the same distinct values and
    multiplicities, so the same mean."""
    nh = hist.shape[0] // 4
    for ii in range(rows.shape[0]):
        r = rows[ii]
        g = gain[panel[r]]
        gathered = _gather(r, bbox, off, sb_data, sb_mask, g, np.int64(GATHER_HIST), nh, yv,
                           X, fg_v, fg_xyz, hist)
        nbg, imax, spill = gathered[1], gathered[5], gathered[6]
        c0 = 0.0
        var_b = 0.0
        status = 0
        if nbg < 1:
            status = 1
        elif spill:  # not all counts below nh: the histograms are cleared, and the
            # background pixels gathered again into yv (the same box's same values)
            for i in range(4 * nh):
                hist[i] = 0
            _gather(r, bbox, off, sb_data, sb_mask, g, np.int64(GATHER_VALUES), nh, yv, X,
                    fg_v, fg_xyz, hist)
            c0 = _glm_constant(yv, nbg, glm_c, all_vals, all_cnts, counts)
            var_b = max(c0, 1.0 / nbg) / nbg
        else:
            c0 = _glm_hist_root(hist, nh, imax, nbg, glm_c, vals, cnts)
            var_b = max(c0, 1.0 / nbg) / nbg
        _finish(r, bbox, g, c0, 0.0, 0.0, 0.0, var_b, nbg, status, gathered, fg_v, fg_xyz,
                bg_coef, out_f, out_i)


def process(rows, bbox, off, sb_data, sb_mask, gain, panel, algorithm, glm_c, npar, outlier,
            lower, upper, tukey, bg_coef, out_f, out_i, yv, X, fg_v, fg_xyz, hist, vals, cnts):
    """Background, summation and centroid of the complete shoeboxes ``rows``.

    Stores the background model's coefficients in ``bg_coef[r]`` (photons per pixel:
    constant, then the plane's slopes along x, y, z about the box centre;
    :func:`background_at` evaluates it); per row r:
    out_f[r] = (bg mean, var(bg mean), I sum, var I sum, x, y, z, var x, var y, var z,
    bg sum, var bg sum) and out_i[r] = (n valid, n background, n foreground, n background
    used, status: 0 ok, 1 no background, 2 no foreground, 3 foreground has bad pixels,
    foreground pixels given to an overlapping reflection).
    Summation: I = sum over foreground of (counts - B); var = gain * sum(counts) + n_fg^2
    var(B) (Poisson counts with the panel gain, and the error of the background estimate).
    ``algorithm``: 0 the GLM (``glm_c`` its tuning constant), 1 ``simple`` (``npar``,
    ``outlier``, ``lower``, ``upper``, ``tukey``: :func:`_simple_background`).
    ``yv``, ``X`` (rows: 1 for the GLM, else as ``yv``), ``fg_v`` and ``fg_xyz`` (rows, 3)
    are scratch, at least as long as the largest shoebox of ``rows``: one pass over the
    box gathers the background pixels and the counts and positions of the valid
    foreground ones (:func:`_gather`); the sums then visit only those. For the GLM the
    same pass counts the background pixels into ``hist`` (4 histograms of nh bins, int64,
    zero on entry and left zero; ``vals``, ``cnts``: scratch of nh) instead of storing
    them, which is all the GLM needs when they are counts below nh (:func:`process_glm`).
    The ``simple`` models' kernels (:func:`_process_simple`) are a unit of their own
    (:data:`SIMPLE`), compiled when a step first needs them.
    """
    if algorithm == 0:
        n = yv.shape[0]
        process_glm(rows, bbox, off, sb_data, sb_mask, gain, panel, glm_c, bg_coef, out_f,
                    out_i, yv, X, fg_v, fg_xyz, hist, vals, cnts, np.empty(n), np.empty(n),
                    np.zeros(4 * n + 1024))
    else:
        _process_simple(rows, bbox, off, sb_data, sb_mask, gain, panel, npar, outlier, lower,
                        upper, tukey, bg_coef, out_f, out_i, yv, X, fg_v, fg_xyz, hist)


# -- the simple background models (a unit of their own) -----------------------------------------

#: The unit of the ``simple`` background models' kernels, which only a user's choice
#: reaches: compiled (announced) when a step first needs them, prepared ahead with all the
#: units (an interactive session's start), not for ``integrate``.
SIMPLE = "gonio.core.integration.box_kernels.simple"


@njit(unit=SIMPLE, **INTERNAL)
def _argsort(y, n):
    """Indices that sort y[:n] ascending (heapsort: a few lines that compile in a
    fraction of the time numba's np.argsort takes)."""
    idx = np.arange(n)
    for start in range(n // 2 - 1, -1, -1):
        _sift(y, idx, start, n)
    for end in range(n - 1, 0, -1):
        idx[0], idx[end] = idx[end], idx[0]
        _sift(y, idx, np.int64(0), end)
    return idx


@njit(unit=SIMPLE, **INTERNAL)
def _sift(y, idx, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and y[idx[child + 1]] > y[idx[child]]:
            child += 1
        if y[idx[root]] >= y[idx[child]]:
            return
        idx[root], idx[child] = idx[child], idx[root]
        root = child


@njit(unit=SIMPLE, **INTERNAL)
def _fit_plane(y, X, keep, n, npar):
    """Least-squares coefficients of y ~ X[:, :npar] over kept rows."""
    A = np.zeros((npar, npar))
    b = np.zeros(npar)
    for i in range(n):
        if keep[i]:
            for a in range(npar):
                b[a] += X[i, a] * y[i]
                for q in range(npar):
                    A[a, q] += X[i, a] * X[i, q]
    for a in range(npar):
        A[a, a] += 1e-9
    return _solve_small(A, b, npar)


@njit(unit=SIMPLE, **INTERNAL)
def _solve_small(A, b, n):
    """x with A x = b for a small n x n system, by Gaussian elimination with partial
    pivoting (A and b are overwritten; a few lines instead of LAPACK's binding, which
    costs seconds to compile)."""
    for k in range(n):
        piv = k
        for i in range(k + 1, n):
            if abs(A[i, k]) > abs(A[piv, k]):
                piv = i
        if piv != k:
            for q in range(n):
                A[k, q], A[piv, q] = A[piv, q], A[k, q]
            b[k], b[piv] = b[piv], b[k]
        for i in range(k + 1, n):
            f = A[i, k] / A[k, k]
            for q in range(k, n):
                A[i, q] -= f * A[k, q]
            b[i] -= f * b[k]
    x = np.zeros(n)
    for k in range(n - 1, -1, -1):
        s = b[k]
        for q in range(k + 1, n):
            s -= A[k, q] * x[q]
        x[k] = s / A[k, k]
    return x


@njit(unit=SIMPLE, **INTERNAL)
def _simple_background(y, X, n, npar, outlier, lower, upper, tukey):
    """DIALS ``simple`` background: outlier rejection then a least-squares constant
    (npar=1) or plane (npar=3: 1, x, y; 4: 1, x, y, z) over the pixels ``y``.

    outlier: 0 null, 1 nsigma (iterated mean +- lower/upper sigma), 2 truncated (drop
    the lowest and highest 5 %), 3 tukey (median +- tukey * IQR), 4 normal (drop the
    highest pixels while the maximum is beyond the expected maximum of n normal
    deviates). Returns (coefficients, kept mask).
    """
    keep = np.ones(n, np.bool_)
    if outlier == 1:
        for _ in range(20):
            m = 0.0
            k = 0
            for i in range(n):
                if keep[i]:
                    m += y[i]
                    k += 1
            if k < 2:
                break
            m /= k
            v = 0.0
            for i in range(n):
                if keep[i]:
                    v += (y[i] - m) ** 2
            sd = math.sqrt(v / (k - 1))
            changed = False
            for i in range(n):
                if keep[i] and (y[i] < m - lower * sd or y[i] > m + upper * sd):
                    keep[i] = False
                    changed = True
            if not changed:
                break
    elif outlier == 2 or outlier == 3:
        order = _argsort(y, n)
        if outlier == 2:
            cut = int(0.05 * n)
            for i in range(cut):
                keep[order[i]] = False
                keep[order[n - 1 - i]] = False
        else:
            q1 = y[order[int(0.25 * (n - 1))]]
            q3 = y[order[int(0.75 * (n - 1))]]
            iqr = q3 - q1
            for i in range(n):
                if y[i] < q1 - tukey * iqr or y[i] > q3 + tukey * iqr:
                    keep[i] = False
    elif outlier == 4:
        order = _argsort(y, n)
        k = n
        while k > 10:
            m = 0.0
            for i in range(k):
                m += y[order[i]]
            m /= k
            v = 0.0
            for i in range(k):
                v += (y[order[i]] - m) ** 2
            sd = math.sqrt(v / (k - 1))
            # expected maximum of k standard normal deviates (Blom)
            pk = (k - 0.375) / (k + 0.25)
            t = math.sqrt(-2.0 * math.log(1.0 - pk))
            zmax = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (
                1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t ** 3)
            if sd > 0 and (y[order[k - 1]] - m) / sd > zmax:
                keep[order[k - 1]] = False
                k -= 1
            else:
                break
    return _fit_plane(y, X, keep, n, npar), keep


@njit(unit=SIMPLE)
def simple_background(y, X, n, npar, outlier, lower, upper, tukey):
    """:func:`_simple_background` called from Python (the kernels call that kernel
    themselves: this entry point compiles only when Python calls it)."""
    return _simple_background(y, X, n, npar, outlier, lower, upper, tukey)


@njit(unit=SIMPLE, error_model="numpy")
def _process_simple(rows, bbox, off, sb_data, sb_mask, gain, panel, npar, outlier, lower, upper,
                    tukey, bg_coef, out_f, out_i, yv, X, fg_v, fg_xyz, hist):
    """:func:`process` with DIALS's ``simple`` background (:func:`_simple_background`)."""
    nh = np.int64(0)
    for ii in range(rows.shape[0]):
        r = rows[ii]
        g = gain[panel[r]]
        gathered = _gather(r, bbox, off, sb_data, sb_mask, g, np.int64(GATHER_SIMPLE), nh, yv,
                           X, fg_v, fg_xyz, hist)
        nbg = gathered[1]
        status = 0
        c0 = c1 = c2 = c3 = 0.0
        var_b = 0.0
        nused = np.int64(0)  # not the literal: _finish gets one signature
        if nbg < 1:
            status = 1
        else:
            c, keep = _simple_background(yv, X, nbg, npar, outlier, lower, upper, tukey)
            c0 = c[0]
            if npar > 1:
                c1 = c[1]
            if npar > 2:
                c2 = c[2]
            if npar > 3:
                c3 = c[3]
            rss = 0.0
            for q in range(nbg):
                if keep[q]:
                    nused += 1
                    pred = 0.0
                    for a in range(npar):
                        pred += c[a] * X[q, a]
                    rss += (yv[q] - pred) ** 2
            var_b = rss / max(nused - npar, 1) / max(nused, 1)
        _finish(r, bbox, g, c0, c1, c2, c3, var_b, nused, status, gathered, fg_v, fg_xyz,
                bg_coef, out_f, out_i)
