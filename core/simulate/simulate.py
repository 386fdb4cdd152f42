"""Forward model of a rotation sweep with exact ground truth.

1. True models (:mod:`.models`): beam, detector, goniometer, scan, one or two
   crystals; and the header models, the truth plus the requested errors.
2. Reflections: gonio's own prediction (:func:`gonio.core.prediction.predict_rotation`)
   over the scan plus a margin; intensities |F|^2 (:mod:`.structure`) times the
   Lorentz-polarisation factor, scaled so that the median-LP reflection of mean
   |F|^2 gives ``mean_intensity`` counts; reflecting ranges, partialities per image
   and spot shapes (:mod:`.physics`).
3. Images: per image, the expected counts (background plus the partial of every
   reflection, evaluated only in a box around each spot: :mod:`.render`), Poisson noise
   (a generator seeded by (seed, image), so the result does not depend on threads),
   gain, saturation at the overload, gap pixels; written by :mod:`.writers`.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from ..io.dials_expt import write_expt
from ..io.dials_refl import write_refl
from ..io.file_kinds import CBF, HDF5, JSON, NPZ, REFL, SMV, check_replaceable
from ..models.experiment import ExperimentList
from ..prediction.rotation import detector_d_min, predict_rotation
from ..reflection_table import Flags, ReflectionTable
from . import render
from .models import EXT, header_geometry, header_models, true_models
from .params import DETECTORS, FORMATS, SimulationParams, SimulationParamsError, resolve
from .physics import (
    ZETA_MIN,
    SpotProfiles,
    background,
    image_partials,
    lorentz_polarisation,
    recorded_part,
    reflecting_range_frames,
    spot_covariance,
)
from .structure import lookup, read_intensities, wilson_intensities
from .writers import FRAMES_PER_FILE, NexusWriter, write_minicbf, write_smv


@dataclass
class SimulationResult:
    """What :func:`simulate` made. ``truth`` has one row per recorded reflection."""

    params: SimulationParams
    experiments: ExperimentList  # the true models
    header_experiments: ExperimentList  # what the image headers state
    truth: ReflectionTable
    partials: dict  # long table: refl (row in truth), image (1-based), fraction, counts
    image_paths: list = field(default_factory=list)
    master_path: str | None = None
    images: np.ndarray | None = None  # (n_images, n_panels, slow, fast) int32 if kept
    valid: np.ndarray | None = None  # (n_panels, slow, fast) bool: not a gap
    timing: dict = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for a terminal: what was written, the truth, the header errors."""
        p = self.params
        e, h = self.experiments[0], self.header_experiments[0]
        size = "x".join(str(v) for v in e.detector[0].image_size)
        lines = [f"Simulated {p.n_images} images of {p.osc:g} deg ({p.format}, {p.detector} "
                 f"{size} px) in {p.output or 'memory'} in {self.timing.get('total_s', 0):.1f} s"]
        for i, x in enumerate(self.experiments):
            cell = ", ".join(f"{v:.2f}" for v in x.crystal.unit_cell.parameters)
            n = int((self.truth["id"] == i).sum())
            lines.append(f"  crystal {i}: {x.crystal.space_group.hm}  ({cell})  {n} reflections")
        pan_t, pan_h = e.detector[0], h.detector[0]
        bc_t = pan_t.beam_centre_mm(e.beam.s0) / np.asarray(pan_t.pixel_size)
        bc_h = pan_h.beam_centre_mm(h.beam.s0) / np.asarray(pan_h.pixel_size)
        rows = [("distance (mm)", pan_t.distance, pan_h.distance),
                ("beam centre x (px)", bc_t[0], bc_h[0]), ("beam centre y (px)", bc_t[1], bc_h[1]),
                ("wavelength (A)", e.beam.wavelength, h.beam.wavelength)]
        lines.append(f"  {'':<22}{'true':>12}{'header':>12}")
        for name, a, b in rows:
            flag = "" if abs(a - b) < 1e-6 else "   <- header error"
            lines.append(f"  {name:<22}{a:>12.4f}{b:>12.4f}{flag}")
        at, ah = e.goniometer.rotation_axis, h.goniometer.rotation_axis
        flag = "" if np.allclose(at, ah) else "   <- header error"
        lines.append(f"  {'rotation axis':<22}{np.array2string(at, precision=3):>12}"
                     f"{np.array2string(ah, precision=3):>12}{flag}")
        if p.output:
            lines.append(f"  truth: {p.output}/truth.expt, truth.refl, truth_partials.npz; "
                         "header models: header.expt")
        return "\n".join(lines)


