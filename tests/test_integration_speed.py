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


def test_the_pipeline_gives_one_table_whatever_the_threads_and_blocks(close_sweep):
    """The blocks of frames run as a pipeline (extraction of one block beside the
    background of the one before, the learning of the one before that and the fits whose
    profiles are complete), each thread taking the next task when done: the integrated
    table is the same to the bit with 1, 2 or 3 threads, profile fitting included (each
    reference profile gets its references in the same order), and with blocks of 1 and
    of 3 images the fits agree to rounding (the same references, summed in another
    order) and the rest exactly."""
    sim, p, reader = close_sweep
    _, one, r1 = _integrate(sim, p, reader, nproc=1, block_size=3)
    assert r1.n_prf > 1000 and r1.n_reference > 100
    for kw in (dict(nproc=2, block_size=3), dict(nproc=3, block_size=3)):
        _, other, _ = _integrate(sim, p, reader, **kw)
        for name in COLUMNS:
            np.testing.assert_array_equal(one[name], other[name], err_msg=f"{name} {kw}")
    _, fine, _ = _integrate(sim, p, reader, nproc=2, block_size=1)
    for name in COLUMNS:
        if name.startswith("intensity.prf"):
            np.testing.assert_allclose(one[name], fine[name], rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(one[name], fine[name], err_msg=name)


def test_blas_runs_in_one_thread_inside_integrate(close_sweep, monkeypatch):
    """integrate's threads are its own (nproc): the prediction's matrix products do not
    start BLAS threads of their own beside them (threadpoolctl), and the limit is lifted
    afterwards."""
    from threadpoolctl import threadpool_info

    from gonio.core.integration import integrate as I

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    if not blas_threads() or max(blas_threads()) < 2:
        pytest.skip("BLAS runs one thread here anyway")
    before = blas_threads()
    seen = []
    predict = I._predict

    def spy(*args):
        seen.append(blas_threads())
        return predict(*args)

    monkeypatch.setattr(I, "_predict", spy)
    sim, p, reader = close_sweep
    _integrate(sim, p, reader, nproc=2)
    assert seen and all(max(n) == 1 for n in seen)
    assert blas_threads() == before


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



def _span_inputs(sim, p, db_deg):
    """What the span kernels take for every ~300th reflection predicted on ``sim``: the
    table, the profile geometry (n_sigma sigma_b ``db_deg``, 3 sigma_m), the beam, the
    pixel directions, the panel size (px) and the oscillation (rad)."""
    from gonio.core.integration.integrate import _profile_geometry
    from gonio.core.integration.kabsch import kabsch_basis
    from gonio.core.integration.pixel_directions import pixel_directions
    from gonio.core.prediction.rotation import predict_rotation

    e = sim.experiments[0]
    table = predict_rotation(e, 2.0)
    table = table.select(np.arange(0, len(table), max(1, len(table) // 300)))
    s0 = np.asarray(e.beam.s0, float)
    m2 = e.goniometer.rotation_axis / np.linalg.norm(e.goniometer.rotation_axis)
    e1, e2, _, zeta = kabsch_basis(s0, table["s1"], m2)
    n = len(table)
    geo = _profile_geometry(table, e1, e2, zeta, np.full(n, db_deg), np.full(n, 3 * p.sigma_m),
                            s0, m2)
    beam = np.concatenate([s0, m2, [np.linalg.norm(s0)]])
    panel = e.detector[0]
    return (table, geo, beam, pixel_directions(panel), panel.image_size,
            np.deg2rad(e.scan.oscillation[1]))


def _uvt(d, ax):
    """(u, v, t) of pixel directions ``d`` (..., 3) in the frame axes ``ax``."""
    return (d @ np.array(ax[0:3]) + ax[3], d @ np.array(ax[4:7]) + ax[7],
            d @ np.array(ax[8:11]) + ax[11])


@pytest.mark.parametrize("half, most_kept", [(8, 0.5), (14, 0.5), (30, 1.0)])
def test_box_model_spans_hold_every_pixel_the_exact_tests_take(close_sweep, half,
                                                              most_kept):
    """Pass 0 and reference learning find each box row's span from a bilinear model of the
    whole box (kernels._box_model, from its corners and edge middles), and test exactly
    only the pixels of that span (boxes under 5 x 3 px: every pixel). Boxes of (2 half + 1)^2 px about a few hundred
    reflections, at three angles, on the detector 45 mm away (the pixel directions curve
    strongly over a box): every pixel inside the foreground (u^2 + v^2 <= lim,
    |t| <= tlim) lies in its row's _box_row_span, every pixel on the reference grid in its
    row's _box_grid_span, and the spans skip most of the box (rows that miss the
    foreground entirely included) but on boxes of 61 px, whose curvature widens the spans
    to most of their rows."""
    import numba

    from gonio.core.integration import kernels as K

    @numba.njit
    def box_spans(ax, dirs, nx, x0, x1, y0, y1, lim, tlim, g, out):
        bm = K._box_model(ax, dirs, 0, nx, x0, x1, y0, y1)
        for y in range(y0, y1):
            fa, fb = K._box_row_span(bm, y0, y1, x0, x1, y, lim, tlim)
            ga, gb = K._box_grid_span(bm, y0, y1, x0, x1, y, g, g)
            out[y - y0, 0], out[y - y0, 1], out[y - y0, 2], out[y - y0, 3] = fa, fb, ga, gb

    sim, p, _ = close_sweep
    # n_sigma sigma_b (deg) scaled with the box, as integrate's boxes are twice the spot
    table, geo, beam, dirs, (nx, ny), osc = _span_inputs(sim, p, 1.5 * half / 14)
    lim, tlim, g = 1.1 ** 2, 1.05, 1.3
    tested = kept = n_fg = n_grid = 0
    for r in range(len(table)):
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
            u, v, t = _uvt(dirs.reshape(ny, nx, 3)[y0:y1, x0:x1].astype(float), ax)
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
    assert kept < most_kept * tested


def test_box_extent_is_the_panel_s_ray_intersection(close_sweep):
    """box_kernels.box_extent (the shoebox corners, 16 rays per reflection) gives the pixel
    positions Panel.ray_intersection and millimeter_to_pixel (parallax included) give."""
    from gonio.core.integration import box_kernels as B
    from gonio.core.integration import kernels as K
    from gonio.core.integration.kabsch import kabsch_basis
    from gonio.core.prediction.rotation import predict_rotation

    sim, _, _ = close_sweep
    e = sim.experiments[0]
    pan = e.detector[0]
    assert pan.has_parallax
    table = predict_rotation(e, 2.0)
    s1 = table["s1"]
    s0 = np.asarray(e.beam.s0, float)
    m2 = e.goniometer.rotation_axis / np.linalg.norm(e.goniometer.rotation_axis)
    e1, e2, _, _ = kabsch_basis(s0, s1, m2)
    n = len(table)
    half = np.linalg.norm(s1, axis=1) * np.deg2rad(0.6)
    lo, hi = np.full(n, -0.02), np.full(n, 0.03)
    ext = np.empty((n, 5))
    B.box_extent(s1, s0, m2, e1, e2, half, lo, hi, np.zeros(n, np.int64),
                 K.panel_geometry(e.detector), ext)
    xs, ys = [], []
    for ang in np.linspace(lo, hi, 4):
        c, sn = np.cos(ang)[:, None], np.sin(ang)[:, None]
        for a, b in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
            v = s1 - s0 + half[:, None] * (a * e1 + b * e2)
            ray = s0 + v * c + np.cross(m2, v) * sn + m2 * (v @ m2)[:, None] * (1 - c)
            mm, ok = pan.ray_intersection(ray)
            assert ok.all()
            px = pan.millimeter_to_pixel(mm)
            xs.append(px[:, 0])
            ys.append(px[:, 1])
    xs, ys = np.array(xs), np.array(ys)
    assert np.all(ext[:, 4] == 1)
    for got, want in ((ext[:, 0], xs.min(0)), (ext[:, 1], xs.max(0)), (ext[:, 2], ys.min(0)),
                      (ext[:, 3], ys.max(0))):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_a_failing_image_stops_the_threads_and_is_named(close_sweep):
    """An image that cannot be read half-way through the sweep: the error names it, with
    one thread or two, and the threads take no further tasks once it is raised (the six
    images after it are all in the same section: a thread still working when the error
    comes may read one or two of them, not all)."""
    from gonio.core.formats.reader import InMemoryReader
    from gonio.core.integration.params import IntegrationError

    sim, p, _ = close_sweep

    class Failing(InMemoryReader):
        def __init__(self, frames, bad):
            super().__init__(frames)
            self.bad, self.read_frames = bad, []

        def read(self, i):
            self.read_frames.append(i)
            if i == self.bad:
                raise OSError(f"damaged file of image {i + 1}")
            return super().read(i)

    first = sim.experiments[0].scan.image_range[0]
    for nproc in (1, 2):
        reader = Failing([tuple(im) for im in sim.images], bad=3)
        with pytest.raises(IntegrationError, match=f"Image {first + 3} could not be read"):
            _integrate(sim, p, reader, nproc=nproc, block_size=10)
        assert sorted(reader.read_frames)[:4] == [0, 1, 2, 3]
        after = reader.read_frames[reader.read_frames.index(3) + 1:]
        assert len(after) <= 2 * (nproc - 1), (nproc, reader.read_frames)


def test_the_profile_models_error_comes_first_with_threads(close_sweep):
    """With several threads the profile model is estimated beside the prediction: when
    both fail, the error is the profile model's, as with one thread."""
    from gonio.core.integration.integrate import integrate
    from gonio.core.integration.params import IntegrationError, IntegrationParams
    from gonio.core.reflection_table import ReflectionTable

    sim, _, reader = close_sweep
    for nproc in (1, 2):
        with pytest.raises(IntegrationError, match="estimated from the indexed strong spots"):
            integrate(sim.experiments, ReflectionTable({}),
                      IntegrationParams(nproc=nproc, d_max=0.5), readers=[reader])


def test_set_up_work_runs_beside_the_calling_thread(close_sweep):
    """With two threads the pixel volumes are computed beside the rest of the set-up
    (their CPU reported as cpu.setup, the same table); with one thread they are part of
    the serial work."""
    sim, p, reader = close_sweep
    _, one, r1 = _integrate(sim, p, reader, nproc=1)
    _, two, r2 = _integrate(sim, p, reader, nproc=2)
    assert "cpu.setup" not in r1.timings
    assert r2.timings["cpu.setup"] > 0
    np.testing.assert_array_equal(one["intensity.prf.value"], two["intensity.prf.value"])


def test_integer_frames_go_to_the_kernels_as_decoded(close_sweep):
    """Frames of integer counts reach the pixel kernels as int32, without a conversion
    pass (a CBF frame is the decoder's own array); others as float32; uint32 counts
    beyond int32 (Eiger's dead-pixel markers) are clipped, still above any trusted range."""
    from gonio.core.integration.integrate import _read

    class Reader:
        def __init__(self, *panels):
            self.panels = panels

        def read(self, f):
            return self.panels

    sim, _, _ = close_sweep
    scan = sim.experiments[0].scan
    frame = np.ascontiguousarray(sim.images[0][0], dtype=np.int32)
    got = _read(Reader(frame), 0, scan)
    assert got.dtype == np.int32 and np.shares_memory(got, frame)
    assert _read(Reader(frame.astype(np.uint16)), 0, scan).dtype == np.int32
    assert _read(Reader(frame, frame.astype(np.float32) + 0.5), 0, scan).dtype == np.float32
    dead = frame.astype(np.uint32)
    dead[0, 0] = 2**32 - 1
    got = _read(Reader(dead), 0, scan)
    assert got.dtype == np.int32 and got[0] == 2**31 - 1 and got[1] == frame[0, 1]


@pytest.mark.parametrize("dtype,add", [(np.int16, 0), (np.float32, 0), (np.uint32, 300)])
def test_one_table_whatever_the_frames_type(close_sweep, dtype, add):
    """The same counts as int32 (the kernels' integer frames), int16, float32 (their
    float frames) or uint32 give the same integrated table to the bit (with a background
    of 300 counts too; the simulator marks gaps -1, so not unsigned without it)."""
    from gonio.core.formats.reader import InMemoryReader

    sim, p, _ = close_sweep
    frames = [tuple(np.asarray(a, np.int64) + add for a in im) for im in sim.images]
    _, ref, res = _integrate(sim, p, InMemoryReader(
        [tuple(a.astype(np.int32) for a in im) for im in frames]), nproc=2)
    assert res.n_prf > 1000
    _, other, _ = _integrate(sim, p, InMemoryReader(
        [tuple(a.astype(dtype) for a in im) for im in frames]), nproc=2)
    for name in COLUMNS:
        np.testing.assert_array_equal(ref[name], other[name], err_msg=name)
    assert (np.median(ref["background.mean"]) > 300) == (add > 0)


def test_the_glm_takes_counts_beyond_its_histograms_from_the_pixels():
    """The GLM background counts a box's background pixels into histograms of counts
    below nh in the pass over the box; a box with a count beyond them is gathered again,
    its pixels' values this time: the same distinct values and multiplicities, the same
    background to the bit, whatever nh. Gains other than 1 divide the counts."""
    from gonio.core.integration.box_kernels import process_glm
    from gonio.core.integration.mask_codes import BACKGROUND, FOREGROUND, VALID

    rng = np.random.default_rng(5)
    n, w, h, d = 40, 9, 8, 3
    size = w * h * d
    bbox = np.tile(np.array([0, w, 0, h, 0, d], np.int32), (n, 1))
    off = np.arange(n, dtype=np.int64) * size
    mask = np.full(n * size, VALID | BACKGROUND, np.uint8)
    centre = (np.arange(n)[:, None] * size + np.array([size // 2, size // 2 + 1])).ravel()
    mask[centre] = VALID | FOREGROUND
    data = rng.poisson(rng.uniform(0.5, 40.0, n).repeat(size)).astype(np.float32)
    data[centre] += 500

    def run(nh, gain):
        out = (np.zeros((n, 4)), np.full((n, 12), np.nan), np.zeros((n, 6), np.int64))
        process_glm(np.arange(n, dtype=np.int64), bbox, off, data, mask, np.array([gain]),
                    np.zeros(n, np.int64), 1.345, *out, np.empty(size), np.empty((1, 4)),
                    np.empty(size), np.empty((size, 3), np.int64),
                    np.zeros(4 * nh, np.int64), np.empty(nh), np.empty(nh), np.empty(size),
                    np.empty(size), np.zeros(4 * size + 1024))
        return out

    for gain in (1.0, 2.0):
        ref = run(256, gain)  # every count below 256: histograms only
        for nh in (4, 16):  # most boxes beyond: their pixels' values
            for a, b in zip(ref, run(nh, gain)):
                np.testing.assert_array_equal(a, b)
    assert 5 < np.median(ref[1][:, 0]) < 40


def test_the_glm_pass_counts_every_box_pixel_as_its_mask_code_says():
    """The GLM's pass over a box (valid pixels counted off the background's path, the
    largest count kept as a float, the background counts in four interleaved histograms)
    counts, for boxes of random mask codes (every combination of the codes, Shared
    included), the valid, background, valid foreground and overlapped pixels as their
    definitions computed with numpy; flags a box with a bad foreground pixel; and gives the
    GLM constant of the valid background pixels to the bit, whether their counts are all
    in the histograms or some beyond them (>= nh or not integers)."""
    from gonio.core.integration.box_kernels import glm_constant, process_glm
    from gonio.core.integration.mask_codes import BACKGROUND, FOREGROUND, OVERLAPPED, VALID

    rng = np.random.default_rng(11)
    n, w, h, d, nh = 60, 7, 6, 3, 16
    size = w * h * d
    bbox = np.tile(np.array([0, w, 0, h, 0, d], np.int32), (n, 1))
    off = np.arange(n, dtype=np.int64) * size
    # mostly plain background, the rest any code
    mask = np.where(rng.random(n * size) < 0.6, VALID | BACKGROUND,
                    rng.integers(0, 128, n * size)).astype(np.uint8)
    data = rng.poisson(rng.uniform(0.3, 12.0, n).repeat(size)).astype(np.float32)
    data[: 10 * size] += (rng.random(10 * size) < 0.02) * 300  # beyond the histograms
    data[10 * size: 20 * size] += (rng.random(10 * size) < 0.02) * 0.5  # not integers
    out = (np.zeros((n, 4)), np.full((n, 12), np.nan), np.zeros((n, 6), np.int64))
    process_glm(np.arange(n, dtype=np.int64), bbox, off, data, mask, np.array([1.0]),
                np.zeros(n, np.int64), 1.345, *out, np.empty(size), np.empty((1, 4)),
                np.empty(size), np.empty((size, 3), np.int64), np.zeros(4 * nh, np.int64),
                np.empty(nh), np.empty(nh), np.empty(size), np.empty(size),
                np.zeros(4 * size + 1024))
    _, out_f, out_i = out
    for r in range(n):
        m, y = mask[off[r]:off[r] + size], data[off[r]:off[r] + size]
        bg = (m & (VALID | BACKGROUND)) == VALID | BACKGROUND
        fg = (m & FOREGROUND) != 0
        assert out_i[r, 0] == np.count_nonzero(m & VALID)
        assert out_i[r, 1] == np.count_nonzero(bg)
        assert out_i[r, 2] == np.count_nonzero(fg & ((m & VALID) != 0))
        assert out_i[r, 5] == np.count_nonzero(m & OVERLAPPED)
        assert (out_i[r, 4] == 3) == bool(np.any(fg & ((m & VALID) == 0)))
        yb = y[bg].astype(np.float64)
        assert out_f[r, 0] == glm_constant(yb, len(yb), 1.345)
    assert np.count_nonzero(out_f[:, 0] > 1) > n // 2


def test_the_cutting_kernel_gives_every_box_pixel_its_mask_code(close_sweep):
    """extract_frame's two passes over one image (foreground claims, then counts and mask
    codes: row views indexed from 0, the number of claimed pixels kept in a register)
    give every pixel of every box the code of its definition, computed here with numpy on
    boxes that overlap: Foreground where u^2 + v^2 <= (1 + fg_pad)^2 and |t| <= 1 + half an
    image's dt at the pixel centre; a pixel in several foregrounds Shared, Foreground for
    the reflection it is nearest to (u^2 + v^2 + t^2, the first on a tie), Overlapped for
    the others; Background where no foreground claims it; Valid where not masked and inside
    the trusted range. The counts are copied, overloaded and overlapped reflections
    flagged, every claimed pixel listed once, and reset_claims clears the claims."""
    from gonio.core.integration import kernels as K
    from gonio.core.integration.integrate import _profile_geometry
    from gonio.core.integration.kabsch import kabsch_basis
    from gonio.core.integration.mask_codes import (
        BACKGROUND,
        FOREGROUND,
        OVERLAPPED,
        SHARED,
        VALID,
    )
    from gonio.core.integration.pixel_directions import pixel_directions
    from gonio.core.prediction.rotation import predict_rotation

    sim, p, _ = close_sweep
    e = sim.experiments[0]
    nx, ny = e.detector[0].image_size
    f = 4
    table = predict_rotation(e, 2.0)
    z = table["xyzcal.px"][:, 2] - e.scan.array_range[0]
    table = table.select(np.flatnonzero(np.abs(z - f - 0.5) < 1.0))
    n = len(table)
    s0 = np.asarray(e.beam.s0, float)
    m2 = e.goniometer.rotation_axis / np.linalg.norm(e.goniometer.rotation_axis)
    e1, e2, _, zeta = kabsch_basis(s0, table["s1"], m2)
    # n_sigma sigma_b 1.2 deg: foregrounds ~5 px across on this detector, many overlapping
    geo = _profile_geometry(table, e1, e2, zeta, np.full(n, 1.2), np.full(n, 3 * p.sigma_m),
                            s0, m2)
    beam = np.concatenate([s0, m2, [np.linalg.norm(s0)]])
    scan = np.deg2rad([e.scan.angle_from_frame(e.scan.array_range[0]), e.scan.oscillation[1]])
    dirs = pixel_directions(e.detector[0])
    xy = np.round(table["xyzcal.px"][:, :2]).astype(int)
    bbox = np.column_stack([np.clip(xy[:, 0] - 9, 0, nx), np.clip(xy[:, 0] + 8, 0, nx),
                            np.clip(xy[:, 1] - 7, 0, ny), np.clip(xy[:, 1] + 9, 0, ny),
                            np.full(n, f - 1), np.full(n, f + 2)]).astype(np.int32)
    sizes = ((bbox[:, 1] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 2]) * 3).astype(np.int64)
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    rng = np.random.default_rng(7)
    frame = rng.poisson(8.0, nx * ny).astype(np.int32)
    frame[rng.random(nx * ny) < 0.02] = 0  # below the trusted range
    frame[rng.random(nx * ny) < 0.01] = 500  # overloaded
    static_ok = rng.random(nx * ny) > 0.03
    tmin, tmax = np.array([0.0]), np.array([100.0])
    fg_pad = rng.uniform(0.0, 0.3, n)
    act = rng.permutation(n).astype(np.int64)
    state, best = K.pixel_state(static_ok), np.full(nx * ny, np.inf, np.float32)
    own, claimed = np.full(nx * ny, -1, np.int32), np.empty(nx * ny, np.int32)
    n_claimed = np.zeros(1, np.int64)
    sb_data = np.full(int(sizes.sum()), np.nan, np.float32)
    sb_mask = np.zeros(int(sizes.sum()), np.uint8)
    overlapped, overloaded = np.zeros(n, bool), np.zeros(n, bool)
    for pass_ in (0, 1):
        K.extract_frame(pass_, f, frame, tmin, tmax, act, np.zeros(n, np.int64), bbox, geo,
                        beam, scan, fg_pad, off, np.zeros(1, np.int64), np.array([nx]), dirs,
                        state, best, own, claimed, n_claimed, sb_data, sb_mask, overlapped,
                        overloaded)

    # the definitions, reflection by reflection in the kernel's order
    phi_mid, half = scan[0] + (f + 0.5) * scan[1], 0.5 * abs(scan[1])
    count = np.zeros(nx * ny, np.int64)
    nearest = np.full(nx * ny, np.inf, np.float32)
    owner = np.full(nx * ny, -1)
    boxes = {}
    for r in act:
        x0, x1, y0, y1 = bbox[r, :4]
        pix = (np.arange(y0, y1)[:, None] * nx + np.arange(x0, x1)).ravel()
        ax = K._frame_axes(geo, r, beam, geo[r, 14] - phi_mid)
        d = dirs[pix].astype(float)
        u, v, t = (ax[i] * d[:, 0] + ax[i + 1] * d[:, 1] + ax[i + 2] * d[:, 2] + ax[i + 3]
                   for i in (0, 4, 8))
        uv = u * u + v * v
        fg = (uv <= (1.0 + fg_pad[r]) ** 2) & (np.abs(t) <= 1.0 + half * geo[r, 15])
        d2 = uv + t * t
        take = fg & ((count[pix] == 0) | (d2 < nearest[pix]))
        nearest[pix[take]] = d2[take]
        owner[pix[take]] = r
        count[pix[fg]] += 1
        boxes[r] = pix, fg
    n_shared = 0
    for r, (pix, fg) in boxes.items():
        val = frame[pix]
        code = np.where(static_ok[pix] & (val > tmin[0]) & (val < tmax[0]), VALID, 0)
        shared = fg & (count[pix] > 1)
        code |= np.where(shared, SHARED | np.where(owner[pix] == r, FOREGROUND, OVERLAPPED), 0)
        code |= np.where(fg & ~shared, FOREGROUND, 0)
        code |= np.where(~fg & (count[pix] == 0), BACKGROUND, 0)
        j = off[r] + (f - bbox[r, 4]) * len(pix) + np.arange(len(pix))
        np.testing.assert_array_equal(sb_mask[j], code, err_msg=str(r))
        np.testing.assert_array_equal(sb_data[j], val.astype(np.float32))
        assert overloaded[r] == np.any(static_ok[pix] & (val >= tmax[0]))
        assert overlapped[r] == np.any(shared)
        n_shared += int(shared.sum())
    assert n_shared > 200 and (count > 0).sum() > 2000
    listed = claimed[:n_claimed[0]]
    assert len(np.unique(listed)) == len(listed)
    np.testing.assert_array_equal(np.sort(listed), np.flatnonzero(count > 0))
    K.reset_claims(state, claimed, n_claimed)
    np.testing.assert_array_equal(state, K.pixel_state(static_ok))
    assert n_claimed[0] == 0


def test_fits_with_sums_in_any_order_agree_with_the_sums_in_pixel_order(close_sweep,
                                                                        monkeypatch):
    """fit_profiles is compiled with fast-math sums (kernels.SUMS_IN_ANY_ORDER: its sums
    over pixels vectorised, a select instead of a branch for the pixels whose profile is
    not positive): on every call a real run makes, its intensities, variances,
    correlations and fitted profile shares agree with the same kernel compiled with every
    sum in pixel order to 1e-9 relative, its fit statuses exactly; and one reflection at
    a time, its intensity is the Poisson fixed point of its definition computed here,
    where the pixels whose profile is not positive weigh nothing."""
    import numba

    from gonio.core.integration import kernels as K

    sim, p, reader = close_sweep
    calls = []
    fast = K.fit_profiles

    def keep(*args):
        calls.append([a.copy() if isinstance(a, np.ndarray) else a for a in args])
        return fast(*args)

    monkeypatch.setattr(K, "fit_profiles", keep)
    _integrate(sim, p, reader, nproc=1)
    monkeypatch.undo()
    in_order = numba.njit(error_model="numpy")(K.fit_profiles.py_func)
    n_fits = 0
    for args in calls:
        rows, out = args[0], args[23]
        got, want = out.copy(), out.copy()
        fast(*args[:23], got, *args[24:])
        in_order(*args[:23], want, *args[24:])
        np.testing.assert_array_equal(got[rows, 4], want[rows, 4])
        np.testing.assert_allclose(got[rows, :4], want[rows, :4], rtol=1e-9, atol=1e-12)
        n_fits += int((got[rows, 4] == 0).sum())
    assert n_fits > 1000
    # one reflection at a time against the definition: the Poisson weights of the pixels
    # whose profile is positive (those <= 0 weigh nothing), iterated from the summed
    # intensity to the kernel's tolerance; the kernel leaves the fit's pixels in its scratch
    from gonio.core.integration.mask_codes import FOREGROUND, VALID

    args = calls[-1]
    off, mask, gain, panel, pv, cv, bv = (args[i] for i in (7, 9, 11, 15, 24, 25, 26))
    bbox = args[6]
    n_tails = 0
    for r in args[0][:300]:
        out = args[23].copy()
        fast(np.array([r]), *args[1:23], out, *args[24:])
        if out[r, 4] != 0:
            continue
        size = int(np.prod(bbox[r, 1::2] - bbox[r, ::2]))
        box = mask[off[r]:off[r] + size]
        m = int(((box & VALID != 0) & (box & FOREGROUND != 0)).sum())
        pk, ck, bk = pv[:m], cv[:m].astype(float), bv[:m]
        n_tails += int((pk <= 0).sum())
        use = pk > 0
        g = gain[panel[r]]
        i = (ck - bk).sum() / pk.sum()
        for _ in range(50):
            w = pk[use] / (g * np.maximum(bk[use] + max(i, 0.0) * pk[use], 1e-6))
            new = (w * (ck[use] - bk[use])).sum() / (w * pk[use]).sum()
            done = abs(new - i) <= 1e-6 * max(abs(new), 1.0)
            i = new
            if done:
                break
        assert out[r, 0] == pytest.approx(i, rel=1e-5, abs=1e-6)
    assert n_tails > 0  # the profiles' tails hold values <= 0 on fitted pixels
