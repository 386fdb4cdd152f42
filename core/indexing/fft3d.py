"""Candidate real-space basis vectors from a 3D FFT of the rlps.

The rlps (1/A) with d >= d_min are binned on an n^3 grid covering
[-1/d_min, 1/d_min]^3; the power of its Fourier transform peaks at
real-space lattice vectors x (A), since exp(2 pi i x . r) = 1 for every
lattice point r when x is a lattice vector (Campbell 1998, J. Appl. Cryst.
31, 407; as implemented in DIALS, Gildea et al. 2014, Acta Cryst. D70,
2652). Peaks above ``rmsd_cutoff`` times the map RMS are found as
connected regions (face-connected voxels, as ``scipy.ndimage.label``), their weighted centres of mass give the
vectors, and regions smaller than ``peak_volume_cutoff`` of the largest are
dropped.
"""

from __future__ import annotations

import numpy as np
import scipy.fft


def grid_d_min(max_cell: float, n_points: int, d_min_spots: float) -> float:
    """The FFT grid resolution: the real-space map must span 2.5 x max_cell."""
    return max(5.0 * max_cell / n_points, d_min_spots)


def fft3d_peaks(rlp: np.ndarray, d_min: float, n_points: int = 256, rmsd_cutoff: float = 15.0,
                peak_volume_cutoff: float = 0.15, workers: int = -1):
    """Real-space vectors (M, 3) A and their mean peak heights (M,), one of each +/- pair."""
    n = n_points
    spacing = 2.0 / (d_min * n)  # 1/A per grid step
    d = 1.0 / np.linalg.norm(rlp, axis=1)
    r = rlp[d >= d_min]
    idx = np.rint(r / spacing).astype(np.int64) % n
    grid = np.zeros((n, n, n), np.float32)
    np.add.at(grid, (idx[:, 0], idx[:, 1], idx[:, 2]), 1.0)
    half = scipy.fft.rfftn(grid, workers=workers)
    del grid
    power = half.real**2
    power += half.imag**2
    del half
    full = _shifted_full(power, n)
    del power
    rms = float(np.sqrt(np.mean(np.square(full, dtype=np.float64))))
    flat = np.flatnonzero(full > rmsd_cutoff * rms)  # the peak voxels, in raster order
    lab, n_lab = _label_voxels(flat, full.shape)
    if n_lab == 0:
        return np.zeros((0, 3)), np.zeros(0)
    w = full.ravel()[flat].astype(np.float64)
    coords = np.unravel_index(flat, full.shape)
    volume = np.bincount(lab, minlength=n_lab)
    wsum = np.bincount(lab, weights=w, minlength=n_lab)
    com = np.stack([np.bincount(lab, weights=w * c, minlength=n_lab) for c in coords], axis=1)
    com /= wsum[:, None]
    centre = np.ravel_multi_index((n // 2,) * 3, full.shape)  # the origin peak's voxel
    at = np.searchsorted(flat, centre)
    origin = lab[at] if at < len(flat) and flat[at] == centre else -1
    keep = np.arange(n_lab) != origin
    if not keep.any():
        return np.zeros((0, 3)), np.zeros(0)
    keep &= volume >= peak_volume_cutoff * volume[keep].max()
    vectors = (com[keep] - n // 2) / (n * spacing)
    height = wsum[keep] / volume[keep]
    # one of each +/- pair: the first non-negligible component positive
    first = np.where(np.abs(vectors[:, 0]) > 1e-6, vectors[:, 0],
                     np.where(np.abs(vectors[:, 1]) > 1e-6, vectors[:, 1], vectors[:, 2]))
    pos = first > 0
    return vectors[pos], height[pos]


def _shifted_full(power: np.ndarray, n: int) -> np.ndarray:
    """The whole n^3 power spectrum with the origin at the centre (``np.fft.fftshift``),
    from the half that ``rfftn`` gives (last axis 0..n//2): the other half is its mirror
    image, P[i, j, k] = P[-i, -j, -k]. Built by block copies, without the intermediate
    arrays of fancy indexing and of the shift."""
    m = power.shape[2]
    a = n // 2  # fftshift: index i goes to (i + n // 2) % n
    out = np.empty((n, n, n), power.dtype)
    # P[i, j, k] for k >= m is power[-i, -j, n - k]: the half reversed on every axis
    # (last axis from n - m down to 1), whose first two axes then start one further on
    mirror = power[::-1, ::-1, n - m:0:-1]
    for src, shift_ij, k0 in ((power, a, a), (mirror, a + 1, m + a)):
        for s0, d0 in _wrapped(n, shift_ij, n):
            for s1, d1 in _wrapped(n, shift_ij, n):
                for s2, d2 in _wrapped(src.shape[2], k0, n):
                    out[d0, d1, d2] = src[s0, s1, s2]
    return out


def _wrapped(length: int, start: int, n: int):
    """(source, destination) slices that copy ``length`` items to positions
    (start + t) % n: one block, or two when they wrap around."""
    start %= n
    first = min(length, n - start)
    pairs = [(slice(0, first), slice(start, start + first))]
    if length > first:
        pairs.append((slice(first, length), slice(0, length - first)))
    return pairs


def _label_voxels(flat: np.ndarray, shape: tuple) -> tuple[np.ndarray, int]:
    """Connected regions of the voxels at the sorted flat indices ``flat`` of a grid of
    ``shape`` (face neighbours, no wrap-around): a region number per voxel (0-based,
    numbered in the raster order of each region's first voxel, as ``scipy.ndimage.label``
    numbers them) and the number of regions. Works on the few peak voxels only, not the
    whole grid: each voxel takes the smallest position of its neighbours until none
    changes (with pointer jumping)."""
    n_vox = len(flat)
    if n_vox == 0:
        return np.zeros(0, np.int64), 0
    strides = np.cumprod((1,) + tuple(shape[::-1]))[:-1][::-1]
    coords = np.unravel_index(flat, shape)
    edges_u, edges_v = [], []
    for axis, stride in enumerate(strides):
        has = coords[axis] < shape[axis] - 1
        cand = flat[has] + stride
        pos = np.minimum(np.searchsorted(flat, cand), n_vox - 1)
        hit = flat[pos] == cand
        edges_u.append(np.flatnonzero(has)[hit])
        edges_v.append(pos[hit])
    u, v = np.concatenate(edges_u), np.concatenate(edges_v)
    root = np.arange(n_vox)
    while True:
        new = root.copy()
        np.minimum.at(new, u, root[v])
        np.minimum.at(new, v, root[u])
        new = new[new]
        if np.array_equal(new, root):
            break
        root = new
    firsts, lab = np.unique(root, return_inverse=True)
    return lab.astype(np.int64), len(firsts)
