"""Integration of rotation sweeps (dials.integrate): summation and 3D profile fitting.

Per sweep (image set; several experiments, e.g. lattices, may share one):

1. profile model per experiment (:mod:`.profile_model`): sigma_b, sigma_m given or
   estimated from the indexed strong spots;
2. prediction of every reflection to d_min (static or scan-varying crystal,
   :mod:`gonio.core.prediction`), shoeboxes from the profile model (DIALS
   ``BBoxCalculator3D``: twice the foreground across the spot, n_sigma sigma_m / |zeta|
   along the rotation), held inside the panel;
3. the images are read once, in blocks of consecutive images; each image is read
   and cut into the shoeboxes that cover it by worker threads (:mod:`.kernels`
   ``extract_frame``: masks for validity, foreground, background and overlaps);
   only the shoeboxes of reflections still being recorded are kept, so memory does
   not grow with the length of the sweep;
4. a reflection whose shoebox is complete gets its background (robust Poisson GLM or
   ``simple``), summation intensity and centroid; strong, fully recorded, isolated
   ones are added to the reference profiles of their detector region and scan range
   (Kabsch (2010) J. Appl. Cryst. 43, 611);
5. when the reference profiles of a scan range are complete, the reflections waiting
   for them are profile fitted (:func:`.kernels.fit_profiles`) and their pixels
   dropped;
6. the corrections (lp, qe, partiality) are added (:mod:`.corrections`).
"""

from __future__ import annotations

import heapq
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..models.experiment import ExperimentList
from ..models.vectors import norms3
from ..reflection_table import Flags, ReflectionTable, take_rows
from ..threads import TakeInTurn
from .params import IntegrationError, IntegrationParams
from .profile_model import (
    SIGMA_B_MULTIPLIER,
    ProfileModel,
    ProfileModelError,
    box_xy,
    estimate_profile_model,
    frame_range,
    rocking_width_deg,
)

MIN_REFERENCE_ZETA = 0.05  # DIALS gaussian_rs filter.min_zeta
REFERENCE_MIN_I_OVER_SIGMA = 5.0
REFERENCE_MAX_LOST = 0.2  # at most this part of the foreground given to overlapping spots
MIN_PROFILE_FRACTION = 0.5  # of a reflection's profile on the pixels its fit uses
MAX_PRF_SUM_NSIGMA = 10.0  # |I_prf - I_sum| / sigma_sum beyond this: the profile is not the spot's
SLOTS = 4
GLM_BINS = 256  # background counts below this go to the GLM as a histogram (box_kernels.process)
N_RINGS, N_SECTORS = 8, 1  # reference-profile regions per scan range: resolution x azimuth
GRID_EXTENT = 1.3  # reference grid half-width (u, v, t): the foreground and a margin
# per grid axis: takes out the variance h^2/3 the reference grid adds (:func:`_unsmoothed`)
UNSMOOTH = (-1.0 / 24.0, 0.0, 13.0 / 12.0, 0.0, -1.0 / 24.0)


@dataclass
class IntegrationResult:
    profile_models: list = field(default_factory=list)
    n_predicted: int = 0
    n_sum: int = 0
    n_prf: int = 0
    n_reference: int = 0
    n_overlapped: int = 0
    timings: dict = field(default_factory=dict)
    nproc: int = 1
    peak_live_pixels: int = 0
    # per sweep: (profiles, n references, grid step, mean x, y px and image per region)
    reference_profiles: list = field(default_factory=list)


# -- geometry per panel -------------------------------------------------------------------


def _detector_arrays(detector, masks=None):
    """Unit directions to the pixel centres of all panels (:func:`.pixel_directions.
    pixel_directions`, kept per panel geometry), offsets, static mask, trusted ranges,
    gains. ``masks``: a user mask per panel (slow, fast), True = good pixel."""
    from .pixel_directions import pixel_directions

    dirs, ok, pix_off, pnx = [], [], [0], []
    for p in detector:
        nx, ny = p.image_size
        dirs.append(pixel_directions(p))
        m = np.ones((ny, nx), bool)
        for f0, s0, f1, s1 in p.mask:
            m[max(s0, 0):max(s1, 0), max(f0, 0):max(f1, 0)] = False
        if masks is not None:
            m &= masks[len(ok)]
        ok.append(m.ravel())
        pix_off.append(pix_off[-1] + nx * ny)
        pnx.append(nx)
    tr = np.array([p.trusted_range for p in detector], float)
    gain = np.array([p.gain if p.gain > 0 else 1.0 for p in detector], float)
    dirs = dirs[0] if len(dirs) == 1 else np.concatenate(dirs)
    dirs.setflags(write=False)  # one array type for the kernels, cached or not
    return dict(dirs=dirs, static_ok=np.concatenate(ok),
                pix_off=np.array(pix_off[:-1], np.int64), pnx=np.array(pnx, np.int64),
                tmin=tr[:, 0].copy(), tmax=tr[:, 1].copy(), gain=gain,
                n_pixels=pix_off[-1])


# -- profile model and prediction ----------------------------------------------------------


def profile_models(experiments, indexed, params: IntegrationParams, threads: int = 1,
                   helper_cpu: list | None = None) -> list[ProfileModel]:
    """One ProfileModel per experiment: the given sigma_b / sigma_m, else estimated from
    the experiment's indexed strong spots (DIALS ``ProfileModelCalculator``; parts of the
    estimate side by side in ``threads``, the same result, their threads' CPU seconds
    appended to ``helper_cpu``)."""
    models = []
    for k, e in enumerate(experiments):
        if params.sigma_b is not None and params.sigma_m is not None:
            models.append(ProfileModel(params.sigma_b, params.sigma_m, params.n_sigma))
            continue
        if indexed is None or not len(indexed):
            raise IntegrationError(
                "The profile model (sigma_b, sigma_m) is estimated from the indexed strong "
                "spots, and there are none: run index (and refine) first, or give sigma_b= "
                "and sigma_m= (deg).")
        try:
            est = estimate_profile_model(e, indexed, params.n_sigma, experiment_id=k,
                                         sigma_m_model=params.sigma_m_model, threads=threads,
                                         helper_cpu=helper_cpu)
        except ProfileModelError as err:
            raise IntegrationError(f"Experiment {k}: {err}") from None
        # a given sigma_m is DIALS's constant width: the resolution term goes with it
        models.append(ProfileModel(params.sigma_b or est.sigma_b_deg,
                                   params.sigma_m or est.sigma_m_deg, params.n_sigma,
                                   n_used=est.n_used,
                                   sigma_m_rlp=None if params.sigma_m else est.sigma_m_rlp))
    return models


