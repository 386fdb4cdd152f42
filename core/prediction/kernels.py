"""numba kernel of the scan-varying prediction (:mod:`.scan_varying`), imported when first
used. Only integrate reaches it, so it is compiled with integrate's kernels (the unit
``gonio.core.integration``, whose warm-up predicts with a scan-varying crystal)."""

from __future__ import annotations

import math

from ..jit import njit


@njit(unit="gonio.core.integration", error_model="numpy")
def boundary_points(C, bound, h, s0, k, r, outside, rr):
    """The lattice point r = C_j h of each candidate n at each of its image boundaries
    j = ``bound[n, b]`` (``C`` (n_images + 1, 3, 3): one matrix per boundary; ``h`` (N, 3)
    float Miller indices), into ``r`` (N, B, 3); whether it lies outside the Ewald sphere of
    ``s0`` (radius ``k`` = |s0|), |s0 + r| - k >= 0, into ``outside`` (N, B); and |r|^2 into
    ``rr`` (N, B). The sums of three products are added in the order numpy's ``einsum``
    and ``linalg.norm`` add them ((x0 + x2) + x1, and (x0 + x1) + x2 under the root), so
    the numbers are those of the whole-array code to the bit."""
    for n in range(bound.shape[0]):
        h0, h1, h2 = h[n, 0], h[n, 1], h[n, 2]
        for b in range(bound.shape[1]):
            j = bound[n, b]
            x0 = (C[j, 0, 0] * h0 + C[j, 0, 2] * h2) + C[j, 0, 1] * h1
            x1 = (C[j, 1, 0] * h0 + C[j, 1, 2] * h2) + C[j, 1, 1] * h1
            x2 = (C[j, 2, 0] * h0 + C[j, 2, 2] * h2) + C[j, 2, 1] * h1
            r[n, b, 0] = x0
            r[n, b, 1] = x1
            r[n, b, 2] = x2
            t0, t1, t2 = s0[0] + x0, s0[1] + x1, s0[2] + x2
            outside[n, b] = math.sqrt((t0 * t0 + t1 * t1) + t2 * t2) - k >= 0
            rr[n, b] = (x0 * x0 + x2 * x2) + x1 * x1
