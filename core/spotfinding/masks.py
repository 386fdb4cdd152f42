"""Static pixel masks for spot finding (True = pixel may be used).

What DIALS's ``dials.util.masking.generate_mask`` applies before
thresholding, per panel: the panel's own untrusted rectangles
(``Panel.mask``, (f0, s0, f1, s1) px, end exclusive), a border, untrusted
rectangles (x0, x1, y0, y1; end exclusive), circles (xc, yc, r; pixel
centres within r) and polygons (pixel centres inside, even-odd rule),
resolution limits d_min / d_max, untrusted resolution ranges and ice rings
(pixels whose d-spacing at the pixel centre is <= d_min, >= d_max or inside
a range are masked; ice ring ranges are +-width/2 in 1/d^2 around each
reflection of hexagonal ice, P 63/m m c, a = 4.498, c = 7.338 A, out to the
panel's corner resolution), and a user mask. The per-image trusted-range
test is done by the threshold kernel itself.
"""

from __future__ import annotations

import gemmi
import numpy as np

from ..geometry.kept_arrays import KeptArrays
from ..models.beam import Beam
from ..models.detector import Panel

#: Resolution maps of the latest panel geometries and beams, up to 256 MiB in all: a step on
#: a few images (a user trying parameters, images processed as they arrive) then costs
#: little more than their decoding.
_MAPS = KeptArrays(256 * 2**20)


def resolution_map(panel: Panel, beam: Beam) -> np.ndarray:
    """d-spacing (A) at every pixel centre, (slow, fast); inf at the beam centre.

    Computed once per panel geometry and beam direction and kept (read-only).
    """
    return _MAPS.get([panel.to_dict(), [float(x) for x in beam.s0]],
                     lambda: _resolution_map(panel, beam))


def _resolution_map(panel: Panel, beam: Beam) -> np.ndarray:
    nx, ny = panel.image_size
    out = np.empty((ny, nx))
    fast = np.arange(nx) + 0.5
    step = max(1, 2_000_000 // max(nx, 1))
    for j0 in range(0, ny, step):
        rows = np.arange(j0, min(ny, j0 + step)) + 0.5
        xy = np.stack(np.meshgrid(fast, rows), axis=-1).reshape(-1, 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = panel.resolution_at_pixel(beam.s0, xy)
        out[j0:j0 + len(rows)] = np.where(np.isfinite(d), d, np.inf).reshape(len(rows), nx)
    return out


def ice_ring_ranges(d_min: float, unit_cell=(4.498, 4.498, 7.338, 90, 90, 120),
                    space_group="P 63/m m c", width: float = 0.002) -> list[tuple[float, float]]:
    """(d_min, d_max) A of each ice ring down to ``d_min``; ``width`` in 1/d^2 (A^-2)."""
    cell = gemmi.UnitCell(*unit_cell)
    sg = gemmi.SpaceGroup(space_group) if isinstance(space_group, str) else space_group
    hkl = gemmi.make_miller_array(cell, sg, d_min, 0, True)
    d = np.unique(np.round(cell.calculate_d_array(hkl), 10))[::-1]
    inv = 1.0 / d**2
    lo, hi = inv - 0.5 * width, inv + 0.5 * width
    return [(float(np.sqrt(1 / h)), float(np.sqrt(1 / l)) if l > 0 else np.inf)
            for l, h in zip(lo, hi)]


def polygon_mask(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """True at the pixels (slow, fast) whose centres lie inside the polygon (even-odd
    rule); ``vertices`` (V, 2) px as (fast, slow), in order."""
    ny, nx = shape
    inside = np.zeros(shape, dtype=bool)
    v = np.asarray(vertices, float)
    x0, x1 = max(int(np.floor(v[:, 0].min())), 0), min(int(np.ceil(v[:, 0].max())), nx)
    y0, y1 = max(int(np.floor(v[:, 1].min())), 0), min(int(np.ceil(v[:, 1].max())), ny)
    if x1 <= x0 or y1 <= y0:
        return inside
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    box = np.zeros(xx.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(v, np.roll(v, -1, axis=0)):
        if ay == by:
            continue
        crosses = (ay > yy) != (by > yy)
        box ^= crosses & (xx < ax + (yy - ay) * (bx - ax) / (by - ay))
    inside[y0:y1, x0:x1] = box
    return inside


def static_mask(panel: Panel, beam: Beam | None, params, panel_index: int = 0,
                user_mask: np.ndarray | None = None,
                resolution_ranges=()) -> np.ndarray:
    """The static (image-independent) mask of one panel, shape (slow, fast).

    ``resolution_ranges``: (d1, d2) A pairs whose pixels are masked (dials.generate_mask
    ``resolution_range``)."""
    nx, ny = panel.image_size
    mask = np.ones((ny, nx), dtype=bool)
    for f0, s0, f1, s1 in panel.mask:
        mask[max(s0, 0):max(s1, 0), max(f0, 0):max(f1, 0)] = False
    b = int(params.border)
    if b > 0:
        mask[:b, :] = mask[-b:, :] = False
        mask[:, :b] = mask[:, -b:] = False
    for region in params.untrusted:
        if region.panel != panel_index:
            continue
        if region.rectangle is None and region.circle is None and region.polygon is None:
            mask[:] = False
        if region.rectangle is not None:
            x0, x1, y0, y1 = region.rectangle
            mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
        if region.circle is not None:
            xc, yc, r = region.circle
            yy, xx = np.ogrid[:ny, :nx]
            mask[(xx + 0.5 - xc) ** 2 + (yy + 0.5 - yc) ** 2 <= r * r] = False
        if region.polygon is not None:
            mask[polygon_mask(np.reshape(region.polygon, (-1, 2)), (ny, nx))] = False
    if user_mask is not None:
        mask &= np.asarray(user_mask, dtype=bool).reshape(ny, nx)
    if beam is not None and (params.d_min is not None or params.d_max is not None
                             or params.ice_rings_filter or len(resolution_ranges)):
        d = resolution_map(panel, beam)
        if params.d_min is not None:
            mask &= d > params.d_min
        if params.d_max is not None:
            mask &= d < params.d_max
        for d1, d2 in resolution_ranges:
            mask &= ~((d >= min(d1, d2)) & (d <= max(d1, d2)))
        if params.ice_rings_filter:
            finite = d[np.isfinite(d)]
            d_lim = params.ice_rings_d_min or (float(finite.min()) if finite.size else 1.0)
            for lo, hi in ice_ring_ranges(d_lim, params.ice_rings_unit_cell,
                                          params.ice_rings_space_group, params.ice_rings_width):
                mask &= ~((d >= lo) & (d <= hi))
    return mask
