"""The 3D FFT lattice search (Campbell 1998; DIALS's fft3d): the full power spectrum from
rfftn's half, the peak regions, and the lattice vectors they give."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from gonio.core.indexing.fft3d import _label_voxels, _shifted_full, fft3d_peaks


@pytest.mark.parametrize("n", [8, 9, 16, 33])
def test_the_full_centred_spectrum_is_numpys(n):
    """Built from the half spectrum by copies: exactly np.fft.fftshift of |FFT|^2 (even
    and odd grids)."""
    rng = np.random.default_rng(n)
    grid = rng.random((n, n, n)).astype(np.float32)
    half = scipy.fft.rfftn(grid)
    power = (half.real**2 + half.imag**2).astype(np.float32)
    full = np.abs(np.fft.fftn(grid.astype(np.float64))) ** 2
    got = _shifted_full(power, n)
    assert np.allclose(got, np.fft.fftshift(full), rtol=1e-4, atol=1e-3 * full.max())
    # and the same numbers as the half spectrum's own, mirrored: P[i, j, k] = P[-i, -j, -k]
    unshifted = np.fft.ifftshift(got)
    m = n // 2 + 1
    assert np.array_equal(unshifted[:, :, :m], power)
    idx = (-np.arange(n)) % n
    k = np.arange(m, n)
    assert np.array_equal(unshifted[:, :, m:], power[idx][:, idx][:, :, n - k])


def test_peak_regions_are_scipys_labels():
    """Face-connected regions numbered as scipy.ndimage.label numbers them, on masks from
    sparse to half full, with regions touching the grid's faces."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        shape = (int(rng.integers(4, 15)), int(rng.integers(4, 15)), int(rng.integers(4, 15)))
        mask = rng.random(shape) < rng.uniform(0.02, 0.5)
        ref, n_ref = ndimage.label(mask)
        flat = np.flatnonzero(mask)
        lab, n_lab = _label_voxels(flat, shape)
        assert n_lab == n_ref and np.array_equal(lab, ref.ravel()[flat] - 1), trial
    assert _label_voxels(np.zeros(0, np.int64), (4, 4, 4))[1] == 0


def test_the_lattice_vectors_of_a_known_cell_are_found():
    """The rlps of an orthorhombic lattice (a, b, c = 30, 45, 60 A) up to 2.5 A: each cell
    edge is found along its axis to 0.05 A (the real-space grid step is 1.5 A: the
    weighted centres of the peak regions place it)."""
    cell = np.array([30.0, 45.0, 60.0])
    rng = np.random.default_rng(1)
    hkl = np.stack(np.meshgrid(*[np.arange(-25, 26)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rlp = hkl / cell
    d = 1 / np.maximum(np.linalg.norm(rlp, axis=1), 1e-9)
    rlp = rlp[(d >= 2.5) & (d < 100) & (rng.random(len(d)) < 0.3)]  # a partial sweep
    vectors, heights = fft3d_peaks(rlp, 3.0, 128)
    assert len(vectors) == len(heights) > 3
    for axis, edge in enumerate(cell):
        along = np.abs(vectors[:, axis]) > 0.99 * np.linalg.norm(vectors, axis=1)
        assert np.min(np.abs(np.abs(vectors[along, axis]) - edge)) < 0.05, edge
