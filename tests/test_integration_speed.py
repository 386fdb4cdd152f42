"""What integrate does for speed leaves its results as they were: the cached pixel
directions, threads (integration and prediction) following nproc, and the thread CPU
accounting it reports."""

from __future__ import annotations

import numpy as np
import pytest

COLUMNS = ("intensity.sum.value", "intensity.sum.variance", "intensity.prf.value",
           "intensity.prf.variance", "background.mean", "xyzobs.px.value", "flags",
           "num_pixels.foreground", "num_pixels.background", "bbox")


@pytest.fixture(scope="module")
def close_sweep():
    """A small sweep on a detector 45 mm from the crystal, 1 deg images."""
    from gonio.core.formats.reader import InMemoryReader
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    p = SimulationParams.from_preset("lysozyme", n_images=10, image_size=(320, 320),
                                     distance=45.0, osc=1.0)
    sim = simulate(p)
    return sim, p, InMemoryReader([tuple(im) for im in sim.images])


def _integrate(sim, p, reader, **kw):
    from gonio.core.integration.integrate import integrate
    from gonio.core.integration.params import IntegrationParams

    params = IntegrationParams(sigma_b=0.1, sigma_m=p.sigma_m, nproc=kw.pop("nproc", 1), **kw)
    return integrate(sim.experiments, None, params, readers=[reader])


def test_pixel_directions_are_kept_per_panel_geometry(close_sweep):
    from gonio.core.integration.pixel_directions import _directions, pixel_directions

    sim, _, _ = close_sweep
    panel = sim.experiments[0].detector[0]
    d = pixel_directions(panel)
    assert pixel_directions(panel) is d  # computed once
    assert not d.flags.writeable
    np.testing.assert_array_equal(d, _directions(panel))
    nx, ny = panel.image_size
    assert d.shape == (nx * ny, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    # the centre of pixel (x, y) = (5, 7), row by row
    lab = panel.lab_coord(panel.pixel_to_millimeter([[5.5, 7.5]]))[0]
    np.testing.assert_allclose(d[7 * nx + 5], lab / np.linalg.norm(lab), atol=1e-6)
    moved = panel.replace(origin=panel.origin + np.array([1.0, 0.0, 0.0]))
    d_moved = pixel_directions(moved)
    assert d_moved is not d and not np.array_equal(d_moved, d)
    assert pixel_directions(panel) is d  # both kept


def test_threads_and_cpu_accounting(close_sweep):
    """nproc=2 gives the same table as nproc=1, and the timings say where the CPU went:
    per phase, summed over threads, with the longest threads' share (the span) no more
    than the total and at least half of it on two threads."""
    sim, p, reader = close_sweep
    _, one, r1 = _integrate(sim, p, reader, nproc=1)
    _, two, r2 = _integrate(sim, p, reader, nproc=2)
    for name in COLUMNS:
        if name.startswith("intensity.prf"):  # references summed in another order
            np.testing.assert_allclose(one[name], two[name], rtol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    phases = ("read", "claims", "copy", "reset", "background", "learn", "fit")
    for res in (r1, r2):
        t = res.timings
        assert all(t[f"cpu.{k}"] >= 0 for k in phases)
        work = sum(t[f"cpu.{k}"] for k in ("extract", "background", "learn", "fit"))
        assert t["cpu.extract"] >= t["cpu.claims"] + t["cpu.copy"]
        assert t["cpu.parallel_span"] <= work * 1.001
    assert r1.timings["cpu.parallel_span"] == pytest.approx(
        sum(r1.timings[f"cpu.{k}"] for k in ("extract", "background", "learn", "fit")))
    # one thread: the serial part is what the calling thread did outside the phases
    assert 0 < r1.timings["cpu.serial"] < r1.timings["cpu.main"] - r1.timings["cpu.fit"]
    assert 0 < r2.timings["cpu.serial"] == r2.timings["cpu.main"]
    work2 = sum(r2.timings[f"cpu.{k}"] for k in ("extract", "background", "learn", "fit"))
    assert r2.timings["cpu.parallel_span"] >= work2 / 2 * 0.999


def test_prediction_threads_follow_nproc(close_sweep, monkeypatch):
    """Large predictions split over nproc threads (static and scan-varying) give the same
    reflections as one thread."""
    from gonio.core.prediction import rotation, threads
    from gonio.core.prediction.threads import thread_parts

    sim, _, _ = close_sweep
    e = sim.experiments[0]
    assert thread_parts(10 * threads.THREAD_MIN, 1) == 1
    assert thread_parts(10 * threads.THREAD_MIN, 3) == 3
    assert thread_parts(threads.THREAD_MIN // 2, 4) == 1
    monkeypatch.setattr(threads, "THREAD_MIN", 500)  # threads even for this small sweep
    one = rotation.predict_rotation(e, 2.0, nproc=1)
    three = rotation.predict_rotation(e, 2.0, nproc=3)
    assert len(one) > 1500
    np.testing.assert_array_equal(one["miller_index"], three["miller_index"])
    np.testing.assert_array_equal(one["xyzcal.px"], three["xyzcal.px"])
    A = np.asarray(e.crystal.A)
    sv = e.replace(crystal=e.crystal.replace(A_at_scan_points=np.repeat(
        A[None], e.scan.num_images + 1, axis=0)))
    a = rotation.predict_rotation(sv, 2.0, nproc=1)
    b = rotation.predict_rotation(sv, 2.0, nproc=2)
    assert len(a) > 1500 and len(b) == len(a)
    key_a = np.lexsort(np.column_stack([a["miller_index"], a["xyzcal.px"][:, 2]]).T)
    key_b = np.lexsort(np.column_stack([b["miller_index"], b["xyzcal.px"][:, 2]]).T)
    np.testing.assert_array_equal(a["miller_index"][key_a], b["miller_index"][key_b])
    np.testing.assert_allclose(a["xyzcal.px"][key_a], b["xyzcal.px"][key_b], atol=1e-9)

