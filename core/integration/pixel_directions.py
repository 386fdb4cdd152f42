"""Unit directions from the sample to every pixel centre of a panel, kept per panel geometry.

Integration maps each shoebox pixel into the reflection's profile frame through the
pixel's direction (:mod:`.kernels`). Computing them (panel px -> mm with the parallax
correction, mm -> laboratory frame, normalised) costs ~0.2-0.35 s per 1M pixels of numpy
work that holds the GIL, on the serial path of every ``integrate``; a session that
integrates again with other parameters (or another sweep on the same detector) reuses
them. Like the resolution maps of spot finding (:mod:`gonio.core.spotfinding.masks`), the
latest geometries are kept up to 256 MiB in all, read-only
(:class:`gonio.core.geometry.kept_arrays.KeptArrays`).
"""

from __future__ import annotations

import numpy as np

from ..geometry.kept_arrays import KeptArrays
from ..models.detector import Panel

_DIRS = KeptArrays(256 * 2**20)


def pixel_directions(panel: Panel) -> np.ndarray:
    """(ny * nx, 3) float32 unit vectors from the sample to the pixel centres, row by row
    (slow, then fast), parallax included as :meth:`Panel.pixel_to_millimeter` applies it.
    Computed once per panel geometry and kept (read-only)."""
    return _DIRS.get(panel.to_dict(), lambda: _directions(panel))


def _directions(panel: Panel) -> np.ndarray:
    nx, ny = panel.image_size
    jj, ii = np.mgrid[0:ny, 0:nx]
    xy_px = np.column_stack([ii.ravel() + 0.5, jj.ravel() + 0.5])
    lab = panel.lab_coord(panel.pixel_to_millimeter(xy_px))
    return (lab / np.linalg.norm(lab, axis=1)[:, None]).astype(np.float32)