def _models_and_predictions(experiments, indexed, params: IntegrationParams, groups,
                            nproc: int, result: IntegrationResult):
    """(profile models, predicted table per sweep group). The prediction does not need the
    profile model: with several threads the model is estimated in one while the
    reflections are predicted by the others (on the benchmark's user sweep 0.30-0.33 and
    0.23-0.25 s of CPU in one thread); the estimate's own parts that can run side by side
    (sigma_b, the two starts of the resolution term's fit) take the cores the prediction
    leaves when it ends first (their CPU goes to ``cpu.profile_model`` too, not to the
    critical path: they run beside the estimate's own thread). Errors come in the same
    order as done one after the other: the profile model's first."""
    timings = result.timings
    estimate = not (params.sigma_b is not None and params.sigma_m is not None)

    helper_cpu: list[float] = []

    def models_timed():
        t0 = time.perf_counter()
        models = profile_models(experiments, indexed, params, threads=nproc,
                                helper_cpu=helper_cpu)
        timings["profile_model"] = time.perf_counter() - t0
        return models

    beside = estimate and nproc > 1
    pending = _Beside(timings, "profile_model", models_timed, thread=beside)
    models = None if beside else pending.result()
    t0 = time.perf_counter()
    try:
        # one thread fewer while the estimate takes one
        predicted = [_predict(experiments, params, g, nproc - 1 if beside else nproc)
                     for g in groups]
    except IntegrationError:
        pending.result()  # the profile model's error, if any, first
        raise
    timings["predict"] = time.perf_counter() - t0
    models = pending.result() if beside else models
    if helper_cpu:
        timings["cpu.profile_model"] = timings.get("cpu.profile_model", 0.0) + sum(helper_cpu)
    return models, predicted


def _predict(experiments, params: IntegrationParams, members, nproc: int) -> ReflectionTable:
    from ..prediction.rotation import detector_d_min, predict_rotation

    tables = []
    for k in members:
        e = experiments[k]
        d_corner = detector_d_min(e)
        d_min = params.d_min if params.d_min is not None else d_corner
        if params.d_max is not None and params.d_max <= d_corner:
            raise IntegrationError(
                f"d_max={params.d_max} A is beyond the detector's reach (its corners are at "
                f"{d_corner:.2f} A): no reflection can be recorded. Give a d_max above that.")
        if d_min < 0.5 * e.beam.wavelength:
            raise IntegrationError(
                f"d_min={d_min} A is below the diffraction limit lambda/2 = "
                f"{0.5 * e.beam.wavelength:.4f} A: give a d_min the detector can reach "
                f"(its corners are at {d_corner:.2f} A).")
        t = predict_rotation(e, d_min, params.d_max, nproc=nproc)
        t["id"] = np.full(len(t), k, np.int32)
        tables.append(t)
    table = ReflectionTable.concatenate(tables)
    table.experiment_identifiers = {k: experiments[k].identifier for k in members}
    if not len(table):
        raise IntegrationError(
            "No reflection is predicted on the detector within the scan for these models "
            f"and resolution limits (d_min={params.d_min}, d_max={params.d_max}): check "
            "d_min/d_max (in A) or the crystal model.")
    return table


def _shoeboxes(experiments, models, table, members):
    """Shoeboxes (x0, x1, y0, y1, z0, z1; scan-relative frames), n_sigma sigma_b and
    n_sigma sigma_m (deg) per reflection, and whether the reflecting range is inside the
    scan.

    Along the rotation the box is DIALS's, phi +- n_sigma sigma_m / |zeta|, with sigma_m
    widened at low angle (:func:`.profile_model.rocking_width_deg`, returned in place of
    sigma_m; with the resolution term when the model has one). Across the
    spot it holds the square +-2 n_sigma sigma_b about the lattice point's diffracted
    beam at every angle of that range, not only at phi: near the rotation axis the spot
    moves across the detector while it diffracts.
    """
    from . import box_kernels as B
    from . import kernels as K
    from .kabsch import kabsch_basis

    n = len(table)
    bbox = np.zeros((n, 6), np.int32)
    db, dm = np.zeros(n), np.zeros(n)
    full = np.zeros(n, bool)
    for k in members:
        sel = np.flatnonzero(table["id"] == k)
        if not len(sel):
            continue
        e, m = experiments[k], models[k]
        s1 = take_rows(table["s1"], sel)
        phi = np.rad2deg(table["xyzcal.mm"][sel, 2])
        panel = table["panel"][sel].astype(np.int64)
        a0, a1 = e.scan.array_range
        frame = table["xyzcal.px"][sel, 2]
        sb, _ = m.at_frames(e, frame)
        db[sel] = sb * m.n_sigma
        dm[sel] = rocking_width_deg(m, e, s1, frame) * m.n_sigma
        e1, e2, _, zeta = kabsch_basis(e.beam.s0, s1, e.goniometer.rotation_axis)
        # DIALS's box across the spot, +-2 n_sigma sigma_b
        # (:func:`.profile_model.bbox_from_profile`), widened below
        delta_b = SIGMA_B_MULTIPLIER * db[sel]
        b = np.empty((len(sel), 6), np.int32)
        b[:, :4] = box_xy(e, s1, e1, e2, delta_b, panel)
        zeta = np.where(np.abs(zeta) < 1e-9, 1e-9, zeta)
        z_lo, z_hi, z0, z1 = frame_range(e.scan, dm[sel], phi, zeta)
        full[sel] = (z_lo >= a0) & (z_hi <= a1)
        b[:, 4] = z0 - a0
        b[:, 5] = z1 - a0
        # the phi range actually in the box, rad, relative to phi
        lo = np.deg2rad(e.scan.angle_from_frame(b[:, 4] + a0) - phi)
        hi = np.deg2rad(e.scan.angle_from_frame(b[:, 5] + a0) - phi)
        m2 = e.goniometer.rotation_axis / np.linalg.norm(e.goniometer.rotation_axis)
        half = norms3(s1) * np.deg2rad(delta_b)
        ext = np.empty((len(sel), 5))
        B.box_extent(np.ascontiguousarray(s1), np.asarray(e.beam.s0, float), m2,
                     np.ascontiguousarray(e1), np.ascontiguousarray(e2), half, lo, hi, panel,
                     K.panel_geometry(e.detector), ext)
        good = ext[:, 4] > 0
        b[good, 0] = np.minimum(b[good, 0], np.floor(ext[good, 0]))
        b[good, 1] = np.maximum(b[good, 1], np.ceil(ext[good, 1]))
        b[good, 2] = np.minimum(b[good, 2], np.floor(ext[good, 2]))
        b[good, 3] = np.maximum(b[good, 3], np.ceil(ext[good, 3]))
        bbox[sel] = b
    # inside each reflection's panel
    size = np.array([p.image_size for p in experiments[members[0]].detector])
    size = np.take(size, table["panel"].astype(np.int64), axis=0)
    bbox[:, 0:2] = np.clip(bbox[:, 0:2], 0, size[:, :1])
    bbox[:, 2:4] = np.clip(bbox[:, 2:4], 0, size[:, 1:])
    return bbox, db, dm, full


def _shoeboxes_in_parts(experiments, models, table, members, nproc, timings):
    """:func:`_shoeboxes` of ``nproc`` parts of the table in threads (numpy releases the
    GIL on the large arrays; each part a view of consecutive rows of the columns it
    reads); their CPU goes to ``timings['cpu.setup']``, the longest part's to
    ``cpu.parallel_span``."""
    if nproc < 2 or len(table) < 2000:
        return _shoeboxes(experiments, models, table, members)

    def part(rows):
        c0 = time.thread_time()
        view = ReflectionTable({c: table[c][rows[0]:rows[-1] + 1]
                                for c in ("id", "panel", "s1", "xyzcal.mm", "xyzcal.px")})
        return _shoeboxes(experiments, models, view, members), time.thread_time() - c0

    with ThreadPoolExecutor(nproc) as ex:
        done = list(ex.map(part, _chunks(np.arange(len(table)), nproc)))
    cpu = [c for _, c in done]
    timings["cpu.setup"] = timings.get("cpu.setup", 0.0) + sum(cpu)
    timings["cpu.parallel_span"] = timings.get("cpu.parallel_span", 0.0) + max(cpu)
    return tuple(np.concatenate([d[i] for d, _ in done]) for i in range(4))


