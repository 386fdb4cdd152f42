"""Numba kernels of integration (``gonio.core.jit.njit``: compiled on first use, cached,
GIL released).

Shoebox mask codes are DIALS's (dials/model/data/mask_code.h): Valid 1,
Background 2, Foreground 4, Strong 8, BackgroundUsed 16, Overlapped 32.

Profile coordinates. A pixel seen along unit direction u at rotation angle phi'
is mapped back into the frame of the reflection's reciprocal-lattice point at its
diffracting angle phi: d = R(m2, phi - phi') (|s0| u - s0) - p, with p = s1 - s0
(W. Kabsch (1988) J. Appl. Cryst. 21, 916; (2010) 43, 611). d is the pixel's
offset from the lattice point in reciprocal space, so a reflection's counts are
distributed in d as its lattice point is (its size, mosaic spread and beam
divergence), whatever the detector geometry and however long the reflection takes
to cross the Ewald sphere (near the rotation axis the spot moves across the
detector while it diffracts; coordinates that ignore the rotation, as DIALS's
(c1, c2), do not follow it). The normalised coordinates are

    u = d.e1 / (|s1| db),  v = d.e2 / (|s1| db),  t = d.s1^ / (|s1| dn),

with e1 = s1 x s0 / |.|, e2 = s1^ x e1 (Kabsch's axes, orthonormal with s1^),
db = n_sigma sigma_b and dn = n_sigma sigma_m sin(2 theta) (rad): at u = v = 0,
t = zeta (phi' - phi) / (n_sigma sigma_m), Kabsch's c3 in units of its limit.

Geometry passed to the kernels, per reflection r: ``panel[r]``,
``bbox[r] = (x0, x1, y0, y1, z0, z1)`` (px, frames from the scan start, end
exclusive), ``geo[r]`` = (p (3), e1 (3), e2 (3), s1^ (3), |s1| db, |s1| dn, phi (rad)),
``off[r]`` (start of its shoebox in the buffers). Per detector pixel (all panels
one after another, panel p starting at ``pix_off[p]`` with ``pnx[p]`` pixels per
row): ``dirs``, the unit vector from the sample to the pixel centre, and
``static_ok`` (not a gap, not masked; passed to :func:`extract_frame` in its
``state``). ``scan`` = (phi0, osc) (rad): image f spans
phi0 + f osc to phi0 + (f + 1) osc. ``beam`` = (s0 (3), m2 (3), |s0|).
"""

from __future__ import annotations

import math

import numpy as np

from gonio.core.jit import njit

VALID, BACKGROUND, FOREGROUND, STRONG, BACKGROUND_USED, OVERLAPPED = 1, 2, 4, 8, 16, 32
SHARED = 64  # gonio's own: a foreground pixel also inside another reflection's foreground
# per-pixel scratch state of extract_frame: a gap or masked pixel, and the claims count
STATIC_BAD, CLAIMS = 128, 127
RAD = 180.0 / math.pi


def pixel_state(static_ok: np.ndarray) -> np.ndarray:
    """The scratch ``state`` of :func:`extract_frame` for a frame with no claims yet:
    STATIC_BAD where ``static_ok`` is False."""
    return np.where(static_ok, 0, STATIC_BAD).astype(np.uint8)


@njit
def _frame_axes(geo, r, beam, ang):
    """The normalised coordinates of reflection r as linear functions of a pixel's unit
    direction, for the rotation angle phi - phi' = ``ang`` (rad): (u, v, t) =
    A . dir + c, returned as 12 numbers (A_u, c_u, A_v, c_v, A_t, c_t).

    d = R(m2, ang) w - p with w = |s0| dir - s0, so e.d = (R^T e).w - e.p: rotating the
    reflection's three axes once per image instead of every pixel's w."""
    cs, sn = math.cos(ang), math.sin(ang)
    a_u = _rotated_axis(geo[r, 3], geo[r, 4], geo[r, 5], geo, r, beam, cs, sn, geo[r, 12])
    a_v = _rotated_axis(geo[r, 6], geo[r, 7], geo[r, 8], geo, r, beam, cs, sn, geo[r, 12])
    a_t = _rotated_axis(geo[r, 9], geo[r, 10], geo[r, 11], geo, r, beam, cs, sn, geo[r, 13])
    return a_u + a_v + a_t


