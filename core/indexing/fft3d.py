"""Candidate real-space basis vectors from a 3D FFT of the rlps.

The rlps (1/A) with d >= d_min are binned on an n^3 grid covering
[-1/d_min, 1/d_min]^3; the power of its Fourier transform peaks at
real-space lattice vectors x (A), since exp(2 pi i x . r) = 1 for every
lattice point r when x is a lattice vector (Campbell 1998, J. Appl. Cryst.
31, 407; as implemented in DIALS, Gildea et al. 2014, Acta Cryst. D70,
2652). Peaks above ``rmsd_cutoff`` times the map RMS are found as
connected regions (a flood fill), their weighted centres of mass give the
vectors, and regions smaller than ``peak_volume_cutoff`` of the largest are
dropped.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage


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
    power = (half.real**2 + half.imag**2).astype(np.float32)
    del half
    full = np.empty((n, n, n), np.float32)
    m = n // 2 + 1
    full[:, :, :m] = power
    rev = (-np.arange(n)) % n
    full[:, :, m:] = power[rev][:, rev][:, :, n - np.arange(m, n)]
    del power
    full = np.fft.fftshift(full)
    rms = float(np.sqrt(np.mean(full.astype(np.float64) ** 2)))
    mask = full > rmsd_cutoff * rms
    labels, n_lab = ndimage.label(mask)
    if n_lab == 0:
        return np.zeros((0, 3)), np.zeros(0)
    coords = np.nonzero(labels)
    lab = labels[coords] - 1
    w = full[coords].astype(np.float64)
    volume = np.bincount(lab, minlength=n_lab)
    wsum = np.bincount(lab, weights=w, minlength=n_lab)
    com = np.stack([np.bincount(lab, weights=w * c, minlength=n_lab) for c in coords], axis=1)
    com /= wsum[:, None]
    origin = labels[n // 2, n // 2, n // 2] - 1
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
