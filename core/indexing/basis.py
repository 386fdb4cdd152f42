"""From candidate real-space vectors to a reduced basis (dials.index style).

* :func:`refine_vectors`: each candidate v is improved by least squares of
  rlp . v = n over the rlps already close to an integer n (the FFT grid
  gives v to about a grid step only).
* :func:`unique_vectors`: the best of every family of (nearly) parallel
  vectors whose lengths are integer multiples, shortest first.
* :func:`select_basis`: every non-coplanar triple of the shortest vectors
  is scored by the number of rlps it indexes; the smallest-volume triple
  indexing at least 90% as many as the best is chosen (a supercell indexes
  as many, a sublattice half as many), refined against its indexed rlps,
  and Niggli-reduced with gemmi (Grosse-Kunstleve et al. 2004).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from ..lattice.bravais import niggli_reduce as niggli_reduce_cell
from ..models.crystal import cell_from_real_vectors


def refine_vectors(vectors: np.ndarray, rlp: np.ndarray, tolerance: float = 0.15,
                   n_cycles: int = 3) -> np.ndarray:
    """Least-squares improvement of each vector against near-integer projections."""
    out = np.array(vectors, dtype=float)
    for _ in range(n_cycles):
        proj = rlp @ out.T
        near = np.rint(proj)
        ok = (np.abs(proj - near) < tolerance) & (near != 0)
        for j in range(len(out)):
            sel = ok[:, j]
            if np.count_nonzero(sel) >= 6:
                out[j] = np.linalg.lstsq(rlp[sel], near[sel, j], rcond=None)[0]
    return out


def unique_vectors(vectors: np.ndarray, rlp: np.ndarray, max_angle_deg: float = 5.0,
                   tolerance: float = 0.1) -> np.ndarray:
    """Vectors without near-parallel duplicates or near multiples, shortest first.

    Of near-parallel vectors the one whose rlp projections lie closest to
    integers most often wins; among equally good ones the shorter.
    """
    lengths = np.linalg.norm(vectors, axis=1)
    proj = rlp @ vectors.T
    quality = np.mean(np.abs(proj - np.rint(proj)) < tolerance, axis=0)
    order = np.lexsort((lengths, -np.round(quality, 2)))
    kept: list[int] = []
    cos_max = np.cos(np.deg2rad(max_angle_deg))
    for i in order:
        dup = False
        for k in kept:
            if abs(vectors[i] @ vectors[k]) / (lengths[i] * lengths[k]) > cos_max:
                ratio = max(lengths[i], lengths[k]) / min(lengths[i], lengths[k])
                if abs(ratio - round(ratio)) < 0.2:
                    dup = True
                    break
        if not dup:
            kept.append(i)
    kept = np.array(kept, dtype=int)
    return vectors[kept[np.argsort(lengths[kept])]].reshape(-1, 3)


def index_fraction(real: np.ndarray, rlp: np.ndarray, tolerance: float) -> np.ndarray:
    """True for rlps whose fractional indices h = real . rlp are all within tolerance."""
    h = rlp @ np.asarray(real).T
    return np.all(np.abs(h - np.rint(h)) < tolerance, axis=1) & np.any(np.rint(h) != 0, axis=1)


def niggli_reduce(real: np.ndarray) -> np.ndarray:
    """Rows a, b, c of the Niggli-reduced, right-handed basis of the same lattice."""
    real = np.asarray(real, dtype=float)
    if np.linalg.det(real) < 0:
        real = -real
    reduced, R = niggli_reduce_cell(cell_from_real_vectors(real))
    target = np.array(reduced.parameters)
    for M in (R, R.T, np.linalg.inv(R), np.linalg.inv(R).T):
        Mi = np.rint(M)
        if np.abs(M - Mi).max() > 1e-6 or abs(abs(np.linalg.det(Mi)) - 1) > 1e-6:
            continue
        new = Mi @ real
        if np.linalg.det(new) < 0:
            new = -new
        par = np.array(cell_from_real_vectors(new).parameters)
        if np.allclose(par, target, rtol=1e-4, atol=1e-3):
            return new
    raise RuntimeError("Niggli change of basis could not be applied")  # pragma: no cover


def select_basis(vectors: np.ndarray, rlp: np.ndarray, tolerance: float = 0.3,
                 min_volume: float = 25.0, max_rlps: int = 5000, seed: int = 0,
                 target_volume: float | None = None):
    """Best basis (3, 3 rows a, b, c) from candidate vectors, and a table of candidates.

    With ``target_volume`` (A^3, of a known primitive cell) only triples within
    10% of it are considered.

    The candidate table lists, for the best few triples, their volume, the
    number of rlps indexed and the cell.
    """
    if len(rlp) > max_rlps:
        rlp = rlp[np.random.default_rng(seed).choice(len(rlp), max_rlps, replace=False)]
    m = len(vectors)
    if m < 3:
        return None, []
    proj = rlp @ vectors.T
    ok = (np.abs(proj - np.rint(proj)) < tolerance).astype(np.float32)
    triples = np.array(list(combinations(range(m), 3)))
    V = vectors[triples]  # (T, 3, 3)
    vol = np.abs(np.linalg.det(V))
    lens = np.linalg.norm(V, axis=2).prod(axis=1)
    good = (vol >= min_volume) & (vol / lens > 0.2)
    if target_volume:
        good &= np.abs(vol - target_volume) < 0.1 * target_volume
    triples, vol = triples[good], vol[good]
    if not len(triples):
        return None, []
    # rlps that vectors i, j and k all index, for every (i, j, k) at once: the products of
    # pairs against the single vectors, (m^2, N) x (N, m); sums of 0/1 (exact in float32)
    pair = (ok[:, :, None] * ok[:, None, :]).reshape(len(ok), m * m)
    counts = (pair.T @ ok)[triples[:, 0] * m + triples[:, 1], triples[:, 2]]
    best = counts.max()
    eligible = np.flatnonzero(counts >= 0.9 * best)
    order = eligible[np.lexsort((-counts[eligible], np.round(vol[eligible], -1)))]
    table = []
    chosen = None
    for rank, t in enumerate(order[:10]):
        real = vectors[triples[t]]
        sel = index_fraction(real, rlp, tolerance)
        if np.count_nonzero(sel) >= 6:
            h = np.rint(rlp[sel] @ real.T)
            At = np.linalg.lstsq(h, rlp[sel], rcond=None)[0]  # rlp = h A^T
            real = np.linalg.inv(At.T)
        real = niggli_reduce(real)
        n_idx = int(np.count_nonzero(index_fraction(real, rlp, tolerance)))
        cell = cell_from_real_vectors(real)
        table.append({"rank": rank, "volume": float(cell.volume), "n_indexed": n_idx,
                      "fraction_indexed": n_idx / len(rlp), "unit_cell": cell.parameters})
        if chosen is None:
            chosen = real
    return chosen, table