def _profile_geometry(table, e1, e2, zeta, db, dm, s0, m2):
    """Per-reflection geometry for the kernels (see :mod:`.kernels`): p, e1, e2, s1^,
    |s1| db, |s1| dn, phi, |zeta| / dm (rad)."""
    s1 = table["s1"]
    k1 = norms3(s1)
    u1 = s1 / k1[:, None]
    sin2t = norms3(np.cross(u1, s0 / np.linalg.norm(s0)))
    dbr, dmr = np.deg2rad(db), np.deg2rad(dm)
    geo = np.empty((len(table), 16))
    geo[:, 0:3] = s1 - s0
    geo[:, 3:6] = e1
    geo[:, 6:9] = np.cross(u1, e1)
    geo[:, 9:12] = u1
    geo[:, 12] = k1 * dbr
    geo[:, 13] = k1 * dmr * np.maximum(sin2t, 1e-6)
    geo[:, 14] = table["xyzcal.mm"][:, 2]
    geo[:, 15] = np.abs(zeta) / dmr
    return geo


def _sectors(u, s0, m2) -> np.ndarray:
    """The azimuthal sector (of N_SECTORS) about the rotation axis ``m2`` of the
    diffracted-beam directions ``u`` (N, 3)."""
    along = u @ m2
    perp = u - np.outer(along, m2)
    azimuth = np.arctan2(perp @ np.cross(m2, s0 / np.linalg.norm(s0)), along)
    return np.clip(((azimuth + np.pi) / (2 * np.pi) * N_SECTORS).astype(np.int64), 0,
                   N_SECTORS - 1)


def _unsmoothed(dens: np.ndarray) -> np.ndarray:
    """The reference profile ``dens`` (nz, ny, nx grid, step h) without the widening of its
    grid.

    A profile passes the grid twice: learning spreads each pixel of each reference over
    its 8 nearest grid points with trilinear weights, and fitting reads the grid back at
    each pixel by trilinear interpolation. Each step convolves the profile with a hat
    function of variance h^2/6 per axis, so the profile used in the fit is wider than the
    spots by h^2/3 in variance per axis (at h = 0.1, the default grid_size=5, on the
    nanoBragg sweep: 3 % in width across the spot, 1.5 % along the rotation), and the fit
    of a weak spot, sum p (c - B) / sum p^2, comes out high by about as much (3 %; a
    strong spot's fit is its sum and is hardly affected). Since weak spots are a larger
    share at high resolution, profile fitting drifted upwards with resolution.

    Removing a variance s^2 from a smooth profile f is, to second order,
    f - (s^2/2) f'' per axis. The filter applies that with f'' taken from the binomially
    smoothed profile, (1/4, 1/2, 1/4) * (1, -2, 1) / h^2 = (1, 0, -2, 0, 1) / (4 h^2), and
    s^2 = h^2/3: (-1/24, 0, 13/12, 0, -1/24) along each axis. Its sum is 1 and its second
    moment -h^2/3, so the profile keeps its integral and centre and loses exactly the
    grid's variance; unlike the 3-point inverse (-1/6, 4/3, -1/6) it does not amplify the
    references' noise at the grid's finest scale (gain 1 there instead of 5/3), whose
    negative half in the tails would otherwise take a share of the normalisation from
    the peak and bias strong fits low (1 % on gonio's simulated sweeps)."""
    from scipy.ndimage import convolve1d

    for axis in range(3):
        dens = convolve1d(dens, UNSMOOTH, axis=axis, mode="constant")
    return dens


# -- the block loop ------------------------------------------------------------------------


class _Chunk:
    """Shoebox pixels (counts and mask codes) of the reflections that started in one
    block, packed; ``off[r]`` (shared by all chunks) is where shoebox r starts in its
    chunk. ``live``: still being recorded; ``pending``: complete, waiting for their
    background; ``learning``: references waiting to be added to the reference profiles
    (also in ``waiting``); ``waiting``: waiting for profile fitting. A chunk is dropped
    when nothing is left in it, and compacted when most of it is free, so memory follows
    the reflections in flight, not the sweep."""

    def __init__(self, rows, sizes, off):
        starts = np.concatenate([[0], np.cumsum(sizes[rows])]).astype(np.int64)
        off[rows] = starts[:-1]
        total = int(starts[-1])
        self.size = total
        self.data = np.empty(total, np.float32)
        self.mask = np.zeros(total, np.uint8)
        self.live = rows
        self.pending = self.learning = self.waiting = np.zeros(0, np.int64)

    def in_use(self, sizes) -> int:
        return int(sizes[self.live].sum() + sizes[self.pending].sum()
                   + sizes[self.waiting].sum())

    def compacted(self, sizes, off) -> _Chunk:
        """A copy holding only the reflections still in use."""
        from .box_kernels import repack

        rows = np.concatenate([self.live, self.pending, self.waiting])
        old = off.copy()
        new = _Chunk(rows, sizes, off)
        repack(rows, old, off, sizes, self.data, new.data, self.mask, new.mask)
        new.live, new.pending, new.learning, new.waiting = \
            self.live, self.pending, self.learning, self.waiting
        return new


class _ThreadCpu:
    """CPU seconds per phase summed over the threads that ran it (``time.thread_time``),
    for :attr:`IntegrationResult.timings` (``cpu.<phase>``; the wall seconds of the
    phase's tasks, summed, under ``<phase>``): unlike wall times these do not depend on
    what else the machine runs. ``cpu.parallel_span``: what the parallel sections would
    take on ``nproc`` idle cores, from their tasks' CPU seconds (:func:`_makespan`);
    with the serial part (``cpu.serial``: the calling thread's CPU outside them) it is the
    step's critical path, its wall time on idle cores."""

    def __init__(self, timings: dict, nproc: int):
        self.timings = timings
        self.nproc = nproc
        self._lock = threading.Lock()

    def add(self, phase: str, seconds: float, wall: float = 0.0) -> None:
        with self._lock:
            key = "cpu." + phase
            self.timings[key] = self.timings.get(key, 0.0) + seconds
            if wall:
                self.timings[phase] = self.timings.get(phase, 0.0) + wall

    def section(self, tasks, executor) -> None:
        """Run ``tasks`` ((phase, fn, argument), ...) as one parallel section: in
        ``executor``'s threads when there is one, each thread taking the next task when
        done (:class:`gonio.core.threads.TakeInTurn`: no barrier between phases), else
        in the calling thread; timed. The first error stops the section's threads taking
        further tasks and is raised."""
        def call(task):
            phase, fn, arg = task
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(arg)
            spent = time.thread_time() - c0
            self.add(phase, spent, time.perf_counter() - t0)
            return spent

        if executor is None:
            spent = [call(t) for t in tasks]
        else:
            spent = [0.0] * len(tasks)

            def run(item):
                spent[item[0]] = call(item[1])

            TakeInTurn(enumerate(tasks), run, executor, min(self.nproc, len(tasks))).wait()
        if spent:
            self.add("parallel_span", _makespan(spent, self.nproc))
            if executor is None:
                self.add("in_calling_thread", sum(spent))


