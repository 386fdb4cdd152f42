"""Orientations of a known cell by a real-space grid search.

``indexing.method=real_space_grid_search`` of dials.index (Gildea et al.
2014): the lengths of the known cell's basis vectors are fixed, and every
direction u over a hemisphere is scored by how periodic the rlp projections
u . r are with period 1/L for each length L; the best directions for each
length give candidate vectors L u for the usual basis selection.
"""

from __future__ import annotations

import gemmi
import numpy as np

from .directions import hemisphere, local_maxima, periodicity, refine_direction
from .symmetry import primitive_to_conventional


def grid_search_vectors(rlp: np.ndarray, unit_cell: gemmi.UnitCell,
                        characteristic_grid: float | None = None, space_group=None,
                        n_per_length: int = 8, max_spots: int = 1500) -> np.ndarray:
    """Candidate vectors (M, 3) A with the lengths of the known (primitive) cell."""
    step = characteristic_grid or 0.02
    real = np.array(unit_cell.orth.mat.tolist()).T  # rows a, b, c
    if space_group is not None:
        real = np.linalg.inv(primitive_to_conventional(space_group)) @ real
    lengths = sorted(set(np.round(np.linalg.norm(real, axis=1), 6)))
    d_all = 1.0 / np.linalg.norm(rlp, axis=1)
    dirs = hemisphere(step)
    out = []
    for length in lengths:
        sel = d_all >= max(d_all.min(), 4.0 * length * step)
        if np.count_nonzero(sel) < 20:
            sel = d_all >= np.sort(d_all)[::-1][min(len(d_all) - 1, 99)]
        r = rlp[sel]
        if len(r) > max_spots:
            r = r[np.random.default_rng(0).choice(len(r), max_spots, replace=False)]
        score = periodicity(r, dirs, length)
        for i in local_maxima(dirs, score, 3 * step, n_per_length):
            out.append(length * refine_direction(r, dirs[i], length, step))
    return np.array(out).reshape(-1, 3)
