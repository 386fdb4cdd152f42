"""Spot labelling (union-find over sorted pixel keys) vs scipy.ndimage.label."""

import numpy as np
import pytest
from scipy import ndimage

from gonio.core.spotfinding.labelling import label_pixels


@pytest.mark.parametrize("twod", [False, True])
def test_labels_equal_ndimage_face_connectivity(twod):
    rng = np.random.default_rng(7)
    vol = rng.random((4, 37, 53)) < 0.35  # dense enough for long, branching components
    z, y, x = np.nonzero(vol)  # (z, y, x) raster order
    ours = label_pixels(z, y, x, vol.shape[1:], twod=twod)
    structure = ndimage.generate_binary_structure(3, 1)
    if twod:
        structure[0] = structure[2] = False  # no links between images
    ref, n = ndimage.label(vol, structure)
    assert n > 100
    # ndimage numbers components by first pixel in raster order, as label_pixels does
    assert np.array_equal(ours, ref[z, y, x] - 1)


def test_no_links_across_row_ends_or_empty_input():
    # (y=0, x=nx-1) and (y=1, x=0) are consecutive keys but not neighbours
    lab = label_pixels(np.zeros(2, np.int64), np.array([0, 1]), np.array([4, 0]), (3, 5))
    assert lab.tolist() == [0, 1]
    assert len(label_pixels(*(np.zeros(0, np.int64),) * 3, (3, 5))) == 0
