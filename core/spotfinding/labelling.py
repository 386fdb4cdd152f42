"""Connected components of strong pixels, in 3D across consecutive images.

As DIALS's pixel-list labeller: pixels are neighbours when they share a
face, i.e. differ by one in exactly one of x, y or frame z (6-connectivity
in 3D; 4-connectivity within one image). For stills (``twod=True``) pixels
on different images are never joined. Spots are numbered in order of their
first pixel in (z, y, x) raster order.

Union-find (Tarjan (1975) J. ACM 22, 215) in a numba kernel over runs of
pixels consecutive along x (the run-length labelling of Rosenfeld & Pfaltz
(1966) J. ACM 13, 471): the pixels come sorted by their raster key, so the
runs are found in one pass and each kind of neighbour (y+1, z+1) by one
merging walk of two pointers along the runs; a spot a few pixels wide
takes a few unions per row instead of a few per pixel.
"""

from __future__ import annotations

import numpy as np

from gonio.core.jit import INTERNAL, njit


@njit(**INTERNAL)
def _find(parent, a):
    root = a
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:  # path compression
        parent[a], a = root, parent[a]
    return root


@njit
def _label(key, x, y, nx, ny, twod, parent, start, labels):
    """Fills ``labels``, the label of each pixel, through runs: stretches of
    pixels consecutive along x in one row (``start``: each run's first pixel,
    n + 1 entries from the caller). Each run is joined, in the union-find
    forest ``parent``, to the runs of the next row (y+1) and (unless twod) of
    the same row on the next image (z+1) whose pixels touch its own: one
    merging walk of two pointers along the runs per kind of neighbour. The
    components are numbered by their first run, which holds their first pixel.
    ``parent`` (n entries) is set up here for the runs only.
    One kernel, allocating nothing (each kernel costs compilation time on the
    first run, and an allocation would compile numpy's constructor with it)."""
    n = len(key)
    n_runs = 0
    for a in range(n):
        if a == 0 or key[a] != key[a - 1] + 1 or x[a] == 0:
            start[n_runs] = a
            n_runs += 1
        labels[a] = n_runs - 1
    start[n_runs] = n
    for r in range(n_runs):
        parent[r] = r
    steps = (nx, nx * ny)
    for k in range(1 if twod else 2):
        step = steps[k]
        b = 0
        for r in range(n_runs):
            a0, a1 = start[r], start[r + 1] - 1
            if k == 0 and y[a0] == ny - 1:
                continue
            lo, hi = key[a0] + step, key[a1] + step  # the keys of the neighbours
            while b < n_runs and key[start[b + 1] - 1] < lo:
                b += 1
            if b == n_runs:
                break
            t = b
            while t < n_runs and key[start[t]] <= hi:
                ra, rb = _find(parent, r), _find(parent, t)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                t += 1
    n_labels = 0
    for r in range(n_runs):  # start[r] is not needed any more: it becomes the run's label
        root = _find(parent, r)
        if root == r:  # a root is the first run of its component (the smallest index)
            start[r] = n_labels
            n_labels += 1
        else:
            start[r] = start[root]
    for a in range(n):
        labels[a] = start[labels[a]]


def label_pixels(z: np.ndarray, y: np.ndarray, x: np.ndarray, shape: tuple[int, int],
                 twod: bool = False) -> np.ndarray:
    """Spot label (0..n-1) of each strong pixel.

    ``z, y, x`` are int arrays sorted in (z, y, x) raster order with no
    duplicates; ``shape`` is the image (ny, nx).
    """
    if len(x) == 0:
        return np.zeros(0, np.int64)
    ny, nx = shape
    key = (np.asarray(z, np.int64) * ny + y) * nx + x
    labels = np.empty(len(key), np.int64)
    _label(key, np.asarray(x, np.int64), np.asarray(y, np.int64), int(nx), int(ny), bool(twod),
           np.empty(len(key), np.int64), np.empty(len(key) + 1, np.int64), labels)
    return labels