@njit
def _rotated_axis(e0, e1, e2, geo, r, beam, cs, sn, scale):
    """(A (3), c) of one axis e: e.d / scale = A . dir + c (see :func:`_frame_axes`)."""
    k0 = beam[6]
    m0, m1, m2 = beam[3], beam[4], beam[5]
    inv = 1.0 / scale
    md = (m0 * e0 + m1 * e1 + m2 * e2) * (1.0 - cs)
    # R(m2, -ang) e = e cos - (m2 x e) sin + m2 (m2.e)(1 - cos)
    q0 = e0 * cs - (m1 * e2 - m2 * e1) * sn + m0 * md
    q1 = e1 * cs - (m2 * e0 - m0 * e2) * sn + m1 * md
    q2 = e2 * cs - (m0 * e1 - m1 * e0) * sn + m2 * md
    ep = e0 * geo[r, 0] + e1 * geo[r, 1] + e2 * geo[r, 2]
    return (q0 * k0 * inv, q1 * k0 * inv, q2 * k0 * inv,
            -(q0 * beam[0] + q1 * beam[1] + q2 * beam[2] + ep) * inv)


@njit
def extract_frame(pass_, f, frame, tmin, tmax, act, panel, bbox, geo, beam, scan, fg_pad, off,
                  pix_off, pnx, dirs, state, best, own, sb_data, sb_mask, overlapped,
                  overloaded):
    """Copy frame ``f`` (flat pixels of all panels) into the shoeboxes of reflections
    ``act`` that cover it, with their mask codes.

    Foreground: u^2 + v^2 <= (1 + fg_pad[r])^2 at the pixel centre (fg_pad: half a pixel
    diagonal in units of db, DIALS's nearest-corner rule) and |t| <= 1 somewhere within
    the image. A pixel in the foreground of several reflections stays foreground only of
    the one for which it is most central (smallest u^2 + v^2 + t^2; the others get
    Overlapped), is background of none, and those reflections are flagged
    ``overlapped``. ``state``, ``best``, ``own`` are per-pixel scratch: ``state`` (one
    byte, so that pass 1 fetches little per pixel) holds STATIC_BAD for a gap or masked
    pixel and the number of claims of the frame in its low bits (0 on entry, reset by
    pass 2; :func:`pixel_state` makes it); best and own are the smallest distance and its
    reflection, defined where claimed. ``sb_mask`` must be 0 on entry (pass 0 sets only
    the foreground). Valid: not statically masked and tmin < counts < tmax.
    The work is done in three passes (0: foreground claims, 1: pixels and mask codes, 2:
    scratch reset), each to be run for every set of reflections covering the frame before
    the next.
    """
    phi_mid = scan[0] + (f + 0.5) * scan[1]
    half = 0.5 * abs(scan[1])
    for ii in range(act.shape[0]):
        r = act[ii]
        x0, x1, y0, y1, z0, z1 = bbox[r, 0], bbox[r, 1], bbox[r, 2], bbox[r, 3], bbox[r, 4], \
            bbox[r, 5]
        if f < z0 or f >= z1:
            continue
        p = panel[r]
        nx = pnx[p]
        w = x1 - x0
        base = off[r] + (f - z0) * w * (y1 - y0) - x0
        if pass_ == 0:
            ax = _frame_axes(geo, r, beam, geo[r, 14] - phi_mid)
            au0, au1, au2, cu = ax[0], ax[1], ax[2], ax[3]
            av0, av1, av2, cv = ax[4], ax[5], ax[6], ax[7]
            at0, at1, at2, ct = ax[8], ax[9], ax[10], ax[11]
            lim = (1.0 + fg_pad[r]) ** 2
            # |t| changes by at most dt_half across the image's rotation range
            tlim = 1.0 + half * geo[r, 15]
            for y in range(y0, y1):
                row = pix_off[p] + y * nx
                jrow = base + (y - y0) * w
                for x in range(x0, x1):
                    pix = row + x
                    d0, d1, d2 = dirs[pix, 0], dirs[pix, 1], dirs[pix, 2]
                    u = au0 * d0 + au1 * d1 + au2 * d2 + cu
                    v = av0 * d0 + av1 * d1 + av2 * d2 + cv
                    t = at0 * d0 + at1 * d1 + at2 * d2 + ct
                    uv = u * u + v * v
                    if uv <= lim and abs(t) <= tlim:
                        sb_mask[jrow + x] = FOREGROUND
                        st = state[pix]
                        c = st & CLAIMS
                        if c < CLAIMS:
                            state[pix] = st + 1
                        d2 = uv + t * t
                        if c == 0 or d2 < best[pix]:
                            best[pix] = d2
                            own[pix] = r
        elif pass_ == 1:
            lo, hi = tmin[p], tmax[p]
            over = False
            shared = False
            for y in range(y0, y1):
                row = pix_off[p] + y * nx
                jrow = base + (y - y0) * w
                for x in range(x0, x1):
                    pix = row + x
                    j = jrow + x
                    val = frame[pix]
                    sb_data[j] = val
                    code = 0
                    st = state[pix]
                    if st < STATIC_BAD:
                        if val >= hi:
                            over = True
                        elif val > lo:
                            code = VALID
                    c = st & CLAIMS
                    if sb_mask[j] != 0:
                        if c > 1:  # claimed by several: the nearest keeps it
                            shared = True
                            code |= SHARED
                            code |= FOREGROUND if own[pix] == r else OVERLAPPED
                        else:
                            code |= FOREGROUND
                    elif c == 0:
                        code |= BACKGROUND
                    sb_mask[j] = code
            if over:
                overloaded[r] = True
            if shared:
                overlapped[r] = True
        else:
            for y in range(y0, y1):
                row = pix_off[p] + y * nx
                jrow = base + (y - y0) * w
                for x in range(x0, x1):
                    if sb_mask[jrow + x] & (FOREGROUND | OVERLAPPED):
                        state[row + x] &= STATIC_BAD


