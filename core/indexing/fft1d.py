"""Candidate real-space vectors from 1D FFTs of rlp projections.

Steller, Bolotovsky & Rossmann (1997), J. Appl. Cryst. 30, 1036, as
``indexing.method=fft1d`` of dials.index: for each direction u over a
hemisphere the rlps' projections u . r are histogrammed and Fourier
transformed; a real-space lattice vector of length L along u gives a peak
at frequency L. The best directions (local maxima) are refined locally and
their vectors L u go to the same basis selection as the 3D FFT.
"""

from __future__ import annotations

import numpy as np

from .directions import hemisphere, local_maxima, periodicity, refine_direction

N_BINS = 256


def fft1d_vectors(rlp: np.ndarray, max_cell: float, d_min: float,
                  characteristic_grid: float | None = None, n_vectors: int = 30,
                  max_spots: int = 3000) -> np.ndarray:
    """Candidate vectors (M, 3) A, about the ``n_vectors`` strongest directions."""
    step = characteristic_grid or 0.02
    # directions step radians apart keep projections of spots to d_search within
    # a quarter period for vectors of length max_cell / 2
    d_all = 1.0 / np.linalg.norm(rlp, axis=1)
    d_search = max(d_min, 2.0 * max_cell * step)
    sel = d_all >= d_search
    if np.count_nonzero(sel) < 20:
        sel = d_all >= np.sort(d_all)[::-1][min(len(d_all) - 1, 99)]
    r = rlp[sel]
    if len(r) > max_spots:
        r = r[np.random.default_rng(0).choice(len(r), max_spots, replace=False)]
    pmax = 1.0 / d_all[sel].min()
    dirs = hemisphere(step)
    width = 2.0 * pmax / N_BINS
    spectrum = np.zeros((len(dirs), N_BINS // 2 + 1))
    for s in range(0, len(dirs), 1024):
        p = dirs[s:s + 1024] @ r.T
        idx = np.clip(((p + pmax) / width).astype(np.int64), 0, N_BINS - 1)
        hist = np.zeros((len(p), N_BINS))
        np.add.at(hist, (np.repeat(np.arange(len(p)), r.shape[0]), idx.ravel()), 1.0)
        spectrum[s:s + 1024] = np.abs(np.fft.rfft(hist, axis=1))
    lengths = np.arange(N_BINS // 2 + 1) / (N_BINS * width)
    ok = (lengths >= 3.0) & (lengths <= max_cell)
    k = np.flatnonzero(ok)[np.argmax(spectrum[:, ok], axis=1)]
    score = spectrum[np.arange(len(dirs)), k] / len(r)
    best = local_maxima(dirs, score, 3 * step, n_vectors)
    out = []
    for i in best:
        length = lengths[k[i]]
        # the FFT length is coarse: pick the best nearby length, then the direction
        trial = length + np.linspace(-1.0, 1.0, 41) / (N_BINS * width)
        trial = trial[trial > 0]
        scores = [periodicity(r, dirs[i:i + 1], t)[0] for t in trial]
        length = trial[int(np.argmax(scores))]
        u = refine_direction(r, dirs[i], length, step)
        out.append(length * u)
    return np.array(out).reshape(-1, 3)