class _Beside:
    """``fn()`` run in a thread of its own while the calling thread goes on (``thread``),
    else in the calling thread when :meth:`result` first asks for it. :meth:`result`
    returns its value or raises its error; a thread's CPU goes to
    ``timings['cpu.<phase>']``, and the part of it beyond the calling thread's CPU over
    the same time (what it adds to the critical path) to ``timings['cpu.parallel_span']``."""

    def __init__(self, timings: dict, phase: str, fn, thread: bool):
        self.timings, self.phase, self.fn = timings, phase, fn
        self._done = None
        self._thread = None
        if thread:
            self._c0 = time.thread_time()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        c0 = time.thread_time()
        try:
            self._done = (True, self.fn())
        except BaseException as e:  # raised in the calling thread by result()
            self._done = (False, e)
        self.cpu = time.thread_time() - c0

    def result(self):
        if self._thread is None:
            if self._done is None:
                self._run()
        else:
            self._thread.join()
            if self._c0 is not None:  # accounted once
                meanwhile, self._c0 = time.thread_time() - self._c0, None
                t = self.timings
                t["cpu." + self.phase] = t.get("cpu." + self.phase, 0.0) + self.cpu
                t["cpu.parallel_span"] = t.get("cpu.parallel_span", 0.0) + max(
                    self.cpu - meanwhile, 0.0)
        ok, value = self._done
        if not ok:
            raise value
        return value


def _makespan(seconds, nproc: int) -> float:
    """How long tasks of ``seconds`` (in order) take on ``nproc`` idle cores when each
    core takes the next task as soon as it is free (as the section's threads do): the
    section's span from its tasks' CPU, whatever else the machine ran meanwhile (on a
    loaded machine the threads' own shares follow the load, not the work)."""
    free = [0.0] * nproc
    for t in seconds:
        heapq.heapreplace(free, free[0] + t)
    return max(free)


def _nearest_ring_with_references(ring_w: np.ndarray, ring: int) -> int | None:
    """The resolution ring nearest to ``ring`` (the inner one of two as near) whose
    references so far (``ring_w``: weights per ring and sector) are not all zero."""
    has = ring_w.reshape(N_RINGS, -1).any(axis=1)
    found = np.flatnonzero(has)
    if not len(found):
        return None
    return int(found[np.argmin(np.abs(found - ring) * 2 + (found > ring))])


def _after(event: threading.Event, fn):
    """``fn`` waiting for ``event`` first (a task that needs what another task makes)."""
    def run(arg):
        event.wait()
        fn(arg)
    return run


def _then_set(fn, event: threading.Event):
    """``fn`` setting ``event`` when done (or failed: its error stops the section)."""
    def run(arg):
        try:
            fn(arg)
        finally:
            event.set()
    return run


def _chunks(rows: np.ndarray, n: int) -> list[np.ndarray]:
    """``rows`` in at most ``n`` consecutive parts, none empty, the first ones one longer
    where they cannot all be as long (``np.array_split``'s parts, as views, without its
    overhead: it is called ~500 times a run by the calling thread)."""
    k = max(1, min(n, len(rows)))
    q, r = divmod(len(rows), k)
    ends = [i * q + min(i, r) for i in range(k + 1)]
    return [rows[a:b] for a, b in zip(ends[:-1], ends[1:]) if b > a]


