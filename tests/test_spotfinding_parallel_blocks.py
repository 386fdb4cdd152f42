"""How findspots shares images between threads, and the per-image spot counts it reports:
the same strong table with one or two threads, whatever the blocks."""

import numpy as np
import pytest

from gonio.core.formats.reader import InMemoryReader
from gonio.core.spotfinding import SpotFinderParams, find_spots
from gonio.core.spotfinding.finder import _thread_blocks
from tests.test_spotfinding_spots import simulate_sweep, sweep_experiment


@pytest.mark.parametrize("n, nproc", [(1, 2), (3, 2), (4, 2), (11, 2), (90, 2), (90, 3)])
def test_threads_take_pairs_then_single_images_at_the_end(n, nproc):
    indices = list(range(5, 5 + n))
    blocks = _thread_blocks(indices, nproc)
    assert [int(i) for b in blocks for i in b] == indices  # each once, in order
    tail = min(n, 2 * nproc)
    assert all(len(b) == 1 for b in blocks[len(blocks) - tail:])
    assert all(len(b) in (2, 3) for b in blocks[:len(blocks) - tail])  # 3: an odd head


def test_one_or_two_threads_give_the_same_table_and_counts_per_image():
    rng = np.random.default_rng(21)
    frames, truth, _ = simulate_sweep(rng, n_frames=9, n_spots=30)
    expt = sweep_experiment(frames[0].shape, len(frames), first=4)
    tables = []
    for nproc in (1, 2):
        params = SpotFinderParams(nproc=nproc, scan_range=((4, 6), (9, 12)))
        strong, result = find_spots([expt], [InMemoryReader(frames)], params)
        tables.append((strong, result))
    (one, r1), (two, r2) = tables
    assert len(one) > 10 and sorted(one.keys()) == sorted(two.keys())
    for key in one.keys():
        if key == "shoebox":
            for part in ("bbox", "data", "mask", "offset"):
                assert np.array_equal(getattr(one[key], part), getattr(two[key], part))
        else:
            assert np.array_equal(one[key], two[key])
    # the spots counted on each searched image are those whose centroid lies on it
    image = np.floor(one["xyzobs.px.value"][:, 2]).astype(int) + 1  # frame z in [i-1, i)
    assert list(r1.image_numbers[0]) == [4, 5, 6, 9, 10, 11, 12]
    expected = [(image == i).sum() for i in r1.image_numbers[0]]
    assert list(r1.spots_per_image[0]) == expected == list(r2.spots_per_image[0])
    assert r1.spots_per_image[0].sum() == len(one)
