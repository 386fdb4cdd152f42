"""Directions over a hemisphere and periodicity scores of rlp projections.

Used by the 1D FFT search (Steller, Bolotovsky & Rossmann 1997, J. Appl.
Cryst. 30, 1036) and the real-space grid search (DIALS, after Gildea et al.
2014): if u is the direction of a real-space lattice vector of length L,
the projections u . r of all rlps r cluster at multiples of 1/L.
"""

from __future__ import annotations

import numpy as np


def hemisphere(step_rad: float) -> np.ndarray:
    """Unit vectors (M, 3), z >= 0, spaced about ``step_rad`` apart (Fibonacci lattice)."""
    n_sphere = max(int(4 * np.pi / step_rad**2), 8)
    i = np.arange(n_sphere) + 0.5
    z = 1.0 - 2.0 * i / n_sphere
    phi = np.pi * (1.0 + 5**0.5) * i
    r = np.sqrt(1.0 - z**2)
    v = np.column_stack([r * np.cos(phi), r * np.sin(phi), z])
    return v[z >= 0]


def periodicity(rlp: np.ndarray, dirs: np.ndarray, length: float, chunk: int = 2048) -> np.ndarray:
    """|mean exp(2 pi i L u.r)| for each direction u: 1 when every projection is a multiple
    of 1/L."""
    out = np.empty(len(dirs))
    for s in range(0, len(dirs), chunk):
        p = dirs[s:s + chunk] @ rlp.T
        out[s:s + chunk] = np.abs(np.exp(2j * np.pi * length * p).mean(axis=1))
    return out


def local_maxima(dirs: np.ndarray, score: np.ndarray, radius_rad: float, n_max: int):
    """Indices of the best directions, at most one within ``radius_rad`` of another."""
    order = np.argsort(score)[::-1]
    kept: list[int] = []
    cos_r = np.cos(radius_rad)
    for i in order:
        if kept and np.max(np.abs(dirs[kept] @ dirs[i])) > cos_r:
            continue
        kept.append(i)
        if len(kept) >= n_max:
            break
    return np.array(kept, dtype=int)


def refine_direction(rlp: np.ndarray, u: np.ndarray, length: float, step_rad: float,
                     n_levels: int = 3) -> np.ndarray:
    """Local search of the direction (and then length) maximising the periodicity."""
    best = np.asarray(u, float)
    for _ in range(n_levels):
        e1 = np.cross(best, [1.0, 0.0, 0.0])
        if np.linalg.norm(e1) < 0.1:
            e1 = np.cross(best, [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(best, e1)
        g = np.linspace(-step_rad, step_rad, 7)
        a, b = np.meshgrid(g, g)
        cand = best + a.ravel()[:, None] * e1 + b.ravel()[:, None] * e2
        cand /= np.linalg.norm(cand, axis=1)[:, None]
        best = cand[np.argmax(periodicity(rlp, cand, length))]
        step_rad /= 3.0
    return best