def _integrate_sweep(experiments, members, models, table, reader, params: IntegrationParams,
                     nproc: int, progress, result: IntegrationResult,
                     masks=None) -> ReflectionTable:
    """Integrate the reflections ``table`` predicted for the experiments ``members`` that
    share one sweep."""
    from . import box_kernels as B
    from . import kernels as K
    from .kabsch import kabsch_basis

    expt = experiments[members[0]]
    scan, detector = expt.scan, expt.detector
    timings = result.timings
    t0 = time.perf_counter()
    bbox, db, dm, full = _shoeboxes_in_parts(experiments, models, table, members, nproc,
                                             timings)
    keep = np.flatnonzero((bbox[:, 1] > bbox[:, 0]) & (bbox[:, 3] > bbox[:, 2])
                          & (bbox[:, 5] > bbox[:, 4]))
    order = keep[np.lexsort((bbox[keep, 5], bbox[keep, 4]))]  # one copy of the table
    table, bbox, db, dm, full = table.select(order), take_rows(bbox, order), db[order], \
        dm[order], full[order]
    n = len(table)
    s0 = expt.beam.s0
    m2 = expt.goniometer.rotation_axis / np.linalg.norm(expt.goniometer.rotation_axis)
    e1, e2, _, zeta = kabsch_basis(s0, table["s1"], m2)
    panel = table["panel"].astype(np.int64)
    a0 = scan.array_range[0]
    xyzc = table["xyzcal.px"].copy()
    xyzc[:, 2] -= a0
    phi0, osc = float(scan.angle_from_frame(a0)), float(scan.oscillation[1])
    # pixel volume in normalised Kabsch coordinates (c1/db, c2/db, c3/dm) per reflection,
    # with several threads in one of its own beside the rest of the set-up
    jacobians = _Beside(timings, "setup", lambda: _jacobians(
        detector, table, e1, e2, zeta, osc, db, dm, panel), thread=nproc > 1)
    rgeo = _profile_geometry(table, e1, e2, zeta, db, dm, s0, m2)
    beam = np.concatenate([s0, m2, [np.linalg.norm(s0)]])
    scan_rad = np.deg2rad([phi0, osc])
    geo = _detector_arrays(detector, masks)
    sizes = ((bbox[:, 1] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 2])
             * (bbox[:, 5] - bbox[:, 4])).astype(np.int64)
    n_images = scan.num_images
    timings["setup"] = timings.get("setup", 0.0) + time.perf_counter() - t0

    # reference-profile regions: resolution rings x azimuthal sectors x scan ranges
    G = params.grid_size
    hxy = 1.0 / (2 * G)  # the grid is twice as fine as DIALS's: smoothing widens profiles
    nxy = nz = 2 * int(round(GRID_EXTENT / hxy)) + 1
    n_blocks_scan = max(1, int(math.ceil(n_images * abs(osc) / params.scan_step - 1e-9)))
    sblock = np.clip(np.floor(xyzc[:, 2] * abs(osc) / params.scan_step), 0,
                     n_blocks_scan - 1).astype(np.int64)
    u = np.ascontiguousarray(rgeo[:, 9:12])  # s1 / |s1|
    two_theta = np.arccos(np.clip(u @ (s0 / np.linalg.norm(s0)), -1, 1))
    ring = np.searchsorted(np.quantile(two_theta, np.arange(1, N_RINGS) / N_RINGS), two_theta)
    sector = _sectors(u, s0, m2) if N_SECTORS > 1 else 0
    per_block = N_RINGS * N_SECTORS
    region = sblock * per_block + ring * N_SECTORS + sector
    n_regions = n_blocks_scan * per_block
    # accumulators for the scan ranges still open, reused in turn (a range is complete
    # before the one SLOTS later gets references), and running sums per ring
    slot_region = (sblock % SLOTS) * per_block + ring * N_SECTORS + sector
    acc = np.zeros((SLOTS * per_block, nz, nxy, nxy), np.float32)
    wsum = np.zeros_like(acc)
    nref_slot = np.zeros(SLOTS * per_block, np.int64)
    nref = np.zeros(n_regions, np.int64)
    ring_acc = np.zeros((per_block, nz, nxy, nxy))
    ring_w = np.zeros_like(ring_acc)
    profiles = np.zeros((n_regions, nz, nxy, nxy), np.float32)
    prof_ok = np.zeros(n_regions, bool)
    prof_index = np.full(n, -1, np.int64)
    depth_ok = (bbox[:, 5] - bbox[:, 4]) * abs(osc) <= params.scan_step
    candidate = full & (np.abs(zeta) >= MIN_REFERENCE_ZETA) & depth_ok
    done_frame = np.zeros(n_blocks_scan, np.int64)
    np.maximum.at(done_frame, sblock[candidate], bbox[candidate, 5])
    finalized = np.zeros(n_blocks_scan, bool)

    out_f = np.full((n, 12), np.nan)
    bg_coef = np.zeros((n, 4))  # background model per reflection (box_kernels.process)
    out_i = np.zeros((n, 6), np.int64)
    out_prf = np.full((n, 5), np.nan)
    out_prf[:, 4] = 1.0
    overlapped = np.zeros(n, bool)
    overloaded = np.zeros(n, bool)
    reference = np.zeros(n, bool)
    alg = 0 if params.background_algorithm == "glm" else 1
    npar = {"constant3d": 1, "linear3d": 4}[params.simple_model]
    outlier = {"null": 0, "nsigma": 1, "truncated": 2, "tukey": 3, "normal": 4}[
        params.simple_outlier]

    block = params.block_size or max(4, min(20, int(math.ceil(1.0 / max(abs(osc), 1e-6)))))
    block = int(block)
    # the extraction's per-pixel scratch, one set per thread: a frame's task takes a free one
    scratch: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(nproc):
        scratch.put((K.pixel_state(geo["static_ok"]),
                     np.full(geo["n_pixels"], np.inf, np.float32),
                     np.full(geo["n_pixels"], -1, np.int32),
                     np.empty(geo["n_pixels"], np.int32), np.zeros(1, np.int64)))
    signal = [False]  # some pixel > 0 on an image read so far (then no image is searched)
    off = np.zeros(n, np.int64)
    jac, pix_deg = jacobians.result()
    fg_pad = np.sqrt(0.5) * pix_deg / db
    chunks: list[_Chunk] = []
    executor = ThreadPoolExecutor(nproc) if nproc > 1 else None

    cpu = _ThreadCpu(timings, nproc)

    def blocks_complete(upto_frame, last):
        """The scan ranges not finalised yet whose references are all learnt once the
        frames to ``upto_frame`` are (all, if ``last``); marked finalised here, made by
        :func:`finalize_blocks`."""
        now = [j for j in range(n_blocks_scan)
               if not finalized[j] and (last or done_frame[j] <= upto_frame)]
        finalized[now] = True
        return now

    def finalize_blocks(now):
        for j in now:
            slots = (j % SLOTS) * per_block + np.arange(per_block)
            nref[j * per_block:(j + 1) * per_block] = nref_slot[slots]
            ring_acc[:] += acc[slots]
            ring_w[:] += wsum[slots]
            for k in range(per_block):
                g, q = j * per_block + k, slots[k]
                ring_k = k // N_SECTORS
                same = slots[ring_k * N_SECTORS:(ring_k + 1) * N_SECTORS]
                if nref_slot[q] >= params.min_reference_spots:
                    a, w = acc[q], wsum[q]
                elif nref_slot[same].sum() >= params.min_reference_spots:
                    a, w = acc[same].sum(0), wsum[same].sum(0)
                elif ring_w[k].any():
                    a, w = ring_acc[k], ring_w[k]
                else:
                    # no reference in this ring yet (no signal at this resolution): the
                    # nearest ring's, as DIALS fits every reflection with the profile of
                    # the nearest grid point that has one
                    near = _nearest_ring_with_references(ring_w, ring_k)
                    if near is None:
                        continue
                    a = ring_acc[near * N_SECTORS:(near + 1) * N_SECTORS].sum(0)
                    w = ring_w[near * N_SECTORS:(near + 1) * N_SECTORS].sum(0)
                dens = np.where(w > 1e-3 * w.max(), a / np.where(w > 0, w, 1), 0.0)
                # the mean of the references as it is, tails and their noise included:
                # a threshold on the density (DIALS's 2 % of the peak) cuts the tails the
                # summation keeps, and clipping the negative noise leaves its positive
                # half as a floor that takes a share from the peak; either biases the fit
                # of weak spots (by several % in the outer shells)
                dens = _unsmoothed(dens)
                total = dens.sum() * hxy * hxy * hxy
                if total > 0:
                    profiles[g] = dens / total
                    prof_ok[g] = True
            acc[slots] = 0.0
            wsum[slots] = 0.0
            nref_slot[slots] = 0
        prof_index[:] = np.where(prof_ok[region], region, -1)

    var_bg = out_f[:, 1]

    def extract(item):
        """Read frame f and cut it into the shoeboxes ``live`` ((chunk, rows), ...)."""
        f, live = item
        own_scratch = scratch.get()
        try:
            state, best, own, claimed, n_claimed = own_scratch
            ta, ca = time.perf_counter(), time.thread_time()
            img = _read(reader, f, scan)
            if not signal[0] and img.size and img.max() > 0:
                signal[0] = True
            cpu.add("read", time.thread_time() - ca, time.perf_counter() - ta)
            for pass_ in range(2):
                cp = time.thread_time()
                for c, act in live:
                    K.extract_frame(pass_, f, img, geo["tmin"], geo["tmax"], act, panel, bbox,
                                    rgeo, beam, scan_rad, fg_pad, off, geo["pix_off"],
                                    geo["pnx"], geo["dirs"], state, best, own, claimed,
                                    n_claimed, c.data, c.mask, overlapped, overloaded)
                cpu.add(("claims", "copy")[pass_], time.thread_time() - cp)
            cp = time.thread_time()
            K.reset_claims(state, claimed, n_claimed)
            cpu.add("reset", time.thread_time() - cp)
        finally:
            scratch.put(own_scratch)

    def proc(item):
        c, part = item
        most = max(int(sizes[part].max()), 1)
        B.process(part, bbox, off, c.data, c.mask, geo["gain"], panel, alg,
                  params.glm_tuning_constant, npar, outlier, params.nsigma_lower,
                  params.nsigma_upper, params.tukey_multiplier, bg_coef, out_f, out_i,
                  np.empty(most), np.empty((most if alg else 1, 4)), np.empty(most),
                  np.empty((most, 3), np.int64), np.zeros(4 * GLM_BINS, np.int64),
                  np.empty(GLM_BINS), np.empty(GLM_BINS))

    def learn(items):
        for c, part in items:
            K.accumulate_reference(part, slot_region, jac, out_f[:, 2], bbox, off, c.data,
                                   c.mask, bg_coef, geo["gain"], rgeo, beam, scan_rad, panel,
                                   geo["pix_off"], geo["pnx"], geo["dirs"], hxy, hxy,
                                   acc.reshape(-1), wsum.reshape(-1), nz, nxy, nref_slot)

    def fit(item):
        c, part = item
        most = int(sizes[part].max())
        K.fit_profiles(part, prof_index, profiles.reshape(-1), nz, nxy, jac, bbox, off, c.data,
                       c.mask, bg_coef, geo["gain"], rgeo, beam, scan_rad, panel,
                       geo["pix_off"], geo["pnx"], geo["dirs"], hxy, hxy, var_bg,
                       MIN_PROFILE_FRACTION, out_prf, np.empty(most), np.empty(most),
                       np.empty(most))

    def compact(i):
        chunks[i] = chunks[i].compacted(sizes, off)

    def fit_tasks(last):
        """The waiting reflections whose reference profiles are complete, in parts."""
        tasks = []
        for c in chunks:
            if not len(c.waiting):
                continue
            done = finalized[sblock[c.waiting]] | last
            if not done.any():
                continue
            tasks += [("fit", fit, (c, part)) for part in _chunks(c.waiting[done], nproc * 2)]
            c.waiting = c.waiting[~done]
        return tasks

    # A pipeline over the blocks of frames: section s extracts block s while the
    # reflections complete after block s - 1 get their background and summation, the
    # references of block s - 2 are learnt, and the reflections whose reference profiles
    # are complete are fitted, all in one parallel section (each thread takes the next
    # task when done: no barrier between phases). Every phase works on its own
    # reflections; learning and finalising run in block order as one after the other
    # would (the same references in the same order: the same profiles), so the result
    # does not depend on nproc.
    starts = list(range(0, n_images, block))
    n_blocks = len(starts)
    ends = [min(f0 + block, n_images) for f0 in starts]
    next_start = 0
    try:
        for s in range(n_blocks + 3):
            # after section s - 1: the background of block s - 2's reflections is done
            for c in chunks:
                if not len(c.pending):
                    continue
                done = c.pending
                isig = out_f[done, 2] / np.sqrt(np.maximum(out_f[done, 3], 1e-12))
                lost = out_i[done, 5] / np.maximum(out_i[done, 5] + out_i[done, 2], 1)
                ref = done[candidate[done] & (lost <= REFERENCE_MAX_LOST)
                           & (out_i[done, 4] == 0) & (isig >= REFERENCE_MIN_I_OVER_SIGMA)]
                reference[ref] = True
                if params.profile_fitting:
                    c.learning = ref
                    c.waiting = np.concatenate([c.waiting, done])
                c.pending = np.zeros(0, np.int64)
            # ... block s - 3's references are learnt: the scan ranges they complete get
            # their profiles (below)
            complete = blocks_complete(ends[s - 3], ends[s - 3] >= n_images) \
                if params.profile_fitting and 0 <= s - 3 < n_blocks else []
            # ... block s - 1 is extracted: the reflections it completed wait for their
            # background
            if 0 <= s - 1 < n_blocks:
                for c in chunks:
                    if len(c.live):
                        done = bbox[c.live, 5] <= ends[s - 1]
                        c.pending = c.live[done]
                        c.live = c.live[~done]
                if progress:
                    progress(ends[s - 1], n_images)
            # a chunk is dropped when nothing is left in it; one mostly free is compacted:
            # here, in threads, if it is still being filled (the extraction writes it),
            # else in the section (below)
            chunks[:] = [c for c in chunks if len(c.live) or len(c.pending) or len(c.waiting)]
            cpu.section([("fit", compact, i) for i, c in enumerate(chunks)
                         if (len(c.live) or len(c.pending)) and c.in_use(sizes) * 2 <= c.size],
                        executor)
            tasks = []
            if params.profile_fitting:
                # one task per set of rings, over every chunk: no two add to the same
                # profile, and each profile gets its references in the same order
                refs = [(c, c.learning) for c in chunks if len(c.learning)]
                for k in range(nproc):
                    group = [(c, ref[ring[ref] % nproc == k]) for c, ref in refs]
                    group = [(c, g) for c, g in group if len(g)]
                    if group:
                        tasks.append(("learn", learn, group))
                for c, _ in refs:
                    c.learning = np.zeros(0, np.int64)
            made = None
            if complete:
                # the profiles are made by the section's first task, and its fits wait for
                # them; in the calling thread first if this section's references add to
                # the accumulators of one of those scan ranges (they are reused in turn)
                learnt = {int(j) % SLOTS for _, ref in refs for j in np.unique(sblock[ref])}
                if learnt & {j % SLOTS for j in complete}:
                    finalize_blocks(complete)
                else:
                    made = threading.Event()
            if s < n_blocks:
                f0, f1 = starts[s], ends[s]
                stop = int(np.searchsorted(bbox[:, 4], f1))  # the boxes start in order
                if stop > next_start:
                    rows = np.arange(next_start, stop, dtype=np.int64)
                    # neighbours on the detector one after another: cache-friendly extraction
                    rows = rows[np.lexsort((bbox[rows, 0], bbox[rows, 2], panel[rows]))]
                    chunks.append(_Chunk(rows, sizes, off))
                next_start = stop
                result.peak_live_pixels = max(result.peak_live_pixels,
                                              sum(c.size for c in chunks))
                live = [(c, c.live) for c in chunks if len(c.live)]
                tasks += [("extract", extract, (f, live)) for f in range(f0, f1)]
            tasks += [("background", proc, (c, part)) for c in chunks if len(c.pending)
                      for part in _chunks(c.pending, nproc * 2)]
            if params.profile_fitting:
                tasks += [(phase, _after(made, fn) if made else fn, arg)
                          for phase, fn, arg in fit_tasks(s == n_blocks + 2)]
            # the chunks only waiting for fits, none of them in this section, mostly free:
            # compacted in the section (no other task reads them), counted with the fits
            busy = {id(c) for phase, _, arg in tasks if phase != "extract"
                    for c, _ in (arg if phase == "learn" else [arg])}
            tasks += [("fit", compact, i) for i, c in enumerate(chunks)
                      if id(c) not in busy and not (len(c.live) or len(c.pending))
                      and c.in_use(sizes) * 2 <= c.size]
            if made:
                tasks.insert(0, ("learn", _then_set(finalize_blocks, made), complete))
            cpu.section(tasks, executor)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    count = np.maximum(np.bincount(region, minlength=n_regions), 1)
    where = np.stack([np.bincount(region, xyzc[:, i], minlength=n_regions) / count
                      for i in range(3)], axis=1)
    where[:, 2] += scan.image_range[0] - 0.5  # frame -> image number
    result.reference_profiles.append((profiles, nref, hxy, where))
    if not signal[0]:
        raise IntegrationError(
            f"Every pixel of all {n_images} images of {reader_name(reader)} is zero (or "
            "below the trusted range): there is nothing to integrate. Check that the images "
            "are the right files (re-import them if they were overwritten).")
    return _columns(table, bbox, out_f, out_i, out_prf, overlapped, overloaded, reference,
                    full, a0, dm, params)


