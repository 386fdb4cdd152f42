"""What depends only on the detector and the beam is computed once per geometry."""

from __future__ import annotations

import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.detector import Panel
from gonio.core.spotfinding import masks


def test_resolution_map_is_kept_per_geometry_and_beam():
    panel = Panel(image_size=(300, 200), pixel_size=(0.172, 0.172),
                  origin=np.array([-25.0, 17.0, -150.0]))
    beam = Beam(wavelength=0.9795)
    d = masks.resolution_map(panel, beam)
    assert masks.resolution_map(panel, beam) is d  # kept: no second computation
    assert not d.flags.writeable
    np.testing.assert_array_equal(d, masks._resolution_map(panel, beam))
    # Bragg's law at the pixel holding the direct beam's neighbour: d = lambda / (2 sin theta)
    x, y = 100, 50
    lab = panel.origin + (x + 0.5) * 0.172 * panel.fast_axis + (y + 0.5) * 0.172 * panel.slow_axis
    two_theta = np.arccos(-lab[2] / np.linalg.norm(lab))
    assert np.isclose(d[y, x], 0.9795 / (2 * np.sin(two_theta / 2)), rtol=1e-9)
    # another wavelength, another geometry: other maps
    d2 = masks.resolution_map(panel, Beam(wavelength=1.2))
    assert d2 is not d and np.allclose(d2, d * 1.2 / 0.9795)
    moved = panel.replace(origin=np.array([-25.0, 17.0, -200.0]))
    assert masks.resolution_map(moved, beam) is not d


def test_kept_maps_stay_within_their_memory_bound(monkeypatch):
    from gonio.core.geometry.kept_arrays import KeptArrays

    panel = Panel(image_size=(100, 100))
    one = 100 * 100 * 8
    monkeypatch.setattr(masks, "_MAPS", KeptArrays(2 * one))
    maps = [masks.resolution_map(panel, Beam(wavelength=w)) for w in (1.0, 1.1, 1.2)]
    assert masks.resolution_map(panel, Beam(wavelength=1.2)) is maps[2]  # kept
    assert masks.resolution_map(panel, Beam(wavelength=1.0)) is not maps[0]  # dropped
