"""Pass 0 and reference learning find each box row's span from a bilinear model of the
whole box (kernels._box_model, from its corners and edge middles) instead of fetching
three pixel directions per row: the spans must still hold every pixel the exact tests
take, on a detector close enough that the pixel directions curve strongly over a box."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def close_sweep():
    """A small sweep on a detector 45 mm from the crystal, 1 deg images (as in
    test_integration_speed)."""
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    p = SimulationParams.from_preset("lysozyme", n_images=10, image_size=(320, 320),
                                     distance=45.0, osc=1.0)
    return simulate(p), p


@pytest.mark.parametrize("half, most_kept", [(8, 0.5), (14, 0.5), (30, 1.0)])
def test_box_model_spans_hold_every_pixel_the_exact_tests_take(close_sweep, half,
                                                              most_kept):
    """Boxes of (2 half + 1)^2 px about a few hundred reflections, at three angles: every
    pixel inside the foreground (u^2 + v^2 <= lim, |t| <= tlim) lies in its row's
    _box_row_span, every pixel on the reference grid in its row's _box_grid_span, and
    the spans skip most of the box (rows that miss the foreground entirely included) but
    on boxes of 61 px, whose curvature at 45 mm widens the spans to most of their rows."""
    import numba

    from gonio.core.integration import kernels as K
    from gonio.core.integration.integrate import _profile_geometry
    from gonio.core.integration.kabsch import kabsch_basis
    from gonio.core.integration.pixel_directions import pixel_directions
    from gonio.core.prediction.rotation import predict_rotation

    @numba.njit
    def box_spans(ax, dirs, nx, x0, x1, y0, y1, lim, tlim, g, out):
        bm = K._box_model(ax, dirs, 0, nx, x0, x1, y0, y1)
        for y in range(y0, y1):
            fa, fb = K._box_row_span(bm, y0, y1, x0, x1, y, lim, tlim)
            ga, gb = K._box_grid_span(bm, y0, y1, x0, x1, y, g, g)
            out[y - y0, 0], out[y - y0, 1], out[y - y0, 2], out[y - y0, 3] = fa, fb, ga, gb

    sim, p = close_sweep
    e = sim.experiments[0]
    table = predict_rotation(e, 2.0)
    table = table.select(np.arange(0, len(table), max(1, len(table) // 300)))
    s0 = np.asarray(e.beam.s0, float)
    m2 = e.goniometer.rotation_axis / np.linalg.norm(e.goniometer.rotation_axis)
    e1, e2, _, zeta = kabsch_basis(s0, table["s1"], m2)
    n = len(table)
    # n_sigma sigma_b (deg) scaled with the box, as integrate's boxes are twice the spot
    db, dm = np.full(n, 1.5 * half / 14), np.full(n, 3 * p.sigma_m)
    geo = _profile_geometry(table, e1, e2, zeta, db, dm, s0, m2)
    beam = np.concatenate([s0, m2, [np.linalg.norm(s0)]])
    panel = e.detector[0]
    nx, ny = panel.image_size
    dirs = pixel_directions(panel)
    lim, tlim, g = 1.1 ** 2, 1.05, 1.3
    osc = np.deg2rad(e.scan.oscillation[1])
    tested = kept = n_fg = n_grid = 0
    for r in range(n):
        x, y, _ = table["xyzcal.px"][r]
        x0, x1 = int(max(x - half, 0)), int(min(x + half + 1, nx))
        y0, y1 = int(max(y - half, 0)), int(min(y + half + 1, ny))
        if x1 - x0 < 5 or y1 - y0 < 3:
            continue
        xs = np.arange(x0, x1)
        out = np.zeros((y1 - y0, 4), np.int64)
        for ang in (-osc, 0.0, osc):
            ax = K._frame_axes(geo, r, beam, ang)
            box_spans(np.array(ax), dirs, nx, x0, x1, y0, y1, lim, tlim, g, out)
            d = dirs.reshape(ny, nx, 3)[y0:y1, x0:x1].astype(float)
            u = d @ np.array(ax[0:3]) + ax[3]
            v = d @ np.array(ax[4:7]) + ax[7]
            t = d @ np.array(ax[8:11]) + ax[11]
            fg = (u * u + v * v <= lim) & (np.abs(t) <= tlim)
            on_grid = (np.abs(u) <= g) & (np.abs(v) <= g) & (np.abs(t) <= g)
            inside_fg = (xs >= out[:, 0:1]) & (xs < out[:, 1:2])
            inside_grid = (xs >= out[:, 2:3]) & (xs < out[:, 3:4])
            assert not np.any(fg & ~inside_fg), (r, ang)
            assert not np.any(on_grid & ~inside_grid), (r, ang)
            n_fg += int(fg.sum())
            n_grid += int(on_grid.sum())
            kept += int(inside_fg.sum() + inside_grid.sum())
            tested += 2 * fg.size
    assert n_fg > 10_000 and n_grid > 20_000
    print(half, kept / tested)
    assert kept < most_kept * tested
