"""The serial part of spot finding (labelling by runs, shoeboxes of the kept spots only,
one table as it is) and the CPU timings that give findspots' critical path."""

import numpy as np
import pytest
from scipy import ndimage

from gonio.core.formats.reader import InMemoryReader
from gonio.core.spotfinding import SpotFinderParams, find_spots
from gonio.core.spotfinding.labelling import label_pixels
from gonio.core.spotfinding.spots import SpotPixels, make_shoeboxes, measure_spots
from tests.test_spotfinding_spots import simulate_sweep, sweep_experiment


@pytest.mark.parametrize("twod", [False, True])
def test_runs_of_blocks_label_as_ndimage(twod):
    # rectangles and their unions: long runs along x, one run touching several runs
    # of the next row (U and comb shapes), runs ending at the last column
    rng = np.random.default_rng(3)
    vol = np.zeros((5, 40, 31), bool)
    for _ in range(60):
        z, y, x = rng.integers(0, 5), rng.integers(0, 38), rng.integers(0, 29)
        vol[z, y:y + rng.integers(1, 6), x:x + rng.integers(1, 12)] = True
    vol[:, :, 30] |= rng.random((5, 40)) < 0.5
    vol[2, 10:20, 3:20:3] = True  # a comb: teeth joined by the bar below
    vol[2, 20, 3:20] = True
    z, y, x = np.nonzero(vol)
    structure = ndimage.generate_binary_structure(3, 1)
    if twod:
        structure[0] = structure[2] = False
    ref, n = ndimage.label(vol, structure)
    assert n > 20
    assert np.array_equal(label_pixels(z, y, x, vol.shape[1:], twod=twod), ref[z, y, x] - 1)


def test_shoeboxes_of_the_kept_spots_equal_those_of_the_selected_pixels():
    rng = np.random.default_rng(5)
    vol = rng.random((3, 30, 40)) < 0.3
    z, y, x = np.nonzero(vol)
    value = rng.poisson(20.0, len(z)).astype(np.float64)
    pix = SpotPixels(z, y, x, value, label_pixels(z, y, x, vol.shape[1:]))
    bbox = measure_spots(pix).bbox
    keep = rng.random(pix.n_spots) < 0.6
    keep[0] = keep[-1] = False
    ours = make_shoeboxes(pix, bbox, 2, keep)
    assert ours == make_shoeboxes(pix.select_spots(keep), bbox[keep], 2)
    assert len(ours) == keep.sum() and (ours.mask[ours.data > 0] == 5).all()
    assert make_shoeboxes(pix, bbox, 2, np.ones(pix.n_spots, bool)) == make_shoeboxes(pix, bbox, 2)


@pytest.mark.parametrize("nproc", [1, 2])
def test_cpu_timings_give_the_critical_path(nproc):
    frames, _, _ = simulate_sweep(np.random.default_rng(7))
    expt = sweep_experiment(frames[0].shape, len(frames))
    strong, result = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=nproc))
    t = result.timings
    workers = t["cpu.read"] + t["cpu.threshold"]
    assert len(strong) > 0 and t["cpu.threshold"] > 0 and t["cpu.serial"] > 0
    if nproc == 1:  # one worker, in the calling thread
        assert t["cpu.parallel_span"] == pytest.approx(workers)
    else:  # the busiest of two workers did at least half and at most all of the work
        assert workers / 2 - 1e-9 <= t["cpu.parallel_span"] <= workers + 1e-9
