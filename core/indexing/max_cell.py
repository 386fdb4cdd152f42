"""Estimate the longest cell edge from nearest-neighbour spot separations.

As DIALS (after the LABELIT/Sauter et al. 2004 approach): rlps are grouped
by imageset, by ``step_size``-degree rotation windows and by entering /
exiting; in each group every rlp's nearest-neighbour distance in reciprocal
space gives a direct-space separation 1/d_nn. The longest 1% are dropped;
a histogram (about 5 neighbours a bin) gives the most probable
separation, and max_cell is the upper edge of the last bin still above
``max_height_fraction`` of the highest, times a tolerance of 1.5 (or a
percentile of the distances, when given). The caller applies
``max_cell_multiplier``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

TOLERANCE = 1.5
NN_PER_BIN = 5


def nearest_neighbour_max_cell(rlp, phi_deg, imageset_id, entering, step_size=45.0,
                               max_height_fraction=0.25, percentile=None) -> float:
    """max_cell (A) from rlps (N, 3), their phi (deg), imageset and entering flags."""
    direct = []
    for iset in np.unique(imageset_id):
        s_i = imageset_id == iset
        z = phi_deg[s_i]
        n_steps = max(int(np.ceil((z.max() - z.min()) / step_size)), 1)
        for n in range(n_steps):
            lo = z.min() + n * step_size
            s_z = s_i & (phi_deg >= lo) & ((phi_deg < lo + step_size) | (n == n_steps - 1))
            for ent in (True, False):
                sel = s_z & (entering == ent)
                if np.count_nonzero(sel) < 2:
                    continue
                dist, _ = cKDTree(rlp[sel]).query(rlp[sel], k=2)
                with np.errstate(divide="ignore"):
                    direct.append(1.0 / dist[:, 1])
    direct = np.sort(np.concatenate(direct)) if direct else np.zeros(0)
    direct = direct[np.isfinite(direct) & (direct > 1.0)]
    if len(direct) < 10:
        return float("nan")
    if percentile is not None:
        return float(TOLERANCE * np.percentile(direct, 100.0 * (1.0 - percentile)))
    direct = direct[: int(np.floor(0.99 * len(direct)))]
    counts, edges = np.histogram(direct, bins=max(len(direct) // NN_PER_BIN, 1))
    above = np.flatnonzero(counts > max_height_fraction * counts.max())
    return float(TOLERANCE * edges[above.max() + 1])