MAX_IMAGES = 100_000  # images in one simulated sweep
MAX_SCAN_DEG = 3600.0  # rotation of one simulated sweep (ten turns)


def _validate(p: SimulationParams) -> None:
    def bad(msg):
        raise SimulationParamsError(msg)

    if p.format not in FORMATS:
        bad(f"format={p.format!r} is not one of {', '.join(FORMATS)}.")
    if p.detector not in DETECTORS:
        bad(f"detector={p.detector!r} is not one of {', '.join(DETECTORS)}.")
    if not (0.01 <= p.wavelength <= 3.0):
        bad(f"wavelength={p.wavelength} A is outside 0.01-3 A; X-rays are about 0.5-2 A, "
            "200-300 kV electrons about 0.02-0.025 A.")
    if p.n_images < 1 or p.osc <= 0:
        bad(f"need n_images >= 1 and osc > 0 deg (got {p.n_images}, {p.osc}).")
    if p.n_images > MAX_IMAGES or p.osc > 180 or p.n_images * p.osc > MAX_SCAN_DEG:
        bad(f"n_images={p.n_images} of osc={p.osc} deg is beyond what simulate makes: at most "
            f"{MAX_IMAGES} images of at most 180 deg, {MAX_SCAN_DEG} deg in all (real sweeps "
            "are 0.01-2 deg per image, 360 deg at most).")
    if p.distance <= 0:
        bad(f"distance={p.distance} mm must be positive.")
    if p.header_distance is not None and p.header_distance <= 0:
        bad(f"header.distance={p.header_distance} mm must be positive (it is the distance "
            "written in the image headers, wrong on purpose; leave it unset for the true one).")
    if p.header_wavelength is not None and not p.header_wavelength > 0:
        bad(f"header.wavelength={p.header_wavelength} A must be positive.")
    for name in ("background", "solvent_ring", "mean_intensity"):
        if getattr(p, name) < 0:
            bad(f"{name}={getattr(p, name)} must not be negative.")
    if not p.gain > 0:
        bad(f"gain={p.gain} ADU per photon must be positive (1 for photon counting).")
    if p.seed < 0:
        bad(f"seed={p.seed} must be 0 or more.")
    if len(tuple(p.unit_cell)) != 6:
        bad(f"unit_cell needs six numbers a,b,c,alpha,beta,gamma (got {p.unit_cell}).")
    if p.n_lattices not in (1, 2):
        bad(f"n_lattices={p.n_lattices}: 1 or 2 crystals are supported.")
    if p.detector == "multipanel" and p.format != "nexus":
        bad("the multi-panel detector can only be written as format=nexus (miniCBF and SMV "
            "hold one panel per image).")
    if p.sigma_m <= 0 or p.sigma_b < 0 or p.spot_sigma < 0:
        bad(f"need sigma_m > 0 deg, sigma_b >= 0 deg and spot_sigma >= 0 px (got {p.sigma_m}, "
            f"{p.sigma_b}, {p.spot_sigma}); typical values are 0.05-0.5, 0.01-0.05 and 0.5-1.")
    if p.sigma_b == 0 and p.spot_sigma == 0:
        bad("sigma_b and spot_sigma are both 0: spots would have no size. Give either.")
    size = tuple(p.image_size or (1024, 1024))
    if len(size) != 2 or min(size) < 8:
        bad(f"image_size={p.image_size} must be two numbers (fast, slow) of at least 8 px.")
    if p.pixel_size is not None and p.pixel_size <= 0:
        bad(f"pixel_size={p.pixel_size} mm must be positive.")
    n_pixels = size[0] * size[1] * (4 if p.detector == "multipanel" else 1)
    if p.output is None and p.n_images * n_pixels * 4 > 2**31:
        bad(f"{p.n_images} images of {n_pixels} pixels would need more than 2 GB in memory; "
            "give output=<folder> to write them to files instead.")
    if gemmi.find_spacegroup_by_name(str(p.space_group)) is None:
        bad(f"space group {p.space_group!r} is not known; use a symbol such as 'P 43 21 2', "
            "'C2' or a number.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", p.prefix):
        bad(f"prefix={p.prefix!r} is not a plain file-name start: use letters, digits and "
            "'._+-' (no folders: give those as output=).")


