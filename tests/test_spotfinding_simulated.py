"""Spot finding on a simulated sweep against its truth (issue: >= 99% of the reflections with
true I/sigma > 10 found, centroids within 0.2 px / 0.15 image RMS, < 1% false spots)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from gonio.core.formats.reader import InMemoryReader
from gonio.core.simulate import simulate
from gonio.core.simulate.params import SimulationParams
from gonio.core.spotfinding import SpotFinderParams, find_spots


@pytest.fixture(scope="module")
def sweep():
    p = SimulationParams.from_preset("lysozyme", n_images=24, image_size=(640, 640), d_min=2.2,
                                     output=None, seed=11)
    return simulate(p)


def _true_isigma(truth, background_per_px: float) -> np.ndarray:
    """I/sigma of each reflection's recorded counts against the Poisson noise of the counts
    and of the background under a 3-sigma ellipse of its spot, over its images."""
    sig = truth["sigma.px"]
    area = np.pi * 9 * sig[:, 0] * sig[:, 1] * np.maximum(truth["sigma_z"], 1.0) * 2
    rec = truth["intensity.recorded"]
    return rec / np.sqrt(rec + background_per_px * area)


def test_found_spots_match_the_truth(sweep):
    e = sweep.experiments[0]
    frames = [tuple(img) for img in sweep.images]
    strong, result = find_spots(sweep.header_experiments, [InMemoryReader(frames)],
                                SpotFinderParams(nproc=1))
    truth = sweep.truth
    truth = truth.select(np.isfinite(truth["xyztrue.px"]).all(axis=1))
    z = truth["xyztrue.px"][:, 2]
    n = e.scan.num_images
    xy = truth["xyztrue.px"][:, :2]
    nx, ny = e.detector[0].image_size
    valid = sweep.valid[0]
    inside = (z > 1.5) & (z < n - 1.5) & (xy[:, 0] > 4) & (xy[:, 0] < nx - 4) & \
        (xy[:, 1] > 4) & (xy[:, 1] < ny - 4)
    ix, iy = xy[:, 0].astype(int).clip(0, nx - 1), xy[:, 1].astype(int).clip(0, ny - 1)
    # away from module gaps (a spot cut by a gap is not a clean test of centroids)
    from scipy.ndimage import binary_erosion

    clean = binary_erosion(valid, iterations=4)
    inside &= clean[iy, ix]
    isig = _true_isigma(truth, sweep.params.background + sweep.params.solvent_ring)
    strong_truth = inside & (isig > 10)
    assert strong_truth.sum() > 100

    obs = strong["xyzobs.px.value"]
    tree = cKDTree(obs * [1, 1, 4])  # 1 image ~ 4 px in matching distance
    d, j = tree.query(truth["xyztrue.px"][strong_truth] * [1, 1, 4])
    found = d < 3.0
    assert found.mean() >= 0.99, f"found {found.mean():.3f} of the strong reflections"

    dxyz = obs[j[found]] - truth["xyztrue.px"][strong_truth][found]
    rms = np.sqrt(np.mean(dxyz**2, axis=0))
    assert rms[0] < 0.2 and rms[1] < 0.2 and rms[2] < 0.15, rms

    # false spots: found spots with no recorded reflection near them
    tree_t = cKDTree(truth["xyztrue.px"] * [1, 1, 4])
    d_back, _ = tree_t.query(obs * [1, 1, 4])
    assert (d_back > 6.0).mean() < 0.01