def reference_summary(result: IntegrationResult, max_blocks: int = 3,
                      max_rings: int = 4) -> dict:
    """A compact, JSON-ready view of the reference profiles (Kabsch (2010)) learnt per
    resolution ring and scan range: for at most ``max_blocks`` scan ranges (first, middle,
    last) x ``max_rings`` rings of each sweep, the mean position (x, y px, image) of the
    reflections the profile fits, the number of references that made it, its e1-e2
    profile summed over e3 (binomially smoothed, then every second grid point: rows e2,
    columns e1) and its e3 (rocking) profile summed over e1 and e2, each in integer percent
    of its peak (sums, not central slices: a grid learnt from few references has empty
    points). Grid steps are in the normalised coordinates where the foreground ends at 1."""
    from scipy.ndimage import convolve1d

    per_block = N_RINGS * N_SECTORS
    refs, step = [], None
    for sweep, (profiles, nref, hxy, where) in enumerate(result.reference_profiles):
        step = hxy
        n_blocks = len(profiles) // per_block
        blocks = np.unique(np.linspace(0, n_blocks - 1, min(max_blocks, n_blocks)).round())
        rings = np.unique(np.linspace(0, N_RINGS - 1, min(max_rings, N_RINGS)).round())
        for j in blocks.astype(int):
            for ring in rings.astype(int):
                for sector in range(N_SECTORS):
                    g = j * per_block + ring * N_SECTORS + sector
                    p = profiles[g]
                    e12, e3 = p.sum(0), p.sum((1, 2))
                    if not (e12.max() > 0 and e3.max() > 0):
                        continue
                    c = e12.shape[0] // 2
                    for axis in (0, 1):
                        e12 = convolve1d(e12, [0.25, 0.5, 0.25], axis=axis, mode="constant")
                    e12 = e12[c % 2::2, c % 2::2] * (100 / e12.max())
                    refs.append({
                        "sweep": sweep, "scan_block": int(j), "ring": int(ring),
                        "sector": sector, "n_reference": int(nref[g]),
                        "x": round(float(where[g, 0]), 1), "y": round(float(where[g, 1]), 1),
                        "image": round(float(where[g, 2]), 1),
                        "slice": np.round(e12).astype(int).tolist(),
                        "rocking": np.round(e3 * (100 / e3.max())).astype(int).tolist()})
    return {"n_rings": N_RINGS, "slice_step": None if step is None else step * 2,
            "rocking_step": step, "references": refs}