def _output_files(p: SimulationParams, out: Path) -> list[tuple[Path, str]]:
    """Every file a simulation writes into ``out``, with its kind (:mod:`..io.file_kinds`)."""
    if p.format == "nexus":
        n_files = -(-p.n_images // FRAMES_PER_FILE)
        images = [(out / f"{p.prefix}_master.h5", HDF5)] + [
            (out / f"{p.prefix}_data_{k + 1:06d}.h5", HDF5)
            for k in range(n_files)]
    else:
        kind = CBF if p.format == "cbf" else SMV
        images = [(out / f"{p.prefix}_{k + 1:05d}.{EXT[p.format]}", kind)
                  for k in range(p.n_images)]
    return images + [(out / "truth.expt", JSON), (out / "header.expt", JSON),
                     (out / "truth.refl", REFL), (out / "truth_partials.npz", NPZ)]


def _check_output(p: SimulationParams) -> None:
    """Refuse, before anything is written, an output that is a file, or that holds files of
    other kinds under the names the simulation writes (nothing of the user's is lost)."""
    out = Path(p.output)
    if out.exists() and not out.is_dir():
        raise SimulationParamsError(f"output={p.output} is a file; simulate writes its images "
                                    "into a folder: give a new or existing folder.")
    for path, kind in _output_files(p, out):
        check_replaceable(path, kind)


def _reflections(experiments: ExperimentList, p: SimulationParams, valid: np.ndarray,
                 rng: np.random.Generator):
    """The truth table (recorded reflections only) and the spot profiles of its rows."""
    d_min = max(p.d_min or detector_d_min(experiments[0]), 0.5001 * p.wavelength)
    sg = experiments[0].crystal.space_group
    if p.intensities:
        keys, values = read_intensities(p.intensities, sg)
    else:
        keys, values = wilson_intensities(sg, experiments[0].crystal.unit_cell, d_min,
                                          p.b_factor, rng)
    margin = min(6 * p.sigma_m / ZETA_MIN, 180.0)  # reflections centred outside can spill in
    tables = []
    for i, expt in enumerate(experiments):
        t = predict_rotation(expt, d_min, margin_deg=margin)
        t["id"] = np.full(len(t), i, np.int32)
        t["F2"] = lookup(keys, values, t["miller_index"], sg) * (p.lattice2_scale if i else 1.0)
        t["lp"] = 1.0 / lorentz_polarisation(expt, t)  # DIALS convention: the correction
        t["sigma_z"] = reflecting_range_frames(t, p.sigma_m, p.osc)
        mass, z_true = recorded_part(t["xyzcal.px"][:, 2], t["sigma_z"], p.n_images)
        t["partiality"] = mass
        t["_z"] = z_true
        t = t.select(mass > 1e-6)  # drop reflecting ranges that miss the scan
        t["_cov"] = spot_covariance(expt, t, p.sigma_b, p.spot_sigma).reshape(-1, 4)
        tables.append(t)
    truth = ReflectionTable.concatenate(tables)
    truth.experiment_identifiers = {i: e.identifier for i, e in enumerate(experiments)}
    lp = 1.0 / truth["lp"]
    scale = p.mean_intensity / np.median(lp) if len(truth) else 0.0
    truth["intensity.true"] = scale * truth["F2"] * lp
    cov = truth["_cov"].reshape(-1, 2, 2)
    spots = SpotProfiles.from_covariance(truth["panel"], truth["xyzcal.px"], cov)
    frac_xy, mx, my = render.spot_moments(valid, *spots.args(slice(None)))
    truth["fraction.on_detector"] = frac_xy
    truth["xyztrue.px"] = np.column_stack([mx, my, truth["_z"]])
    truth["sigma.px"] = np.sqrt(np.column_stack([cov[:, 0, 0], cov[:, 1, 1]]))
    truth["intensity.recorded"] = truth["intensity.true"] * truth["partiality"] * frac_xy
    del truth["_cov"], truth["_z"]
    truth.set_flags(np.ones(len(truth), bool), Flags.predicted)
    return truth, spots


def _partials(truth: ReflectionTable, n_images: int) -> dict:
    """Long table of every (reflection, image) with more than 0.001 expected counts,
    sorted by image."""
    rows, img, frac = image_partials(truth["xyzcal.px"][:, 2], truth["sigma_z"], n_images)
    intensity = truth["intensity.true"]
    keep = frac * intensity[rows] > 1e-3
    rows, img, frac = rows[keep], img[keep], frac[keep]
    order = np.lexsort((rows, img))
    rows, img, frac = rows[order], img[order], frac[order]
    return {"refl": rows, "image": img + 1, "fraction": frac,
            "counts": intensity[rows] * frac * truth["fraction.on_detector"][rows]}


def simulate(params: SimulationParams, progress=None) -> SimulationResult:
    """Simulate a rotation sweep; write images and truth to ``params.output`` if given.

    ``progress("simulate", done, total)`` is called after each image when given. Files
    written: the images, ``truth.expt`` (true models), ``header.expt`` (the models the
    image headers state, i.e. what a correct importer makes of them), ``truth.refl``
    (one row per reflection) and ``truth_partials.npz`` (one row per reflection and image).
    """
    t_start = time.perf_counter()
    p = resolve(params)
    _validate(p)
    if p.output:
        _check_output(p)
    experiments, dspec, header_axis = true_models(p, np.random.default_rng([p.seed, 0]))
    header_expts = header_models(experiments, p, header_axis)
    valid = ~np.array(dspec.gap_masks)
    truth, spots = _reflections(experiments, p, valid, np.random.default_rng([p.seed, 1]))
    partials = _partials(truth, p.n_images)
    t_setup = time.perf_counter() - t_start

    bg = background(dspec.detector, experiments[0].beam.s0, p.background, p.solvent_ring)
    rows, expected_counts = partials["refl"], truth["intensity.true"][partials["refl"]] \
        * partials["fraction"]
    starts = np.searchsorted(partials["image"], np.arange(1, p.n_images + 2))

    def make(k: int) -> np.ndarray:
        sl = slice(starts[k], starts[k + 1])
        expected = bg.copy()
        render.render_spots(expected, *spots.args(rows[sl]), expected_counts[sl])
        rng = np.random.default_rng([p.seed, 1000 + k])
        counts = rng.poisson(expected) if p.noise else np.rint(expected)
        if p.gain != 1.0:
            counts = np.rint(counts * p.gain)
        counts = np.minimum(counts, dspec.overload).astype(np.int32)
        counts[~valid] = -1
        return counts

    t0 = time.perf_counter()
    out = Path(p.output) if p.output else None
    paths, images, master = _make_images(make, p, out, valid, header_geometry(
        p, dspec, header_expts[0]), progress)
    t_images = time.perf_counter() - t0
    if out is not None:
        write_expt(experiments, out / "truth.expt")
        write_expt(header_expts, out / "header.expt")
        write_refl(truth, out / "truth.refl")
        np.savez_compressed(out / "truth_partials.npz", **partials)
    return SimulationResult(
        params=p, experiments=experiments, header_experiments=header_expts, truth=truth,
        partials=partials, image_paths=paths, master_path=master, images=images, valid=valid,
        timing={"setup_s": t_setup, "images_s": t_images,
                "total_s": time.perf_counter() - t_start, "n_reflections": len(truth)})


def _make_images(make, p: SimulationParams, out: Path | None, valid: np.ndarray, geom,
                 progress):
    """Run ``make(k)`` for every image on ``p.nproc`` threads and write (or keep) them.
    Returns (image paths, images or None, NeXus master path or None)."""
    def tick(k):
        if progress is not None:
            progress("simulate", k + 1, p.n_images)

    paths, images, master = [], None, None
    with ThreadPoolExecutor(max_workers=max(1, int(p.nproc))) as pool:
        if out is None:
            images = []
            for k, counts in enumerate(pool.map(make, range(p.n_images))):
                images.append(counts)
                tick(k)
            return paths, np.array(images), None
        out.mkdir(parents=True, exist_ok=True)
        if p.format == "nexus":
            master = out / f"{p.prefix}_master.h5"
            with NexusWriter(master, geom, p.n_images, np.concatenate(list(~valid))) as w:
                for k, counts in enumerate(pool.map(make, range(p.n_images))):
                    w.add(np.concatenate(list(counts)))
                    tick(k)
            return [str(x) for x in w.data_paths], None, str(master)
        writer = write_minicbf if p.format == "cbf" else write_smv

        def make_and_write(k):
            path = out / f"{p.prefix}_{k + 1:05d}.{EXT[p.format]}"
            writer(path, make(k)[0], geom, k)
            return str(path)

        for k, path in enumerate(pool.map(make_and_write, range(p.n_images))):
            paths.append(path)
            tick(k)
    return paths, None, None
