"""Index assignment: Miller indices for rlps given one or more crystal models.

``simple``: h = A^-1 r rounded to the nearest integers, accepted when every
component lies within ``hkl_tolerance`` of them (DIALS default 0.3); with
several lattices a spot goes to the lattice with the smallest deviation.
``local`` (Gildea et al. 2014, Acta Cryst. D70, 2652, after Steller et al.
1997): indices are propagated through a minimum spanning tree of the rlps'
nearest neighbours in reciprocal space, each spot's index being its
neighbour's plus the rounded index difference, so that a model too poor
for global rounding at high resolution still indexes consistently.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
from scipy.spatial import cKDTree


def assign_simple(rlp: np.ndarray, A_list: list[np.ndarray], tolerance: float = 0.3):
    """(miller_index (N, 3) int32, lattice (N,) int, -1 if unindexed)."""
    n = len(rlp)
    best = np.full(n, np.inf)
    hkl = np.zeros((n, 3), np.int32)
    lattice = np.full(n, -1, np.int64)
    for k, A in enumerate(A_list):
        h = rlp @ np.linalg.inv(A).T
        hi = np.rint(h)
        dev = np.abs(h - hi).max(axis=1)
        ok = (dev < tolerance) & np.any(hi != 0, axis=1) & (dev < best)
        best[ok] = dev[ok]
        hkl[ok] = hi[ok].astype(np.int32)
        lattice[ok] = k
    return hkl, lattice


def assign_local(rlp: np.ndarray, A_list: list[np.ndarray], tolerance: float = 0.3,
                 epsilon: float = 0.05, delta: int = 8, nearest_neighbours: int = 20):
    """Local index assignment along a minimum spanning tree (one tree per lattice).

    Edges join each rlp to its ``nearest_neighbours``; an edge's weight is
    its index-difference error, and edges whose rounded index difference
    exceeds ``delta`` are dropped. Starting from the spot with the smallest
    global-rounding error, each spot takes its parent's index plus the
    rounded difference; a spot is indexed when the tree path from the root
    has every index difference within ``tolerance`` of an integer.
    """
    n = len(rlp)
    hkl = np.zeros((n, 3), np.int32)
    lattice = np.full(n, -1, np.int64)
    best = np.full(n, np.inf)
    k_nn = min(nearest_neighbours + 1, n)
    if n < 2:
        return assign_simple(rlp, A_list, tolerance)
    dist, nbr = cKDTree(rlp).query(rlp, k=k_nn)
    for k, A in enumerate(A_list):
        h = rlp @ np.linalg.inv(A).T
        i = np.repeat(np.arange(n), k_nn - 1)
        j = nbr[:, 1:].ravel()
        dh = h[j] - h[i]
        err = np.abs(dh - np.rint(dh)).max(axis=1)
        ok = (np.abs(np.rint(dh)).max(axis=1) <= delta) & (i != j)
        w = err[ok] + epsilon
        g = coo_matrix((w, (i[ok], j[ok])), shape=(n, n)).tocsr()
        tree = minimum_spanning_tree(g + g.T)
        tree = tree + tree.T
        dev_global = np.abs(h - np.rint(h)).max(axis=1)
        visited = np.zeros(n, bool)
        accepted = np.zeros(n, bool)
        local = np.zeros((n, 3))
        edge_err = np.zeros(n)
        for root in np.argsort(dev_global):
            if visited[root]:
                continue
            order, pred = breadth_first_order(tree, root, directed=False)
            visited[order] = True
            local[root] = np.rint(h[root])
            accepted[root] = dev_global[root] < tolerance
            edge_err[root] = dev_global[root]
            for node in order[1:]:
                p = pred[node]
                step = h[node] - h[p]
                local[node] = local[p] + np.rint(step)
                edge_err[node] = np.abs(step - np.rint(step)).max()
                accepted[node] = accepted[p] and edge_err[node] < tolerance
        good = accepted & np.any(local != 0, axis=1) & (edge_err < best)
        best[good] = edge_err[good]
        hkl[good] = local[good].astype(np.int32)
        lattice[good] = k
    return hkl, lattice
