"""Unit directions from the sample to every pixel centre of a panel, kept per panel geometry.

Integration maps each shoebox pixel into the reflection's profile frame through the
pixel's direction (:mod:`.kernels`). Computing them (panel px -> mm with the parallax
correction, mm -> laboratory frame, normalised) costs ~0.2-0.35 s per 1M pixels of numpy
work that holds the GIL, on the serial path of every ``integrate``; a session that
integrates again with other parameters (or another sweep on the same detector) reuses
them. Like the resolution maps of spot finding (:mod:`gonio.core.spotfinding.masks`), the
latest geometries are kept up to :data:`DIRECTIONS_BYTES` in all, read-only.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np

from ..models.detector import Panel

_DIRS: OrderedDict[str, np.ndarray] = OrderedDict()
DIRECTIONS_BYTES = 256 * 2**20


def pixel_directions(panel: Panel) -> np.ndarray:
    """(ny * nx, 3) float32 unit vectors from the sample to the pixel centres, row by row
    (slow, then fast), parallax included as :meth:`Panel.pixel_to_millimeter` applies it.
    Computed once per panel geometry and kept (read-only)."""
    key = json.dumps(panel.to_dict(), sort_keys=True)
    d = _DIRS.get(key)
    if d is None:
        d = _directions(panel)
        d.setflags(write=False)
        _DIRS[key] = d
        while sum(a.nbytes for a in _DIRS.values()) > DIRECTIONS_BYTES and len(_DIRS) > 1:
            _DIRS.popitem(last=False)
    _DIRS.move_to_end(key)
    return d


def _directions(panel: Panel) -> np.ndarray:
    nx, ny = panel.image_size
    jj, ii = np.mgrid[0:ny, 0:nx]
    xy_px = np.column_stack([ii.ravel() + 0.5, jj.ravel() + 0.5])
    lab = panel.lab_coord(panel.pixel_to_millimeter(xy_px))
    return (lab / np.linalg.norm(lab, axis=1)[:, None]).astype(np.float32)
