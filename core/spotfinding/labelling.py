"""Connected components of strong pixels, in 3D across consecutive images.

As DIALS's pixel-list labeller: pixels are neighbours when they share a
face, i.e. differ by one in exactly one of x, y or frame z (6-connectivity
in 3D; 4-connectivity within one image). For stills (``twod=True``) pixels
on different images are never joined. Spots are numbered in order of their
first pixel in (z, y, x) raster order.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def label_pixels(z: np.ndarray, y: np.ndarray, x: np.ndarray, shape: tuple[int, int],
                 twod: bool = False) -> np.ndarray:
    """Spot label (0..n-1) of each strong pixel.

    ``z, y, x`` are int arrays sorted in (z, y, x) raster order with no
    duplicates; ``shape`` is the image (ny, nx).
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    ny, nx = shape
    key = (z.astype(np.int64) * ny + y) * nx + x
    rows, cols = [], []
    links = [(1, x < nx - 1), (nx, y < ny - 1)]
    if not twod:
        links.append((nx * ny, np.ones(n, bool)))
    for step, allowed in links:
        target = key + step
        idx = np.searchsorted(key, target)
        idx[idx == n] = n - 1
        hit = allowed & (key[idx] == target)
        rows.append(np.flatnonzero(hit))
        cols.append(idx[hit])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)).tocsr()
    n_labels, labels = connected_components(graph, directed=False)
    # number spots by their first pixel (scipy's search from pixel 0 upwards already does)
    first = np.full(n_labels, n, np.int64)
    np.minimum.at(first, labels, np.arange(n))
    if np.all(first[1:] > first[:-1]):
        return labels.astype(np.int64)
    order = np.empty(n_labels, np.int64)
    order[np.argsort(first)] = np.arange(n_labels)
    return order[labels]
