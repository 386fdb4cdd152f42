"""numba kernel of the beam-centre search: the phase score of trial detector shifts.

Imported lazily by :mod:`gonio.core.indexing.beam_search` (never at shell start-up).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def phase_scores(lab, cos_phi, sin_phi, shifts, s0, wavelength, setting_inv, axis, fixed_inv,
                 v0, counts, tol):
    """Score of each trial detector shift (T, 3) mm: sum_k mean_j cos(2 pi v_k . r_j).

    ``lab`` (N, 3) mm: spot positions in the laboratory frame, sorted by increasing
    |rlp| (low resolution first); ``cos_phi``, ``sin_phi``: of each spot's rotation
    angle. For each trial the rlps r_j are recomputed (s1 / lambda - s0 rotated back
    by -phi about ``axis``, then the inverse setting and fixed rotations), then each
    candidate vector v_k (K, 3) A is refitted: Miller index components
    n = round(v . r) within ``tol`` of an integer, least squares v . r + c = n over the
    first ``counts[i]`` spots (growing), the offset c free. The score term is the phase
    at the origin of the fitted planes (DIALS's ``backmax``, Sauter et al. 2004); a
    vector that collapses to under half its length scores 0.
    """
    n_trials, n = shifts.shape[0], lab.shape[0]
    n_vec = v0.shape[0]
    out = np.zeros(n_trials)
    r = np.empty((n, 3))
    two_pi = 2.0 * np.pi
    for t in range(n_trials):
        for j in range(n):
            x = lab[j, 0] + shifts[t, 0]
            y = lab[j, 1] + shifts[t, 1]
            z = lab[j, 2] + shifts[t, 2]
            norm = np.sqrt(x * x + y * y + z * z) * wavelength
            s = np.empty(3)
            s[0] = x / norm - s0[0]
            s[1] = y / norm - s0[1]
            s[2] = z / norm - s0[2]
            u = setting_inv @ s
            # rotate by -phi about axis (Rodrigues)
            c, sn = cos_phi[j], -sin_phi[j]
            ad = axis[0] * u[0] + axis[1] * u[1] + axis[2] * u[2]
            cx = axis[1] * u[2] - axis[2] * u[1]
            cy = axis[2] * u[0] - axis[0] * u[2]
            cz = axis[0] * u[1] - axis[1] * u[0]
            w = np.empty(3)
            w[0] = u[0] * c + cx * sn + axis[0] * ad * (1.0 - c)
            w[1] = u[1] * c + cy * sn + axis[1] * ad * (1.0 - c)
            w[2] = u[2] * c + cz * sn + axis[2] * ad * (1.0 - c)
            q = fixed_inv @ w
            r[j, 0], r[j, 1], r[j, 2] = q[0], q[1], q[2]
        total = 0.0
        for k in range(n_vec):
            v = v0[k].copy()
            for m in counts:
                A = np.zeros((4, 4))
                b = np.zeros(4)
                for j in range(m):
                    p = v[0] * r[j, 0] + v[1] * r[j, 1] + v[2] * r[j, 2]
                    h = np.rint(p)
                    if abs(p - h) < tol:
                        xv = (r[j, 0], r[j, 1], r[j, 2], 1.0)
                        for a in range(4):
                            b[a] += h * xv[a]
                            for e in range(a, 4):
                                A[a, e] += xv[a] * xv[e]
                for a in range(4):
                    A[a, a] += 1e-9
                    for e in range(a):
                        A[a, e] = A[e, a]
                sol = np.linalg.solve(A, b)
                v[0], v[1], v[2] = sol[0], sol[1], sol[2]
            if v[0] ** 2 + v[1] ** 2 + v[2] ** 2 > 0.25 * (v0[k, 0] ** 2 + v0[k, 1] ** 2
                                                          + v0[k, 2] ** 2):
                acc = 0.0
                for j in range(n):
                    acc += np.cos(two_pi * (v[0] * r[j, 0] + v[1] * r[j, 1] + v[2] * r[j, 2]))
                total += acc / n
        out[t] = total
    return out
