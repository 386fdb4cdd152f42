"""Numba kernels of integration (``gonio.core.jit.njit``: compiled on first use, cached,
GIL released): the kernels on pixels, which cut frames into shoeboxes, learn reference
profiles and fit them. The kernels on whole shoeboxes (bounds, background, summation,
centroids, repacking) are in :mod:`.box_kernels`, a unit of kernels that compiles apart.

Shoebox mask codes are DIALS's (dials/model/data/mask_code.h, :mod:`.mask_codes`): Valid 1,
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

from gonio.core.jit import INTERNAL, njit

from .mask_codes import BACKGROUND, FOREGROUND, OVERLAPPED, SHARED, VALID
from .prefetch import prefetch

# per-pixel scratch state of extract_frame: a gap or masked pixel, and the claims count
STATIC_BAD, CLAIMS = 128, 127
RAD = 180.0 / math.pi
# LLVM's fast-math flags for a kernel whose floating-point sums over pixels may be taken in
# any order and so vectorised (reassoc), products and sums fused (contract), a division
# by a value shared by many made a product by its reciprocal (arcp), and the sign of a zero
# ignored (nsz); not the flags that assume no NaN or infinity (numba's fastmath=True)
SUMS_IN_ANY_ORDER = {"reassoc", "contract", "arcp", "nsz"}


def pixel_state(static_ok: np.ndarray) -> np.ndarray:
    """The scratch ``state`` of :func:`extract_frame` for a frame with no claims yet:
    STATIC_BAD where ``static_ok`` is False."""
    return np.where(static_ok, 0, STATIC_BAD).astype(np.uint8)


@njit(error_model="numpy", **INTERNAL)
def _axes(geo, r, beam, ang):
    """The normalised coordinates of reflection r as linear functions of a pixel's unit
    direction, for the rotation angle phi - phi' = ``ang`` (rad): (u, v, t) =
    A . dir + c, returned as 12 numbers (A_u, c_u, A_v, c_v, A_t, c_t).

    d = R(m2, ang) w - p with w = |s0| dir - s0, so e.d = (R^T e).w - e.p: rotating the
    reflection's three axes once per image instead of every pixel's w."""
    cs, sn = math.cos(ang), math.sin(ang)
    g = geo[r]  # one view, then 1D reads: less code to compile than 2D reads
    a_u = _rotated_axis(g[3], g[4], g[5], g, beam, cs, sn, g[12])
    a_v = _rotated_axis(g[6], g[7], g[8], g, beam, cs, sn, g[12])
    a_t = _rotated_axis(g[9], g[10], g[11], g, beam, cs, sn, g[13])
    return a_u + a_v + a_t


@njit(error_model="numpy")
def _frame_axes(geo, r, beam, ang):
    """:func:`_axes` called from Python (the kernels call that kernel themselves: this
    entry point compiles only when Python calls it)."""
    return _axes(geo, r, beam, ang)


@njit(error_model="numpy", **INTERNAL)
def _rotated_axis(e0, e1, e2, g, beam, cs, sn, scale):
    """(A (3), c) of one axis e of the reflection whose geometry is ``g`` (a row of
    ``geo``): e.d / scale = A . dir + c (see :func:`_axes`)."""
    k0 = beam[6]
    m0, m1, m2 = beam[3], beam[4], beam[5]
    inv = 1.0 / scale
    md = (m0 * e0 + m1 * e1 + m2 * e2) * (1.0 - cs)
    # R(m2, -ang) e = e cos - (m2 x e) sin + m2 (m2.e)(1 - cos)
    q0 = e0 * cs - (m1 * e2 - m2 * e1) * sn + m0 * md
    q1 = e1 * cs - (m2 * e0 - m0 * e2) * sn + m1 * md
    q2 = e2 * cs - (m0 * e1 - m1 * e0) * sn + m2 * md
    ep = e0 * g[0] + e1 * g[1] + e2 * g[2]
    return (q0 * k0 * inv, q1 * k0 * inv, q2 * k0 * inv,
            -(q0 * beam[0] + q1 * beam[1] + q2 * beam[2] + ep) * inv)


@njit(error_model="numpy", **INTERNAL)
def _slab(c0, dc, lim, klo, khi):
    """[klo, khi] narrowed to where |c0 + dc k| <= lim."""
    if dc != 0.0:
        k1, k2 = (-lim - c0) / dc, (lim - c0) / dc
        return max(klo, min(k1, k2)), min(khi, max(k1, k2))
    if abs(c0) > lim:
        return 1.0, 0.0
    return klo, khi


@njit(error_model="numpy", **INTERNAL)
def _span_pixels(x0, x1, klo, khi):
    """The pixels [xa, xb) of the row x0 <= x < x1 within k = x - x0 in [klo, khi]."""
    span = x1 - 1 - x0
    if klo > span or khi < 0.0 or klo > khi:
        return x0, x0
    return x0 + max(int(math.floor(klo)), 0), x0 + min(int(math.ceil(khi)), span) + 1


@njit(error_model="numpy", **INTERNAL)
def _line_span(x0, x1, ua, va, ta, du, dv, dt, eps, eps_t, lim, tlim):
    """The pixels [xa, xb) of the row x0 <= x < x1 where (u, v, t) = (ua, va, ta) +
    (du, dv, dt) (x - x0), within eps (u and v) and eps_t (t) of the exact coordinates,
    may meet u^2 + v^2 <= lim and |t| <= tlim: where the line meets the disc widened by
    2 eps and the slab widened by eps_t."""
    if not (eps < 1.0 and eps_t < 1e6):  # not a smooth row (or not finite): test all
        return x0, x1
    qa = du * du + dv * dv
    radius = math.sqrt(lim) + 2.0 * eps
    if qa > 0.0:
        qb = ua * du + va * dv
        disc = qb * qb - qa * (ua * ua + va * va - radius * radius)
        if disc < 0.0:
            return x0, x0
        sq = math.sqrt(disc)
        klo, khi = (-qb - sq) / qa, (-qb + sq) / qa
    elif ua * ua + va * va <= radius * radius:
        klo, khi = 0.0, float(x1 - 1 - x0)
    else:
        return x0, x0
    klo, khi = _slab(ta, dt, tlim + eps_t, klo, khi)
    return _span_pixels(x0, x1, klo, khi)


@njit(error_model="numpy", **INTERNAL)
def _uvt(ax, dirs, pix):
    """The normalised coordinates (u, v, t) of pixel ``pix`` (:func:`_axes` ax)."""
    d0, d1, d2 = dirs[pix, 0], dirs[pix, 1], dirs[pix, 2]
    return (ax[0] * d0 + ax[1] * d1 + ax[2] * d2 + ax[3],
            ax[4] * d0 + ax[5] * d1 + ax[6] * d2 + ax[7],
            ax[8] * d0 + ax[9] * d1 + ax[10] * d2 + ax[11])


@njit(error_model="numpy", **INTERNAL)
def _edge_bow(ax, dirs, pa, pm, pb, s):
    """How far (u, v, t) at pixel ``pm``, a fraction s of the way from pixel pa to pb
    (one box edge), is from the straight line between them, divided by s (1 - s):
    the quadratic term's coefficient along that edge (its largest distance from the line
    is a quarter of it)."""
    ua, va, ta = _uvt(ax, dirs, pa)
    ub, vb, tb = _uvt(ax, dirs, pb)
    um, vm, tm = _uvt(ax, dirs, pm)
    k = 1.0 / (s * (1.0 - s))
    return (max(abs(ua + s * (ub - ua) - um), abs(va + s * (vb - va) - vm)) * k,
            abs(ta + s * (tb - ta) - tm) * k)


@njit(error_model="numpy", **INTERNAL)
def _box_model(ax, dirs, top, nx, x0, x1, y0, y1):
    """(u, v, t) over a box (rows y0 <= y < y1 of a panel whose row y starts at
    ``top + y nx``, x0 <= x < x1; at least 3 x 3 pixels) as the bilinear interpolation of
    their values at the centres of its four corner pixels: those 12 values, then eps_uv,
    eps_t, bounds on the interpolation's distance from the exact u and v, and t.

    The pixel directions are smooth over a box: what the interpolation leaves out is
    their curvature, a quadratic term along each axis (x y is interpolated exactly) that
    is largest at the middle of the box's edges and drops to 0 at its corners. It is
    measured at the middle of the four edges; the bound is twice the largest bow along x
    plus twice the largest along y (a quarter of each coefficient), or twice the centre's
    distance from the interpolation if larger (a term that vanishes on the edges), plus
    1e-3. One box costs 9 fetched directions.

    Along a row (u, v, t) (:func:`_axes` ``ax``) are linear in x but for that
    curvature: for (u, v), across the spot, it is a few hundredths; t, along the
    diffracted beam, is quadratic in the angle from it (the Ewald sphere's curvature) and
    can leave the straight line by more."""
    xe, ye = x1 - 1, y1 - 1
    xm, ym = x0 + (xe - x0) // 2, y0 + (ye - y0) // 2
    sx, sy = (xm - x0) / (xe - x0), (ym - y0) / (ye - y0)
    r0, r1, rm = top + y0 * nx, top + ye * nx, top + ym * nx
    u00, v00, t00 = _uvt(ax, dirs, r0 + x0)
    u10, v10, t10 = _uvt(ax, dirs, r0 + xe)
    u01, v01, t01 = _uvt(ax, dirs, r1 + x0)
    u11, v11, t11 = _uvt(ax, dirs, r1 + xe)
    bx0, bxt0 = _edge_bow(ax, dirs, r0 + x0, r0 + xm, r0 + xe, sx)
    bx1, bxt1 = _edge_bow(ax, dirs, r1 + x0, r1 + xm, r1 + xe, sx)
    by0, byt0 = _edge_bow(ax, dirs, r0 + x0, rm + x0, r1 + x0, sy)
    by1, byt1 = _edge_bow(ax, dirs, r0 + xe, rm + xe, r1 + xe, sy)
    # and the centre's distance from the interpolation: what vanishes on every edge
    um, vm, tm = _uvt(ax, dirs, rm + xm)
    w00, w10, w01, w11 = (1 - sx) * (1 - sy), sx * (1 - sy), (1 - sx) * sy, sx * sy
    cu = abs(w00 * u00 + w10 * u10 + w01 * u01 + w11 * u11 - um)
    cv = abs(w00 * v00 + w10 * v10 + w01 * v01 + w11 * v11 - vm)
    ct = abs(w00 * t00 + w10 * t10 + w01 * t01 + w11 * t11 - tm)
    eps_uv = max(0.5 * (max(bx0, bx1) + max(by0, by1)), 2.0 * max(cu, cv)) + 1e-3
    eps_t = max(0.5 * (max(bxt0, bxt1) + max(byt0, byt1)), 2.0 * ct) + 1e-3
    return (u00, v00, t00, u10, v10, t10, u01, v01, t01, u11, v11, t11, eps_uv, eps_t)


@njit(error_model="numpy", **INTERNAL)
def _prefetch_box_model(dirs, box, pix_off, pnx, p):
    """Fetch ahead (:mod:`.prefetch`) the directions :func:`_box_model` reads for the box
    ``box`` (a row of ``bbox``) on panel p: its corners, the middles of its edges and its
    centre."""
    x0, x1, y0, y1 = box[0], box[1], box[2], box[3]
    xe, ye = x1 - 1, y1 - 1
    xm, ym = x0 + (xe - x0) // 2, y0 + (ye - y0) // 2
    nx = pnx[p]
    for k in range(3):
        row = pix_off[p] + (y0 if k == 0 else (ym if k == 1 else ye)) * nx
        prefetch(dirs, 3 * (row + x0))
        prefetch(dirs, 3 * (row + xm))
        prefetch(dirs, 3 * (row + xe))


@njit(error_model="numpy", **INTERNAL)
def _box_row_line(bm, y0, y1, x0, x1, y):
    """Box row y's line from the box's model ``bm`` (:func:`_box_model`), the
    interpolation between the box's left and right edges: (u, v, t) at its first pixel
    x0, their steps per pixel, and the model's bounds eps_uv, eps_t."""
    q = (y - y0) / (y1 - 1 - y0)
    inv = 1.0 / (x1 - 1 - x0)
    ua = bm[0] + q * (bm[6] - bm[0])
    va = bm[1] + q * (bm[7] - bm[1])
    ta = bm[2] + q * (bm[8] - bm[2])
    du = (bm[3] + q * (bm[9] - bm[3]) - ua) * inv
    dv = (bm[4] + q * (bm[10] - bm[4]) - va) * inv
    dt = (bm[5] + q * (bm[11] - bm[5]) - ta) * inv
    return ua, va, ta, du, dv, dt, bm[12], bm[13]


@njit(error_model="numpy", **INTERNAL)
def _box_row_span(bm, y0, y1, x0, x1, y, lim, tlim):
    """:func:`_line_span` of box row y (:func:`_box_row_line`)."""
    ua, va, ta, du, dv, dt, eps, eps_t = _box_row_line(bm, y0, y1, x0, x1, y)
    return _line_span(x0, x1, ua, va, ta, du, dv, dt, eps, eps_t, lim, tlim)


@njit(error_model="numpy", **INTERNAL)
def _box_grid_span(bm, y0, y1, x0, x1, y, g_uv, g_t):
    """:func:`_line_grid_span` of box row y (:func:`_box_row_line`)."""
    ua, va, ta, du, dv, dt, eps, eps_t = _box_row_line(bm, y0, y1, x0, x1, y)
    return _line_grid_span(x0, x1, ua, va, ta, du, dv, dt, eps, eps_t, g_uv, g_t)


@njit(error_model="numpy", **INTERNAL)
def _line_grid_span(x0, x1, ua, va, ta, du, dv, dt, eps, eps_t, g_uv, g_t):
    """The pixels [xa, xb) of the row x0 <= x < x1 on the line (ua, va, ta) + (du, dv, dt)
    (x - x0) (:func:`_line_span`) that may be within |u|, |v| <= g_uv and |t| <= g_t."""
    if not (eps < 1.0 and eps_t < 1e6):
        return x0, x1
    klo, khi = _slab(ua, du, g_uv + eps, 0.0, float(x1 - 1 - x0))
    klo, khi = _slab(va, dv, g_uv + eps, klo, khi)
    klo, khi = _slab(ta, dt, g_t + eps_t, klo, khi)
    return _span_pixels(x0, x1, klo, khi)


@njit(error_model="numpy")
def extract_frame(pass_, f, frame, tmin, tmax, act, panel, bbox, geo, beam, scan, fg_pad, off,
                  pix_off, pnx, dirs, state, best, own, claimed, n_claimed, sb_data, sb_mask,
                  overlapped, overloaded):
    """Copy frame ``f`` (flat pixels of all panels) into the shoeboxes of reflections
    ``act`` that cover it, with their mask codes.

    Foreground: u^2 + v^2 <= (1 + fg_pad[r])^2 at the pixel centre (fg_pad: half a pixel
    diagonal in units of db, DIALS's nearest-corner rule) and |t| <= 1 somewhere within
    the image. A pixel in the foreground of several reflections stays foreground only of
    the one for which it is most central (smallest u^2 + v^2 + t^2; the others get
    Overlapped), is background of none, and those reflections are flagged
    ``overlapped``. ``state``, ``best``, ``own`` are per-pixel scratch: ``state`` (one
    byte, so that pass 1 fetches little per pixel) holds STATIC_BAD for a gap or masked
    pixel and the number of claims of the frame in its low bits (0 on entry;
    :func:`pixel_state` makes it); best and own are the smallest distance and its
    reflection, defined where claimed. Pass 0 lists the pixels it claims first in
    ``claimed[:n_claimed[0]]``, for :func:`reset_claims`. ``sb_mask`` must be 0 on entry
    (pass 0 sets only the foreground). Valid: not statically masked and
    tmin < counts < tmax. The work is done in two passes (0: foreground claims, 1: pixels
    and mask codes), each to be run for every set of reflections covering the frame
    before the next; then :func:`reset_claims`.
    """
    phi_mid = scan[0] + (f + 0.5) * scan[1]
    half = 0.5 * abs(scan[1])
    ncl = n_claimed[0]  # in a register while claiming (-9 % CPU), stored at the end
    for ii in range(act.shape[0]):
        r = act[ii]
        box = bbox[r]  # one view, then 1D reads: less code to compile than 2D reads
        x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
        if f < z0 or f >= z1:
            continue
        p = panel[r]
        nx = pnx[p]
        w = x1 - x0
        base = off[r] + (f - z0) * w * (y1 - y0) - x0
        if pass_ == 0:
            if ii + 2 < act.shape[0]:  # the box model's directions two boxes ahead
                _prefetch_box_model(dirs, bbox[act[ii + 2]], pix_off, pnx, panel[act[ii + 2]])
            ax = _axes(geo, r, beam, geo[r, 14] - phi_mid)
            lim = (1.0 + fg_pad[r]) ** 2
            # |t| changes by at most dt_half across the image's rotation range
            tlim = 1.0 + half * geo[r, 15]
            top = pix_off[p]
            # each row's span from the box's bilinear model (no directions fetched for the
            # rows that miss the foreground); boxes under 5 x 3 pixels: every pixel tested
            by_box = w > 4 and y1 - y0 > 2
            xa, xb = x0, x1
            if by_box:
                bm = _box_model(ax, dirs, top, nx, x0, x1, y0, y1)
                xa, xb = _box_row_span(bm, y0, y1, x0, x1, np.int64(y0), lim, tlim)
                xa1, xb1 = _box_row_span(bm, y0, y1, x0, x1, y0 + 1, lim, tlim)
            for y in range(y0, y1):
                row = top + y * nx
                jrow = base + (y - y0) * w
                if by_box:
                    xa2, xb2 = x0, x0
                    if y + 2 < y1:  # the row after next: its span's directions (:mod:`.prefetch`)
                        xa2, xb2 = _box_row_span(bm, y0, y1, x0, x1, y + 2, lim, tlim)
                        if xb2 > xa2:
                            for ahead in range(3 * (row + 2 * nx + xa2),
                                               3 * (row + 2 * nx + xb2) + 15, 16):
                                prefetch(dirs, ahead)
                            # and its claims' scratch and mask codes (the shoebox's lines
                            # written first here): -20 % CPU of this pass
                            prefetch(state, row + 2 * nx + xa2)
                            prefetch(best, row + 2 * nx + xa2)
                            prefetch(best, row + 2 * nx + xb2 - 1)
                            prefetch(own, row + 2 * nx + xa2)
                            prefetch(own, row + 2 * nx + xb2 - 1)
                            prefetch(sb_mask, jrow + 2 * w + xa2)
                # row views indexed from 0: no negative-index test per pixel
                drow = dirs[row + xa:row + xb]
                sr = state[row + xa:row + xb]
                brow = best[row + xa:row + xb]
                orow = own[row + xa:row + xb]
                mr = sb_mask[jrow + xa:jrow + xb]
                for k in range(xb - xa):
                    u, v, t = _uvt(ax, drow, k)
                    uv = u * u + v * v
                    if uv <= lim and abs(t) <= tlim:
                        mr[k] = FOREGROUND
                        st = sr[k]
                        c = st & CLAIMS
                        if c < CLAIMS:
                            sr[k] = st + 1
                        if c == 0:
                            claimed[ncl] = row + xa + k
                            ncl += 1
                        d2 = uv + t * t
                        if c == 0 or d2 < brow[k]:
                            brow[k] = d2
                            orow[k] = r
                if by_box:
                    xa, xb, xa1, xb1 = xa1, xb1, xa2, xb2
        else:
            lo, hi = tmin[p], tmax[p]
            over = False
            shared = False
            for y in range(y0, y1):
                row = pix_off[p] + y * nx
                jrow = base + (y - y0) * w
                if y + 2 < y1:  # the counts and states of the row after next
                    for ahead in range(row + 2 * nx + x0, row + 2 * nx + x1 + 15, 16):
                        prefetch(frame, ahead)
                    prefetch(state, row + 2 * nx + x0)
                    prefetch(state, row + 2 * nx + x1 - 1)
                    # and the shoebox's lines it writes (the counts' not read yet)
                    for ahead in range(jrow + 2 * w + x0, jrow + 2 * w + x1 + 15, 16):
                        prefetch(sb_data, ahead)
                    prefetch(sb_mask, jrow + 2 * w + x0)
                    prefetch(sb_mask, jrow + 2 * w + x1 - 1)
                # row views indexed from 0: no negative-index test per pixel (-30 % CPU)
                fr = frame[row + x0:row + x1]
                sr = state[row + x0:row + x1]
                orow = own[row + x0:row + x1]
                dr = sb_data[jrow + x0:jrow + x1]
                mr = sb_mask[jrow + x0:jrow + x1]
                for k in range(w):
                    val = fr[k]
                    dr[k] = val
                    code = 0
                    st = sr[k]
                    if st < STATIC_BAD:
                        if val >= hi:
                            over = True
                        elif val > lo:
                            code = VALID
                    c = st & CLAIMS
                    if mr[k] != 0:
                        if c > 1:  # claimed by several: the nearest keeps it
                            shared = True
                            code |= SHARED
                            code |= FOREGROUND if orow[k] == r else OVERLAPPED
                        else:
                            code |= FOREGROUND
                    elif c == 0:
                        code |= BACKGROUND
                    mr[k] = code
            if over:
                overloaded[r] = True
            if shared:
                overlapped[r] = True
    n_claimed[0] = ncl


@njit(error_model="numpy")
def reset_claims(state, claimed, n_claimed):
    """Clear the claims :func:`extract_frame` left in ``state`` for the next frame
    (its static bit stays): only at the pixels pass 0 listed."""
    for i in range(n_claimed[0]):
        state[claimed[i]] &= STATIC_BAD
    n_claimed[0] = 0


def panel_geometry(detector) -> np.ndarray:
    """Per panel, for :func:`box_extent`: D^-1 (9, row by row; D = [fast | slow | origin]
    maps panel mm to the laboratory frame), origin (3), fast (3), slow (3), normal (3,
    pointing away from the sample), mu (1/mm), thickness (mm, 0 without the parallax
    correction), pixel size (2, mm)."""
    out = np.zeros((len(detector), 25))
    for i, p in enumerate(detector):
        n = p.normal if p.origin @ p.normal >= 0 else -p.normal
        out[i, 0:9] = np.linalg.inv(p.d_matrix).ravel()
        out[i, 9:12], out[i, 12:15], out[i, 15:18] = p.origin, p.fast_axis, p.slow_axis
        out[i, 18:21] = n
        out[i, 21] = p.mu
        out[i, 22] = p.thickness if p.has_parallax else 0.0
        out[i, 23:25] = p.pixel_size
    return out


# -- the background model at a pixel ------------------------------------------------------


@njit(error_model="numpy", **INTERNAL)
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


@njit(error_model="numpy", **INTERNAL)
def _flat_background(bg_coef, r):
    """(whether reflection r's background model is a constant, that constant clipped at
    0): :func:`background_at` of every pixel, without a call per pixel."""
    flat = bg_coef[r, 1] == 0.0 and bg_coef[r, 2] == 0.0 and bg_coef[r, 3] == 0.0
    return flat, max(bg_coef[r, 0], 0.0)


# -- reference profiles and profile fitting ------------------------------------------------


@njit(error_model="numpy", **INTERNAL)
def _pixel_trilinear(ax, dirs, p, per_hxy, per_hz, nxy, nz):
    """Base cell and weights of the 8 grid points around pixel p (base -1 when outside the
    grid), whose direction ``dirs[p]`` the affine map ``ax`` (3 x 4, row-major) takes to the
    normalised Kabsch coordinates (u, v, t): their fractional indices on the grids of nxy
    points, step hxy (u, v) and nz points, step hz (t), centred on 0. ``per_hxy``,
    ``per_hz``: 1 / hxy, 1 / hz (a product per coordinate instead of a division: -17 % CPU
    in reference learning; a fraction may move by an ulp, the float32 reference
    accumulators by one of theirs at a few grid points)."""
    u, v, t = _uvt(ax, dirs, p)
    gx = u * per_hxy + 0.5 * (nxy - 1)
    gy = v * per_hxy + 0.5 * (nxy - 1)
    gz = t * per_hz + 0.5 * (nz - 1)
    if gx < 0 or gy < 0 or gz < 0 or gx > nxy - 1 or gy > nxy - 1 or gz > nz - 1:
        return -1, -1, -1, 0.0, 0.0, 0.0
    ix = min(int(gx), nxy - 2)
    iy = min(int(gy), nxy - 2)
    iz = min(int(gz), nz - 2)
    return ix, iy, iz, gx - ix, gy - iy, gz - iz


@njit(error_model="numpy")
def accumulate_reference(rows, region, jac, isum, bbox, off, sb_data, sb_mask, bg_coef, gain,
                         geo, beam, scan, panel, pix_off, pnx, dirs, hxy, hz, acc, wsum, nz, nxy,
                         nref):
    """Add reflections ``rows`` to the reference profiles ``acc[region[r]]``: each valid
    pixel that is in no other reflection's foreground adds (counts - background) / J to
    the 8 nearest grid points with trilinear weights w (J the pixel volume in normalised
    coordinates) and w I_sum to ``wsum``: acc / wsum is the profile density, an
    intensity-weighted mean over the references (the strong ones, least noisy, count most:
    the sum of the reflections' pixels, as DIALS's reference learner, normalised). ``acc``
    and ``wsum``: the (regions, nz, nxy, nxy) grids, flattened."""
    plane = nxy * nxy
    g_uv, g_t = 0.5 * hxy * (nxy - 1), 0.5 * hz * (nz - 1)  # the grid's half-widths
    per_hxy, per_hz = 1.0 / hxy, 1.0 / hz
    for ii in range(rows.shape[0]):
        r = rows[ii]
        g = region[r]
        nref[g] += 1
        box = bbox[r]  # one view, then 1D reads: less code to compile than 2D reads
        x0, x1, y0, y1, z0 = box[0], box[1], box[2], box[3], box[4]
        w, h, d = x1 - x0, y1 - y0, box[5] - z0
        g_r = gain[panel[r]]
        scale = 1.0 / jac[r]
        wi = isum[r]
        flat, b_flat = _flat_background(bg_coef, r)
        o = off[r]
        p = panel[r]
        nx = pnx[p]
        # the corners as bbox's integers, the first row as int64: the span helpers take
        # the same argument types here as in extract_frame (one specialisation each)
        # the rows' spans from the box's model (:func:`_box_model`); boxes under 5 x 3
        # pixels: every pixel tested
        by_box = w > 4 and h > 2
        xa, xb = x0, x1
        for zz in range(d):
            ax = _axes(geo, r, beam, geo[r, 14] - (scan[0] + (z0 + zz + 0.5) * scan[1]))
            if by_box:
                bm = _box_model(ax, dirs, pix_off[p], nx, x0, x1, y0, y1)
                xa, xb = _box_grid_span(bm, y0, y1, x0, x1, np.int64(y0), g_uv, g_t)
                xa1, xb1 = _box_grid_span(bm, y0, y1, x0, x1, y0 + 1, g_uv, g_t)
            for yy in range(h):
                row = pix_off[p] + (y0 + yy) * nx
                pix = row + x0
                if by_box:
                    xa2, xb2 = x0, x0
                    if yy + 2 < h:  # the row after next: its span's directions (:mod:`.prefetch`)
                        xa2, xb2 = _box_grid_span(bm, y0, y1, x0, x1, y0 + yy + 2, g_uv, g_t)
                        for ahead in range(3 * (row + 2 * nx + xa2), 3 * (row + 2 * nx + xb2) + 15,
                                           16):
                            prefetch(dirs, ahead)
                for xx in range(xa - x0, xb - x0):
                    j = (zz * h + yy) * w + xx
                    m = sb_mask[o + j]
                    if (m & VALID) == 0 or (m & (OVERLAPPED | SHARED)) or \
                            (m & (FOREGROUND | BACKGROUND)) == 0:
                        continue
                    ix, iy, iz, fx, fy, fz = _pixel_trilinear(ax, dirs, pix + xx, per_hxy,
                                                              per_hz, nxy, nz)
                    if ix < 0:
                        continue
                    bg = b_flat if flat else background_at(bg_coef, r, j, w, h, d)
                    val = (sb_data[o + j] - g_r * bg) * scale
                    cell = ((g * nz + iz) * nxy + iy) * nxy + ix  # flat index of the cell
                    for a in range(2):
                        wa = fz if a else 1.0 - fz
                        for b in range(2):
                            wb = fy if b else 1.0 - fy
                            for c in range(2):
                                wc = fx if c else 1.0 - fx
                                wt = wa * wb * wc
                                q = cell + a * plane + b * nxy + c
                                acc[q] += wt * val
                                wsum[q] += wt * wi
                if by_box:
                    xa, xb, xa1, xb1 = xa1, xb1, xa2, xb2


@njit(error_model="numpy", fastmath=SUMS_IN_ANY_ORDER)
def fit_profiles(rows, prof_index, profiles, nz, nxy, jac, bbox, off, sb_data, sb_mask, bg_coef,
                 gain, geo, beam, scan, panel, pix_off, pnx, dirs, hxy, hz, var_bg,
                 min_fraction, out, pv, cv, bv):
    """3D profile fitting (Kabsch (2010); DIALS ProfileFitter): the intensity I minimising
    sum over foreground pixels of (c - B - I p)^2 / v with Poisson variances
    v = gain (B + I p), iterated to convergence (the Poisson maximum-likelihood estimate).
    Its variance is the Poisson variance of that estimator, 1 / sum(p^2 / v), plus the
    propagated variance of the background estimate: with v the model's pixel variances
    this is the estimator's own variance whatever the spot's exact shape (for a strong
    spot the estimate is sum(c - B) / sum(p), for a weak one sum(p (c - B)) / sum(p^2)).
    p is the reference profile ``prof_index[r]`` (``profiles``: the (regions, nz, nxy, nxy)
    grids, flattened) at the pixel's normalised coordinates times the pixel volume
    ``jac[r]``, normalised to 1 over the reflection's foreground (valid or not); pixels where it is not positive (the noise of its tails)
    carry no information on I and are left out of the sums. A fit that would
    extrapolate, the valid pixels holding less than ``min_fraction`` of the profile (the
    spot mostly in gaps, masked, untrusted or given to an overlapping reflection), is not
    made.
    out[r] = (I, var I, correlation, sum of p over the fitted pixels, status: 0 ok, 1 no
    pixels / no profile, 2 did not converge, 3 too little of the profile on valid
    pixels). ``pv``, ``cv``, ``bv``: scratch, at least as long as the largest shoebox of
    ``rows``.

    Compiled with :data:`SUMS_IN_ANY_ORDER`: the sums over a reflection's pixels are
    taken in the order the compiler finds fastest (the iterations' weighted sums
    vectorised, 4 pixels at a time; with the reciprocal grid steps of
    :func:`_pixel_trilinear`, -40 % CPU on replayed calls). That moves the fitted
    intensities by < 1e-10 relative (the same profiles), a ten-thousandth of the
    iterations' tolerance."""
    plane = nxy * nxy
    per_hxy, per_hz = 1.0 / hxy, 1.0 / hz
    u1, un, up = np.uint64(1), np.uint64(nxy), np.uint64(plane)
    un1, up1, upn, upn1 = un + u1, up + u1, up + un, up + un + u1
    for ii in range(rows.shape[0]):
        r = rows[ii]
        res = out[r]
        res[4] = 1.0
        q = prof_index[r]
        if q < 0:
            continue
        box = bbox[r]  # one view, then 1D reads: less code to compile than 2D reads
        x0, y0, z0 = box[0], box[2], box[4]
        w, h, d = box[1] - x0, box[3] - y0, box[5] - z0
        o = off[r]
        gr = gain[panel[r]]
        flat, b_flat = _flat_background(bg_coef, r)
        k = 0
        norm = 0.0
        p = panel[r]
        j = -1
        for zz in range(d):
            ax = _axes(geo, r, beam, geo[r, 14] - (scan[0] + (z0 + zz + 0.5) * scan[1]))
            for yy in range(h):
                pix = pix_off[p] + (y0 + yy) * pnx[p] + x0
                if yy + 2 < h:  # the directions of the row after next (:mod:`.prefetch`)
                    for ahead in range(3 * (pix + 2 * pnx[p]), 3 * (pix + 2 * pnx[p] + w) + 15,
                                       16):
                        prefetch(dirs, ahead)
                for xx in range(w):
                    j += 1
                    m = sb_mask[o + j]
                    if (m & (FOREGROUND | OVERLAPPED)) == 0:
                        continue
                    ix, iy, iz, fx, fy, fz = _pixel_trilinear(ax, dirs, pix + xx, per_hxy,
                                                              per_hz, nxy, nz)
                    val = 0.0
                    if ix >= 0:  # trilinear (the 8 terms in any order: SUMS_IN_ANY_ORDER)
                        gz, gy, gx = 1.0 - fz, 1.0 - fy, 1.0 - fx
                        w00, w01, w10, w11 = gz * gy, gz * fy, fz * gy, fz * fy
                        # the flat index of the cell and its neighbours' offsets, unsigned:
                        # no negative-index test per read (-10 % CPU)
                        c = np.uint64(((q * nz + iz) * nxy + iy) * nxy + ix)
                        val = w00 * gx * profiles[c]
                        val += w00 * fx * profiles[c + u1]
                        val += w01 * gx * profiles[c + un]
                        val += w01 * fx * profiles[c + un1]
                        val += w10 * gx * profiles[c + up]
                        val += w10 * fx * profiles[c + up1]
                        val += w11 * gx * profiles[c + upn]
                        val += w11 * fx * profiles[c + upn1]
                    norm += val * jac[r]
                    if (m & VALID) and (m & FOREGROUND):
                        pv[k] = val * jac[r]
                        cv[k] = sb_data[o + j]
                        bv[k] = gr * (b_flat if flat else background_at(bg_coef, r, j, w, h, d))
                        k += 1
        m_fg = k
        if m_fg == 0 or norm <= 0:
            continue
        # the profile normalised over the reflection's own foreground: I_prf estimates the
        # intensity summation measures, whatever the profile's tails beyond it
        psum = 0.0
        num = 0.0  # the background-subtracted counts
        for k in range(m_fg):
            pv[k] /= norm
            psum += pv[k]
            num += cv[k] - bv[k]
        if psum < min_fraction:
            res[3] = psum
            res[4] = 3.0
            continue
        # start from the summed intensity over the profile's share
        intensity = num / psum
        status = 2
        sp2v = 1.0
        spv = 0.0
        for _ in range(50):
            a = 0.0
            b = 0.0
            spv = 0.0
            lam = max(intensity, 0.0)
            for k in range(m_fg):
                pk = pv[k]
                # no expected counts from the spot (pk <= 0): no information on I, weight 0
                # (a select, not a branch: the loop is vectorised)
                wv = pk / (gr * max(bv[k] + lam * pk, 1e-6)) if pk > 0.0 else 0.0
                a += wv * (cv[k] - bv[k])
                b += wv * pk
                spv += wv
            new = a / b
            sp2v = b
            if abs(new - intensity) <= 1e-6 * max(abs(new), 1.0):
                intensity = new
                status = 0
                break
            intensity = new
        # correlation between the background-subtracted counts and the profile
        mp = psum / m_fg
        mc = num / m_fg
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
        res[0] = intensity
        # Poisson part plus the propagated error of the background estimate
        res[1] = 1.0 / sp2v + (spv / sp2v) ** 2 * var_bg[r]
        res[2] = corr
        res[3] = psum
        res[4] = status
