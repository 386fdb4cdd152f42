"""Connected components of strong pixels, in 3D across consecutive images.

As DIALS's pixel-list labeller: pixels are neighbours when they share a
face, i.e. differ by one in exactly one of x, y or frame z (6-connectivity
in 3D; 4-connectivity within one image). For stills (``twod=True``) pixels
on different images are never joined. Spots are numbered in order of their
first pixel in (z, y, x) raster order.

Union-find (Tarjan (1975) J. ACM 22, 215) in a numba kernel: the pixels
come sorted by their raster key, so each kind of neighbour (x+1, y+1,
z+1) is found by one merging walk of two pointers along the sorted keys.
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
def _label(key, x, y, nx, ny, twod, parent, labels):
    """Fills ``labels``, the label of each pixel: each pixel joined to its x+1, y+1
    and (unless twod) z+1 neighbours in the union-find forest ``parent`` (the
    caller's 0..n-1), then the components numbered by their first pixel (one
    kernel: each kernel costs compilation time on the first run; and no
    allocation in it, which would compile numpy's constructor with it)."""
    n = len(key)
    steps = (1, nx, nx * ny)
    for k in range(2 if twod else 3):
        step = steps[k]
        b = 0
        for a in range(n):
            if (k == 0 and x[a] == nx - 1) or (k == 1 and y[a] == ny - 1):
                continue
            target = key[a] + step
            while b < n and key[b] < target:
                b += 1
            if b == n:
                break
            if key[b] == target:
                ra, rb = _find(parent, a), _find(parent, b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    n_labels = 0
    for a in range(n):
        r = _find(parent, a)
        if r == a:  # a root is the first pixel of its component (the smallest index)
            labels[a] = n_labels
            n_labels += 1
        else:
            labels[a] = labels[r]


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
           np.arange(len(key), dtype=np.int64), labels)
    return labels
