"""The L-BFGS minimisation dials.scale 3.x runs, with its stopping rule.

dials.scale minimises its scaling target with scitbx's L-BFGS (Liu & Nocedal 1989, Math.
Program. 45, 503: the limited-memory BFGS update with m = 5 correction pairs and the
initial inverse Hessian (y.s / y.y) I; the first step 1 / |g| along -g, later steps starting
at 1) and the Moré & Thuente line search (1994, ACM TOMS 20, 286: sufficient decrease
ftol = 1e-4, curvature gtol = 0.9, at most 20 evaluations), on the raw model parameters.
It stops after the first iteration whose RMSD, sqrt(target / n), changed by less than
``rmsd_tolerance`` (1e-4) relative to the previous iteration's (DIALS's ScalingRefinery;
scaling_refinery.rmsd_tolerance), or when |g| <= 1e-5 max(1, |x|) (scitbx's traditional
test). On these data that is well before the minimum: the scales after each L-BFGS round,
and so the outliers judged with them and the error model refined on them, are those of
that point. This reproduces the iterations, not only the minimum: the path of L-BFGS is
unchanged by any orthogonal change of parameters (an order, signs, the frame of the
absorption harmonics), so gonio's parameters follow DIALS's.
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: scitbx's line search constants (lbfgs.h): sufficient decrease, curvature, interval
#: width, step bounds, evaluations per line search
FTOL, GTOL, XTOL, STPMIN, STPMAX, MAXFEV = 1e-4, 0.9, 1e-16, 1e-20, 1e20, 20


class LineSearchFailed(RuntimeError):
    pass


def minimise(fg, x0, n_obs: int, rmsd_tolerance: float = 1e-4, max_iterations=None,
             m: int = 5, eps: float = 1e-5):
    """Minimise ``fg(x) -> (f, g)`` from ``x0`` as dials.scale does (see the module text);
    RMSD = sqrt(f / n_obs). Returns (x, f, number of iterations). A failed line search
    ends the minimisation at the lowest point met, as scitbx does."""
    x = np.array(x0, float)
    f, g = fg(x)
    if not np.any(g):  # already at a stationary point: scitbx takes no step
        return x, f, 0
    best = [f, x.copy()]
    pairs: deque = deque(maxlen=m)
    rmsd_prev = None
    it = 0
    while True:
        it += 1
        d = _direction(g, pairs)
        stp = 1.0 / np.sqrt(g @ g) if it == 1 else 1.0
        try:
            x_new, f_new, g_new, stp = _line_search(fg, x, f, g, d, stp, best)
        except LineSearchFailed:
            f, x = best[0], best[1]
            break
        pairs.append((x_new - x, g_new - g))
        x, f, g = x_new, f_new, g_new
        rmsd = np.sqrt(max(f, 0.0) / max(n_obs, 1))
        if rmsd_prev is not None and (rmsd_prev <= 0
                                      or abs(rmsd_prev - rmsd) / rmsd_prev < rmsd_tolerance):
            break
        rmsd_prev = rmsd
        if np.sqrt(g @ g) <= eps * max(1.0, np.sqrt(x @ x)):
            break
        if max_iterations is not None and it >= max_iterations:
            break
    return x, f, it


def _direction(g, pairs) -> np.ndarray:
    """-H g by the two-loop recursion, H0 = (y.s / y.y) I of the newest pair."""
    q = -g.copy()
    if not pairs:
        return q
    alphas = []
    for s, y in reversed(pairs):
        rho = 1.0 / (y @ s)
        a = rho * (s @ q)
        q -= a * y
        alphas.append((a, rho))
    s, y = pairs[-1]
    q *= (y @ s) / (y @ y)
    for (s, y), (a, rho) in zip(pairs, reversed(alphas)):
        q += s * (a - rho * (y @ q))
    return q


def _line_search(fg, x, f, g, d, stp, best):
    """The Moré-Thuente line search (scitbx's mcsrch): (x, f, g, step) at a step
    satisfying f <= f0 + FTOL stp g0.d and |g.d| <= GTOL |g0.d|. ``best`` [f, x] is
    updated with the lowest point evaluated."""
    dginit = g @ d
    if dginit >= 0:
        raise LineSearchFailed("not a descent direction")
    dgtest = FTOL * dginit
    brackt, stage1, infoc = False, True, 1
    width, width1 = STPMAX - STPMIN, 2.0 * (STPMAX - STPMIN)
    # the best step (x), the other end of the interval (y): step, f, directional derivative
    bx = [0.0, f, dginit]
    by = [0.0, f, dginit]
    for nfev in range(1, MAXFEV + 1):
        if brackt:
            stmin, stmax = min(bx[0], by[0]), max(bx[0], by[0])
        else:
            stmin, stmax = bx[0], stp + 4.0 * (stp - bx[0])
        stp = min(max(stp, STPMIN), STPMAX)
        if ((brackt and (stp <= stmin or stp >= stmax)) or nfev >= MAXFEV or infoc == 0
                or (brackt and stmax - stmin <= XTOL * stmax)):
            stp = bx[0]
        x_t = x + stp * d
        f_t, g_t = fg(x_t)
        if f_t < best[0]:
            best[:] = [f_t, x_t.copy()]
        dg = g_t @ d
        ftest1 = f + stp * dgtest
        if (brackt and (stp <= stmin or stp >= stmax)) or infoc == 0:
            raise LineSearchFailed("rounding errors prevent further progress")
        if stp == STPMAX and f_t <= ftest1 and dg <= dgtest:
            raise LineSearchFailed("the step is at its upper bound")
        if stp == STPMIN and (f_t > ftest1 or dg >= dgtest):
            raise LineSearchFailed("the step is at its lower bound")
        if nfev >= MAXFEV:
            raise LineSearchFailed("too many function evaluations")
        if brackt and stmax - stmin <= XTOL * stmax:
            raise LineSearchFailed("the interval of uncertainty is too small")
        if f_t <= ftest1 and abs(dg) <= GTOL * (-dginit):
            return x_t, f_t, g_t, stp
        if stage1 and f_t <= ftest1 and dg >= min(FTOL, GTOL) * dginit:
            stage1 = False
        if stage1 and f_t <= bx[1] and f_t > ftest1:
            # the modified function psi(stp) = f - stp * dgtest while no step has
            # given sufficient decrease
            mx = [bx[0], bx[1] - bx[0] * dgtest, bx[2] - dgtest]
            my = [by[0], by[1] - by[0] * dgtest, by[2] - dgtest]
            stp, brackt, infoc = _step(mx, my, stp, f_t - stp * dgtest, dg - dgtest, brackt,
                                       stmin, stmax)
            bx = [mx[0], mx[1] + mx[0] * dgtest, mx[2] + dgtest]
            by = [my[0], my[1] + my[0] * dgtest, my[2] + dgtest]
        else:
            stp, brackt, infoc = _step(bx, by, stp, f_t, dg, brackt, stmin, stmax)
        if brackt:
            if abs(by[0] - bx[0]) >= 0.66 * width1:
                stp = bx[0] + 0.5 * (by[0] - bx[0])
            width1, width = width, abs(by[0] - bx[0])
    raise LineSearchFailed("too many function evaluations")


def _cubic_gamma(theta, da, db, clip=False):
    s = max(abs(theta), abs(da), abs(db))
    v = (theta / s) ** 2 - (da / s) * (db / s)
    return s * np.sqrt(max(v, 0.0) if clip else v)


def _step(bx, by, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded step of the Moré-Thuente interval update (scitbx's mcstep), from the
    best point ``bx`` and the other end ``by`` ([step, f, derivative], updated in place) and
    the trial (stp, fp, dp). Returns (next step, bracketed, info; 0: no step possible)."""
    stx, fx, dx = bx
    sty, fy, dy = by
    if ((brackt and (stp <= min(stx, sty) or stp >= max(stx, sty))) or dx * (stp - stx) >= 0
            or stpmax < stpmin):
        return stp, brackt, 0
    sgnd = dp * np.sign(dx)
    if fp > fx:  # a higher function value: the minimum is bracketed
        info, bound = 1, True
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        gamma = _cubic_gamma(theta, dx, dp) * (-1.0 if stp < stx else 1.0)
        r = ((gamma - dx) + theta) / (((gamma - dx) + gamma) + dp)
        stpc = stx + r * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        stpf = stpc if abs(stpc - stx) < abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0:  # derivatives of opposite sign: bracketed
        info, bound = 2, False
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        gamma = _cubic_gamma(theta, dx, dp) * (-1.0 if stp > stx else 1.0)
        r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dx)
        stpc = stp + r * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        brackt = True
    elif abs(dp) < abs(dx):  # same sign, derivative decreasing in magnitude
        info, bound = 3, True
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        gamma = _cubic_gamma(theta, dx, dp, clip=True) * (-1.0 if stp > stx else 1.0)
        r = ((gamma - dp) + theta) / ((gamma + (dx - dp)) + gamma)
        if r < 0 and gamma != 0:
            stpc = stp + r * (stx - stp)
        else:
            stpc = stpmax if stp > stx else stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if brackt:  # the step closer to stp, else the farther one (stpq on a tie)
            stpf = stpc if abs(stp - stpc) < abs(stp - stpq) else stpq
        else:
            stpf = stpc if abs(stp - stpc) > abs(stp - stpq) else stpq
    else:  # same sign, derivative not decreasing
        info, bound = 4, False
        if brackt:
            theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
            gamma = _cubic_gamma(theta, dy, dp) * (-1.0 if stp > sty else 1.0)
            r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dy)
            stpf = stp + r * (sty - stp)
        else:
            stpf = stpmax if stp > stx else stpmin
    if fp > fx:
        by[:] = [stp, fp, dp]
    else:
        if sgnd < 0:
            by[:] = [stx, fx, dx]
        bx[:] = [stp, fp, dp]
    stp = max(stpmin, min(stpmax, stpf))
    if brackt and bound:
        limit = bx[0] + 0.66 * (by[0] - bx[0])
        stp = min(limit, stp) if by[0] > bx[0] else max(limit, stp)
    return stp, brackt, info