@njit
def repack(rows, old_off, new_off, sizes, src, dst):
    """Copy shoeboxes ``rows`` from ``src`` at ``old_off`` to ``dst`` at ``new_off``."""
    for ii in range(rows.shape[0]):
        r = rows[ii]
        a = old_off[r]
        b = new_off[r]
        for j in range(sizes[r]):
            dst[b + j] = src[a + j]


# -- background --------------------------------------------------------------------------


@njit
def _poisson_terms(j1, j2, mu):
    """P(Y <= j1), P(Y <= j2), P(Y = j1), P(Y = j2) for Y ~ Poisson(mu), j1 <= j2: the
    probabilities by the recurrence P(k + 1) = P(k) mu / (k + 1) from the start of the
    window where the mass is (one exponential per call)."""
    k0 = max(0, int(mu - 12.0 * math.sqrt(mu) - 10.0))
    c1 = c2 = p1 = p2 = 0.0
    if j2 < k0:
        return c1, c2, p1, p2
    pk = math.exp(k0 * math.log(mu) - mu - math.lgamma(k0 + 1.0))
    s = 0.0
    for k in range(k0, j2 + 1):
        s += pk
        if k == j1:
            c1, p1 = s, pk
        if k == j2:
            c2, p2 = s, pk
        pk *= mu / (k + 1.0)
    return min(c1, 1.0), min(c2, 1.0), p1, p2


@njit
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


@njit
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


@njit
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


@njit
def glm_constant(y, n, c):
    """Robust Poisson GLM with a constant model (DIALS ``glm`` background): the mean
    mu solving the Cantoni-Ronchetti estimating equation (root in log(mu)).
    Returns mu (counts per pixel)."""
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
    if integral and ymax < 4 * n + 1024:  # counts: a histogram, O(n)
        hist = np.zeros(int(ymax) + 1)
        for i in range(n):
            hist[int(y[i])] += 1.0
        m = np.int64(0)
        for v in range(hist.shape[0]):
            if hist[v] > 0:
                m += 1
        vals = np.empty(m)
        cnts = np.empty(m)
        m = np.int64(0)
        for v in range(hist.shape[0]):
            if hist[v] > 0:
                vals[m] = v
                cnts[m] = hist[v]
                m += 1
    else:
        order = _argsort(y, n)
        ys = np.empty(n)
        for i in range(n):
            ys[i] = y[order[i]]
        vals = np.empty(n)
        cnts = np.empty(n)
        m = np.int64(0)
        for i in range(n):
            if m > 0 and ys[i] == vals[m - 1]:
                cnts[m - 1] += 1.0
            else:
                vals[m] = ys[i]
                cnts[m] = 1.0
                m += 1
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