def reader_name(reader) -> str:
    t = getattr(reader, "template", "") or ""
    return t or "the sweep"


def _read(reader, f, scan) -> np.ndarray:
    try:
        images = reader.read(f)
    except (FileNotFoundError, OSError) as e:
        name = getattr(e, "filename", None) or str(e)
        raise IntegrationError(
            f"Image {scan.image_range[0] + f} could not be read ({name}): the file may have "
            "been moved or deleted since the images were imported. Put it back (or import "
            "the images from their new place, then index and refine again) and run "
            "integrate again.") from None
    if not isinstance(images, (tuple, list)):
        images = (images,)
    dtype = _frame_dtype(images)
    if len(images) == 1:
        return _as_frame(images[0], dtype).reshape(-1)
    return np.concatenate([_as_frame(a, dtype).reshape(-1) for a in images])


def _frame_dtype(images) -> type:
    """The type :func:`.kernels.extract_frame` gets a frame in: int32 for integer counts
    (the decoders' own type for CBF, so most frames are passed as they are decoded, with
    no conversion pass over the image; the kernel stores them in float32 shoeboxes, exact
    below 2^24 as the float32 conversion was), float32 for anything else (one
    specialisation of the kernel each, the float32 one compiled when first reached)."""
    kinds = {np.asarray(a).dtype for a in images}
    if all(k.kind in "iu" and k.itemsize <= 4 for k in kinds):
        return np.int32
    return np.float32


def _as_frame(a, dtype) -> np.ndarray:
    """One panel's pixels as a contiguous array of ``dtype`` (:func:`_frame_dtype`);
    uint32 counts above 2^31 - 1 (Eiger's markers of dead pixels, 2^32 - 1) are clipped
    to it, still above any trusted range (in the same pass as the conversion)."""
    a = np.asarray(a)
    if dtype is np.int32 and a.dtype == np.uint32:
        return np.minimum(a, np.iinfo(np.int32).max, out=np.empty(a.shape, np.int32),
                          casting="unsafe")
    return np.ascontiguousarray(a, dtype=dtype)