@njit
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


@njit
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


@njit
def simple_background(y, X, n, npar, outlier, lower, upper, tukey):
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


# -- per-reflection processing -----------------------------------------------------------


@njit
def background_at(bg_coef, r, j, w, h, d):
    """The background model of reflection r at pixel j of its shoebox (w x h x d, flat
    index), in photons per pixel (times the panel gain: counts): the constant, or the plane
    in the pixel's offsets from the box centre, clipped at 0 (:func:`process`)."""
    b = bg_coef[r, 0]
    if bg_coef[r, 1] != 0.0 or bg_coef[r, 2] != 0.0 or bg_coef[r, 3] != 0.0:
        xx = j % w
        q = j // w
        b += bg_coef[r, 1] * (xx - 0.5 * w) + bg_coef[r, 2] * (q % h - 0.5 * h) + \
            bg_coef[r, 3] * (q // h - 0.5 * d)
    return max(b, 0.0)


@njit
def process(rows, bbox, off, sb_data, sb_mask, gain, panel, algorithm, glm_c, npar,
            outlier, lower, upper, tukey, bg_coef, out_f, out_i):
    """Background, summation and centroid of the complete shoeboxes ``rows``.

    Marks BackgroundUsed and stores the background model's coefficients in ``bg_coef[r]``
    (photons per pixel: constant, then the plane's slopes along x, y, z about the box
    centre; :func:`background_at` evaluates it); per row r:
    out_f[r] = (bg mean, var(bg mean), I sum, var I sum, x, y, z, var x, var y, var z,
    bg sum, var bg sum) and out_i[r] = (n valid, n background, n foreground, n background
    used, status: 0 ok, 1 no background, 2 no foreground, 3 foreground has bad pixels,
    foreground pixels given to an overlapping reflection).
    Summation: I = sum over foreground of (counts - B); var = gain * sum(counts) + n_fg^2
    var(B) (Poisson counts with the panel gain, and the error of the background estimate).
    """
    for ii in range(rows.shape[0]):
        r = rows[ii]
        x0, x1, y0, y1, z0, z1 = bbox[r, 0], bbox[r, 1], bbox[r, 2], bbox[r, 3], bbox[r, 4], \
            bbox[r, 5]
        w = x1 - x0
        h = y1 - y0
        d = z1 - z0
        n = w * h * d
        o = off[r]
        g = gain[panel[r]]
        # one pass over the box: counts by kind, and the background pixels gathered
        yv = np.empty(max(n, 1))
        X = np.empty((max(n, 1) if algorithm != 0 else 1, 4))
        idx = np.empty(max(n, 1), np.int64)
        nbg = np.int64(0)
        nval = 0
        nfg = 0
        nov = 0
        bad_fg = False
        j = 0
        for zz in range(d):
            for yy in range(h):
                for xx in range(w):
                    m = sb_mask[o + j]
                    if m & VALID:
                        nval += 1
                        if m & BACKGROUND:
                            yv[nbg] = sb_data[o + j] / g
                            if algorithm != 0:
                                X[nbg, 0] = 1.0
                                X[nbg, 1] = xx - 0.5 * w
                                X[nbg, 2] = yy - 0.5 * h
                                X[nbg, 3] = zz - 0.5 * d
                            idx[nbg] = j
                            nbg += 1
                        if m & FOREGROUND:
                            nfg += 1
                    elif m & FOREGROUND:
                        bad_fg = True  # a gap, masked or untrusted pixel in the foreground
                    if m & OVERLAPPED:
                        nov += 1
                    j += 1
        status = 0
        coef = np.zeros(4)
        var_b = 0.0
        nused = 0
        if nbg < 1:
            status = 1
        elif algorithm == 0:
            mu = glm_constant(yv, nbg, glm_c)
            coef[0] = mu
            nused = nbg
            for q in range(nbg):
                sb_mask[o + idx[q]] |= BACKGROUND_USED
            var_b = max(mu, 1.0 / nbg) / nbg
        else:
            c, keep = simple_background(yv, X, nbg, npar, outlier, lower, upper, tukey)
            for a in range(npar):
                coef[a] = c[a]
            rss = 0.0
            for q in range(nbg):
                if keep[q]:
                    nused += 1
                    sb_mask[o + idx[q]] |= BACKGROUND_USED
                    pred = 0.0
                    for a in range(npar):
                        pred += c[a] * X[q, a]
                    rss += (yv[q] - pred) ** 2
            var_b = rss / max(nused - npar, 1) / max(nused, 1)
        for a in range(4):
            bg_coef[r, a] = coef[a]
        # sums over the foreground, background subtracted
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
        j = 0
        for zz in range(d):
            for yy in range(h):
                for xx in range(w):
                    m = sb_mask[o + j]
                    if (m & VALID) and (m & FOREGROUND):
                        b = coef[0] + coef[1] * (xx - 0.5 * w) + coef[2] * (yy - 0.5 * h) + \
                            coef[3] * (zz - 0.5 * d)
                        b = max(b, 0.0) * g
                        v = sb_data[o + j]
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
                    j += 1
        if nfg == 0:
            status = 2 if status == 0 else status
        out_f[r, 0] = coef[0] * g
        out_f[r, 1] = var_b * g * g
        out_f[r, 2] = isum
        out_f[r, 3] = g * max(csum, 0.0) + nfg * nfg * var_b * g * g
        if sw > 0:
            mx, my, mz = sx / sw, sy / sw, sz / sw
            out_f[r, 4] = mx
            out_f[r, 5] = my
            out_f[r, 6] = mz
            # variance of the centroid: spread / sum of weights (DIALS centroid variance)
            out_f[r, 7] = max(sxx / sw - mx * mx, 1.0 / 12.0) / sw
            out_f[r, 8] = max(syy / sw - my * my, 1.0 / 12.0) / sw
            out_f[r, 9] = max(szz / sw - mz * mz, 1.0 / 12.0) / sw
        else:
            for a in range(4, 10):
                out_f[r, a] = np.nan
        out_f[r, 10] = bsum
        out_f[r, 11] = nfg * nfg * var_b * g * g
        out_i[r, 0] = nval
        out_i[r, 1] = nbg
        out_i[r, 2] = nfg
        out_i[r, 3] = nused
        out_i[r, 4] = 3 if (status == 0 and bad_fg) else status
        out_i[r, 5] = nov


# -- reference profiles and profile fitting ------------------------------------------------


@njit(inline="always")
def _grid_pos(u, h, n):
    """Fractional grid index of normalised coordinate u on a grid of n points, step h,
    centred on 0."""
    return u / h + 0.5 * (n - 1)


@njit
def _shoebox_coords(r, bbox, geo, beam, scan, panel, pix_off, pnx, dirs, sb_mask, o, bits):
    """(n, 3) normalised coordinates (u, v, t) of the pixels of shoebox r (pixel centre,
    image centre) whose mask has any of ``bits``; the others are left undefined."""
    x0, x1, y0, y1, z0, z1 = bbox[r, 0], bbox[r, 1], bbox[r, 2], bbox[r, 3], bbox[r, 4], \
        bbox[r, 5]
    w = x1 - x0
    h = y1 - y0
    out = np.empty(((z1 - z0) * w * h, 3))
    p = panel[r]
    j = 0
    for zz in range(z1 - z0):
        ax = _frame_axes(geo, r, beam, geo[r, 14] - (scan[0] + (z0 + zz + 0.5) * scan[1]))
        for yy in range(h):
            pix = pix_off[p] + (y0 + yy) * pnx[p] + x0
            for xx in range(w):
                if sb_mask[o + j] & bits:
                    d0, d1, d2 = dirs[pix + xx, 0], dirs[pix + xx, 1], dirs[pix + xx, 2]
                    out[j, 0] = ax[0] * d0 + ax[1] * d1 + ax[2] * d2 + ax[3]
                    out[j, 1] = ax[4] * d0 + ax[5] * d1 + ax[6] * d2 + ax[7]
                    out[j, 2] = ax[8] * d0 + ax[9] * d1 + ax[10] * d2 + ax[11]
                j += 1
    return out


@njit
def _trilinear(u, v, t, hxy, hz, nxy, nz):
    """Base cell and weights of the 8 neighbours; base -1 when outside the grid."""
    gx = _grid_pos(u, hxy, nxy)
    gy = _grid_pos(v, hxy, nxy)
    gz = _grid_pos(t, hz, nz)
    if gx < 0 or gy < 0 or gz < 0 or gx > nxy - 1 or gy > nxy - 1 or gz > nz - 1:
        return -1, -1, -1, 0.0, 0.0, 0.0
    ix = min(int(gx), nxy - 2)
    iy = min(int(gy), nxy - 2)
    iz = min(int(gz), nz - 2)
    return ix, iy, iz, gx - ix, gy - iy, gz - iz


@njit
def accumulate_reference(rows, region, jac, isum, bbox, off, sb_data, sb_mask, bg_coef, gain,
                         geo, beam, scan, panel, pix_off, pnx, dirs, hxy, hz, acc, wsum, nref):
    """Add reflections ``rows`` to the reference profiles ``acc[region[r]]``: each valid
    pixel that is in no other reflection's foreground adds (counts - background) / J to
    the 8 nearest grid points with trilinear weights w (J the pixel volume in normalised
    coordinates) and w I_sum to ``wsum``: acc / wsum is the profile density, an
    intensity-weighted mean over the references (the strong ones, least noisy, count most:
    the sum of the reflections' pixels, as DIALS's reference learner, normalised)."""
    nz, nxy = acc.shape[1], acc.shape[2]
    for ii in range(rows.shape[0]):
        r = rows[ii]
        g = region[r]
        nref[g] += 1
        w, h, d = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 5] - bbox[r, 4]
        n = w * h * d
        g_r = gain[panel[r]]
        scale = 1.0 / jac[r]
        wi = isum[r]
        o = off[r]
        uvt = _shoebox_coords(r, bbox, geo, beam, scan, panel, pix_off, pnx, dirs, sb_mask, o,
                              FOREGROUND | BACKGROUND)
        for j in range(n):
            m = sb_mask[o + j]
            if (m & VALID) == 0 or (m & (OVERLAPPED | SHARED)) or \
                    (m & (FOREGROUND | BACKGROUND)) == 0:
                continue
            ix, iy, iz, fx, fy, fz = _trilinear(uvt[j, 0], uvt[j, 1], uvt[j, 2], hxy, hz, nxy,
                                                nz)
            if ix < 0:
                continue
            val = (sb_data[o + j] - g_r * background_at(bg_coef, r, j, w, h, d)) * scale
            for a in range(2):
                wa = fz if a else 1.0 - fz
                for b in range(2):
                    wb = fy if b else 1.0 - fy
                    for c in range(2):
                        wc = fx if c else 1.0 - fx
                        wt = wa * wb * wc
                        acc[g, iz + a, iy + b, ix + c] += wt * val
                        wsum[g, iz + a, iy + b, ix + c] += wt * wi


@njit
def fit_profiles(rows, prof_index, profiles, jac, bbox, off, sb_data, sb_mask, bg_coef, gain,
                 geo, beam, scan, panel, pix_off, pnx, dirs, hxy, hz, var_bg, min_fraction,
                 out):
    """3D profile fitting (Kabsch (2010); DIALS ProfileFitter): the intensity I minimising
    sum over foreground pixels of (c - B - I p)^2 / v with Poisson variances
    v = gain (B + I p), iterated to convergence (the Poisson maximum-likelihood estimate).
    Its variance is the Poisson variance of that estimator, 1 / sum(p^2 / v), plus the
    propagated variance of the background estimate: with v the model's pixel variances
    this is the estimator's own variance whatever the spot's exact shape (for a strong
    spot the estimate is sum(c - B) / sum(p), for a weak one sum(p (c - B)) / sum(p^2)).
    p is the reference profile ``profiles[prof_index[r]]`` at the pixel's normalised
    coordinates times the pixel volume ``jac[r]``, normalised to 1 over the reflection's
    foreground (valid or not); pixels where it is not positive (the noise of its tails)
    carry no information on I and are left out of the sums. A fit that would
    extrapolate, the valid pixels holding less than ``min_fraction`` of the profile (the
    spot mostly in gaps, masked, untrusted or given to an overlapping reflection), is not
    made.
    out[r] = (I, var I, correlation, sum of p over the fitted pixels, status: 0 ok, 1 no
    pixels / no profile, 2 did not converge, 3 too little of the profile on valid
    pixels)."""
    nz, nxy = profiles.shape[1], profiles.shape[2]
    for ii in range(rows.shape[0]):
        r = rows[ii]
        out[r, 4] = 1.0
        q = prof_index[r]
        if q < 0:
            continue
        w, h, d = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 5] - bbox[r, 4]
        n = w * h * d
        o = off[r]
        gr = gain[panel[r]]
        m_fg = 0
        for j in range(n):
            m = sb_mask[o + j]
            if m & (FOREGROUND | OVERLAPPED):
                m_fg += 1
        if m_fg == 0:
            continue
        pv = np.empty(m_fg)
        cv = np.empty(m_fg)
        bv = np.empty(m_fg)
        k = 0
        norm = 0.0
        uvt = _shoebox_coords(r, bbox, geo, beam, scan, panel, pix_off, pnx, dirs, sb_mask, o,
                              FOREGROUND | OVERLAPPED)
        for j in range(n):
            m = sb_mask[o + j]
            if (m & (FOREGROUND | OVERLAPPED)) == 0:
                continue
            ix, iy, iz, fx, fy, fz = _trilinear(uvt[j, 0], uvt[j, 1], uvt[j, 2], hxy, hz, nxy,
                                                nz)
            val = 0.0
            if ix >= 0:
                for a in range(2):
                    wa = fz if a else 1.0 - fz
                    for b in range(2):
                        wb = fy if b else 1.0 - fy
                        for c in range(2):
                            wc = fx if c else 1.0 - fx
                            val += wa * wb * wc * profiles[q, iz + a, iy + b, ix + c]
            norm += val * jac[r]
            if (m & VALID) and (m & FOREGROUND):
                pv[k] = val * jac[r]
                cv[k] = sb_data[o + j]
                bv[k] = gr * background_at(bg_coef, r, j, w, h, d)
                k += 1
        m_fg = k
        if m_fg == 0 or norm <= 0:
            continue
        # the profile normalised over the reflection's own foreground: I_prf estimates the
        # intensity summation measures, whatever the profile's tails beyond it
        psum = 0.0
        for k in range(m_fg):
            pv[k] /= norm
            psum += pv[k]
        if psum < min_fraction:
            out[r, 3] = psum
            out[r, 4] = 3.0
            continue
        # start from the summed intensity over the profile's share
        num = 0.0
        for k in range(m_fg):
            num += cv[k] - bv[k]
        intensity = num / psum
        status = 2
        sp2v = 1.0
        spv = 0.0
        for _ in range(50):
            a = 0.0
            b = 0.0
            spv = 0.0
            for k in range(m_fg):
                if pv[k] <= 0.0:
                    continue  # no expected counts from the spot: no information on I
                wv = pv[k] / (gr * max(bv[k] + max(intensity, 0.0) * pv[k], 1e-6))
                a += wv * (cv[k] - bv[k])
                b += wv * pv[k]
                spv += wv
            new = a / b
            sp2v = b
            if abs(new - intensity) <= 1e-6 * max(abs(new), 1.0):
                intensity = new
                status = 0
                break
            intensity = new
        # correlation between the background-subtracted counts and the profile
        mp = 0.0
        mc = 0.0
        for k in range(m_fg):
            mp += pv[k]
            mc += cv[k] - bv[k]
        mp /= m_fg
        mc /= m_fg
        sxy = 0.0
        sxx = 0.0
        syy = 0.0
        for k in range(m_fg):
            dp = pv[k] - mp
            dc = cv[k] - bv[k] - mc
            sxy += dp * dc
            sxx += dp * dp
            syy += dc * dc
        corr = sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0
        out[r, 0] = intensity
        # Poisson part plus the propagated error of the background estimate
        out[r, 1] = 1.0 / sp2v + (spv / sp2v) ** 2 * var_bg[r]
        out[r, 2] = corr
        out[r, 3] = psum
        out[r, 4] = status