def _jacobians(detector, table, e1, e2, zeta, osc, db, dm, panel):
    """|d(u, v, t) / d(x, y, z)| at each reflection's predicted position: the volume of one
    pixel of one image in normalised coordinates (:mod:`.kernels`), and the pixel's size
    there in deg (square root of its solid angle in the c1, c2 plane)."""
    from .kabsch import kabsch_c12

    jac2 = np.zeros(len(table))
    for ip, p in enumerate(detector):
        sel = np.flatnonzero(panel == ip)
        if not len(sel):
            continue
        base = take_rows(table["xyzcal.px"][:, :2], sel)
        s1, e1_p, e2_p = take_rows(table["s1"], sel), take_rows(e1, sel), take_rows(e2, sel)
        # (c1, c2) at the pixel's corner and one pixel along fast and slow
        (c1, c2), (c1_x, c2_x), (c1_y, c2_y) = (
            kabsch_c12(p.lab_coord(p.pixel_to_millimeter(base + [dx, dy])), s1, e1_p, e2_p)
            for dx, dy in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
        jac2[sel] = np.abs((c1_x - c1) * (c2_y - c2) - (c1_y - c1) * (c2_x - c2))
    return jac2 * np.abs(zeta * osc) / (db * db * dm), np.sqrt(jac2)


def _columns(table, bbox, out_f, out_i, out_prf, overlapped, overloaded, reference, full, a0,
             dm, params) -> ReflectionTable:
    t = table
    b = bbox.copy()
    b[:, 4:] += a0
    t["bbox"] = b
    t["background.mean"] = out_f[:, 0]
    t["background.sum.value"] = out_f[:, 10]
    t["background.sum.variance"] = out_f[:, 11]
    t["intensity.sum.value"] = out_f[:, 2]
    t["intensity.sum.variance"] = out_f[:, 3]
    xyz = out_f[:, 4:7].copy()
    xyz[:, 2] += a0
    t["xyzobs.px.value"] = xyz
    t["xyzobs.px.variance"] = out_f[:, 7:10].copy()
    t["num_pixels.valid"] = out_i[:, 0].astype(np.int32)
    t["num_pixels.background"] = out_i[:, 1].astype(np.int32)
    t["num_pixels.foreground"] = out_i[:, 2].astype(np.int32)
    t["num_pixels.background_used"] = out_i[:, 3].astype(np.int32)
    flags = t["flags"]
    ok_sum = (out_i[:, 4] == 0) & np.isfinite(out_f[:, 2]) & (out_f[:, 3] > 0)
    flags[ok_sum] |= np.uint64(Flags.integrated_sum)
    flags[out_i[:, 4] == 1] |= np.uint64(Flags.failed_during_background_modelling)
    flags[(out_i[:, 4] == 2) | (out_i[:, 4] == 3)] |= np.uint64(Flags.failed_during_summation)
    flags[out_i[:, 4] == 3] |= np.uint64(Flags.foreground_includes_bad_pixels)
    flags[overlapped] |= np.uint64(Flags.overlapped_fg)
    flags[overloaded] |= np.uint64(Flags.overloaded)
    flags[reference] |= np.uint64(Flags.reference_spot | Flags.used_in_modelling)
    if params.profile_fitting:
        t["intensity.prf.value"] = out_prf[:, 0]
        t["intensity.prf.variance"] = out_prf[:, 1]
        t["profile.correlation"] = out_prf[:, 2]
        # a fit far from the summed intensity (when there is one) is a profile that does not
        # describe the spot (e.g. near the rotation axis): not integrated_prf, as DIALS
        # leaves failed fits
        with np.errstate(invalid="ignore", divide="ignore"):
            misfit = ok_sum & (np.abs(out_prf[:, 0] - out_f[:, 2])
                               > MAX_PRF_SUM_NSIGMA * np.sqrt(out_f[:, 3]))
        out_prf[misfit & (out_prf[:, 4] == 0), 4] = 4.0
        ok_prf = (out_prf[:, 4] == 0) & (out_prf[:, 1] > 0) & np.isfinite(out_prf[:, 0]) \
            & (out_i[:, 4] != 1)
        flags[ok_prf] |= np.uint64(Flags.integrated_prf)
        flags[(out_prf[:, 4] != 0) & ok_sum] |= np.uint64(Flags.failed_during_profile_fitting)
        bad_ref = np.isnan(out_prf[:, 3]) & (out_prf[:, 4] != 0)
        flags[bad_ref & ok_sum] |= np.uint64(Flags.bad_reference)
    t["flags"] = flags
    t["_full"] = full
    t["_sigma_m_eff"] = dm / params.n_sigma
    return t


# -- top level -----------------------------------------------------------------------------


def _add_corrections(experiments, table, models) -> None:
    """Columns d, lp, qe (when the sensor absorbs: mu > 0) and partiality."""
    from .corrections import d_spacing, has_qe, lp, partiality_of_width, qe

    n = len(table)
    cols = {"d": np.zeros(n), "lp": np.zeros(n), "partiality": np.zeros(n)}
    want_qe = any(has_qe(e) for e in experiments)
    if want_qe:
        cols["qe"] = np.ones(n)
    for k, e in enumerate(experiments):
        sel = np.flatnonzero(table["id"] == k)
        if not len(sel):
            continue
        s1 = take_rows(table["s1"], sel)
        cols["d"][sel] = d_spacing(e, take_rows(table["miller_index"], sel))
        cols["lp"][sel] = lp(e, s1)
        # the widths the boxes were made with (resolution term included)
        cols["partiality"][sel] = partiality_of_width(e, s1, table["xyzcal.px"][sel, 2],
                                                      take_rows(table["bbox"], sel),
                                                      table["_sigma_m_eff"][sel])
        if want_qe and has_qe(e):
            cols["qe"][sel] = qe(e, s1, table["panel"][sel])
    for name, v in cols.items():
        table[name] = v


def _sweep_groups(experiments) -> list[list[int]]:
    groups: dict = {}
    for k, e in enumerate(experiments):
        ref = e.imageset
        key = (ref.template, tuple(ref.paths), tuple(ref.single_file_indices)) if ref else k
        groups.setdefault(key, []).append(k)
    return list(groups.values())


def check_inputs(experiments) -> None:
    """Errors for what integrate cannot start from: no crystal, no sweep, missing images."""
    if not experiments or not any(e.crystal is not None for e in experiments):
        raise IntegrationError(
            "There is nothing to integrate yet: integration needs crystal models. Run index "
            "(and refine) first.")
    for k, e in enumerate(experiments):
        if e.crystal is None:
            raise IntegrationError(
                f"Experiment {k} has no crystal model: index it (and refine) first.")
        if not e.is_sweep:
            raise IntegrationError(
                f"Experiment {k} is not a rotation sweep (no scan or goniometer); gonio "
                "integrates rotation data only.")


def check_image_files(reader, scan) -> None:
    """Name the first image file that is no longer where the import found it."""
    if not hasattr(reader, "path"):
        return
    seen = set()
    for i in range(len(reader)):
        p = reader.path(i)
        if p in seen:
            continue
        seen.add(p)
        if not os.path.exists(p):
            raise IntegrationError(
                f"Image {scan.image_range[0] + i} ({p}) is missing: it was moved or deleted "
                "since the images were imported. Put the file back, or import the images "
                "from their new place (then index and refine again), and run integrate "
                "again.")


def integrate(experiments, indexed, params: IntegrationParams | None = None, progress=None,
              readers=None, masks=None):
    """Integrate every sweep: (experiments with the profile model set, integrated table,
    IntegrationResult). ``readers[k]`` reads the images of experiments[k] (default: an
    ImageSequenceReader per image set). ``progress(done, total)`` after each block.
    ``masks``: a user mask per panel (slow, fast; True = good pixel, generate_mask)."""
    from ..formats.reader import ImageSequenceReader
    from ..refinement.blas import one_thread
    from .pixel_directions import pixel_directions

    params = params or IntegrationParams()
    params.validate()
    experiments = ExperimentList(experiments)
    check_inputs(experiments)
    groups = _sweep_groups(experiments)
    if readers is None:
        readers = [None] * len(experiments)
        for g in groups:
            rd = ImageSequenceReader(experiments[g[0]])
            for k in g:
                readers[k] = rd
    for g in groups:
        check_image_files(readers[g[0]], experiments[g[0]].scan)
    nproc = params.effective_nproc()
    result = IntegrationResult(nproc=nproc)
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    # the threads are integrate's own (nproc): BLAS's would crowd the same cores
    with one_thread():
        # the detectors' pixel directions (kept per panel geometry: computed by the first
        # integrate of a session, ~0.3 s per 1M pixels) beside the profile model and the
        # prediction
        directions = _Beside(result.timings, "setup", lambda: [
            pixel_directions(p) for g in groups for p in experiments[g[0]].detector],
            thread=nproc > 1)
        models, predicted = _models_and_predictions(experiments, indexed, params, groups, nproc,
                                                    result)
        directions.result()
        result.profile_models = models
        tables = []
        total = sum(experiments[g[0]].scan.num_images for g in groups)
        done = [0]
        for g in groups:
            def prog(d, n, base=done[0]):
                if progress:
                    progress(base + d, total)
            tables.append(_integrate_sweep(experiments, g, models, predicted.pop(0),
                                           readers[g[0]], params, nproc, prog, result, masks))
            done[0] += experiments[g[0]].scan.num_images
        # (one sweep: its table as it is, the selection below copies it)
        table = tables[0] if len(tables) == 1 else ReflectionTable.concatenate(tables)
        table.experiment_identifiers = {k: e.identifier for k, e in enumerate(experiments)}
        order = np.lexsort((table["xyzcal.px"][:, 2], table["id"]))
        table = table.select(order)
        table["partial_id"] = np.arange(len(table), dtype=np.uint64)
        t1 = time.perf_counter()
        _add_corrections(experiments, table, models)
        del table["_full"]
        del table["_sigma_m_eff"]
    result.timings["corrections"] = time.perf_counter() - t1
    result.timings["total"] = time.perf_counter() - t0
    result.timings["cpu.total"] = time.process_time() - c0  # all threads
    result.timings["cpu.main"] = time.thread_time() - m0  # the calling thread
    result.timings["cpu.serial"] = result.timings["cpu.main"] - result.timings.pop(
        "cpu.in_calling_thread", 0.0)
    result.n_predicted = len(table)
    result.n_sum = int(table.get_flags(Flags.integrated_sum).sum())
    result.n_prf = int(table.get_flags(Flags.integrated_prf).sum())
    result.n_reference = int(table.get_flags(Flags.reference_spot).sum())
    result.n_overlapped = int(table.get_flags(Flags.overlapped_fg).sum())
    new = ExperimentList(e.replace(profile=m.to_dict()) for e, m in zip(experiments, models))
    return new, table, result
