"""Forward model of a rotation sweep with exact ground truth.

Geometry is gonio's own prediction (:mod:`gonio.core.prediction.rotation`):
every reflection crossing the Ewald sphere in the scan (plus a margin) is
placed at its predicted (x, y, phi). Around that point each reflection is
a Gaussian, as in the DIALS profile model (Kabsch 2010, Acta Cryst. D66,
133): along the rotation, a reflecting range with sigma_phi = sigma_m / |zeta|;
on the detector, the beam divergence sigma_b maps through the local
Jacobian of the panel coordinates with respect to the direction of s1, plus
an isotropic ``spot_sigma`` (crystal/beam size). The fraction of the
reflecting range that falls within each image is the partiality.

The full (all-images) expected counts of a reflection are

    I = k |F|^2 L P,   L = 1 / (|zeta| sin 2theta),
    P = f (1 - (s1^.e_h)^2) + (1 - f)(1 - (s1^.n)^2)

(L the rotation-method Lorentz factor, P the polarisation factor for a
fraction f polarised along e_h = n x beam, n the polarisation-plane normal),
with k set so that the median L P reflection of mean |F|^2 gives
``mean_intensity`` counts. |zeta| is taken as at least 0.05 (reflections
closer to the rotation axis are blurred over many images, not infinitely).
On top: constant background plus a solvent ring, Poisson noise, gain,
saturation at the overload, gap pixels.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np
from scipy.special import ndtr

from ..formats.attenuation import mu_per_mm
from ..io.dials_expt import write_expt
from ..models.beam import Beam
from ..models.crystal import Crystal
from ..models.detector import Detector, Panel
from ..models.experiment import Experiment, ExperimentList
from ..models.goniometer import Goniometer
from ..models.imageset import ImageSetRef
from ..models.rotation import axis_angle_matrix
from ..models.scan import Scan
from ..prediction.rotation import predict_rotation
from ..reflection_table import Flags, ReflectionTable
from . import kernels
from .detectors import DetectorSpec, build_detector
from .params import DETECTORS, FORMATS, SimulationParams, SimulationParamsError, resolve
from .structure import lookup, read_intensities, wilson_intensities
from .writers import HeaderGeometry, NexusWriter, write_minicbf, write_smv

ZETA_MIN = 0.05
EXT = {"cbf": "cbf", "smv": "img", "nexus": "h5"}
FORMAT_NAME = {"cbf": "miniCBF", "smv": "SMV", "nexus": "NXmx"}


@dataclass
class SimulationResult:
    """What :func:`simulate` made. ``truth`` has one row per simulated reflection."""

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
        where = p.output or "memory"
        lines = [f"Simulated {p.n_images} images of {p.osc:g} deg ({p.format}, "
                 f"{p.detector} {'x'.join(str(v) for v in e.detector[0].image_size)} px) "
                 f"in {where} in {self.timing.get('total_s', 0):.1f} s"]
        for i, x in enumerate(self.experiments):
            cell = ", ".join(f"{v:.2f}" for v in x.crystal.unit_cell.parameters)
            n = int((self.truth["id"] == i).sum())
            lines.append(f"  crystal {i}: {x.crystal.space_group.hm}  ({cell})  "
                         f"{n} reflections")
        pan_t, pan_h = e.detector[0], h.detector[0]
        bc_t = pan_t.beam_centre_mm(e.beam.s0) / np.asarray(pan_t.pixel_size)
        bc_h = pan_h.beam_centre_mm(h.beam.s0) / np.asarray(pan_h.pixel_size)
        rows = [("distance (mm)", pan_t.distance, pan_h.distance),
                ("beam centre x (px)", bc_t[0], bc_h[0]), ("beam centre y (px)", bc_t[1], bc_h[1]),
                ("wavelength (A)", e.beam.wavelength, h.beam.wavelength)]
        lines.append("  true vs header:")
        for name, a, b in rows:
            flag = "" if abs(a - b) < 1e-6 else "   <- header error"
            lines.append(f"    {name:<20}{a:>12.4f}{b:>12.4f}{flag}")
        at, ah = e.goniometer.rotation_axis, h.goniometer.rotation_axis
        flag = "" if np.allclose(at, ah) else "   <- header error"
        lines.append(f"    {'rotation axis':<20}{np.array2string(at, precision=3):>12}"
                     f"{np.array2string(ah, precision=3):>12}{flag}")
        if p.output:
            lines.append(f"  truth: {p.output}/truth.expt, truth.refl, truth_partials.npz; "
                         "header models: header.expt")
        return "\n".join(lines)


# -- set-up ---------------------------------------------------------------------------

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
    if p.distance <= 0:
        bad(f"distance={p.distance} mm must be positive.")
    if len(tuple(p.unit_cell)) != 6:
        bad(f"unit_cell needs six numbers a,b,c,alpha,beta,gamma (got {p.unit_cell}).")
    if p.n_lattices not in (1, 2):
        bad(f"n_lattices={p.n_lattices}: 1 or 2 crystals are supported.")
    if p.detector == "multipanel" and p.format != "nexus":
        bad("the multi-panel detector can only be written as format=nexus (miniCBF and SMV "
            "hold one panel per image).")
    if gemmi.find_spacegroup_by_name(str(p.space_group)) is None:
        bad(f"space group {p.space_group!r} is not known; use a symbol such as 'P 43 21 2', "
            "'C2' or a number.")


def _rotation(angles_deg) -> np.ndarray:
    a = np.deg2rad(np.asarray(angles_deg, dtype=float))
    return (axis_angle_matrix([0, 0, 1], a[2]) @ axis_angle_matrix([0, 1, 0], a[1])
            @ axis_angle_matrix([1, 0, 0], a[0]))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _axes(p: SimulationParams) -> tuple[np.ndarray, np.ndarray]:
    """(true axis, header axis) in the lab frame, from the header-error settings."""
    beam_axis = np.array([0.0, 0.0, 1.0])
    sign = -1.0 if p.header_axis_reversed else 1.0
    R = axis_angle_matrix(beam_axis, np.deg2rad(p.header_axis_rotated))

    def to_header(t):
        return R @ (sign * t)

    if p.rotation_axis is not None:
        t = np.asarray(p.rotation_axis, dtype=float)
        t = t / np.linalg.norm(t)
    elif p.format == "nexus":
        t = np.array([1.0, 0.0, 0.0])
    else:  # CBF / SMV headers imply +x: choose the truth that makes the requested error
        t = sign * (R.T @ np.array([1.0, 0.0, 0.0]))
    return t, to_header(t)


def _header_detector(det: Detector, p: SimulationParams) -> Detector:
    off_f, off_s = (float(v) for v in p.header_beam_centre_offset)
    z = -(p.header_distance if p.header_distance is not None else p.distance)
    panels = []
    for pan in det:
        px = pan.pixel_size[0]
        # moving the beam centre by +df px along fast = moving the panel by -df px along fast
        origin = pan.origin - off_f * px * pan.fast_axis - off_s * px * pan.slow_axis
        origin = np.array([origin[0], origin[1], z])
        mu = mu_per_mm(pan.material, p.header_wavelength or p.wavelength) if pan.mu > 0 else 0.0
        panels.append(pan.replace(origin=origin, mu=mu))
    return Detector(panels)


def _auto_d_min(det: Detector, s0: np.ndarray) -> float:
    d = [p.resolution_at_pixel(s0, p.corners_px()).min() for p in det]
    return float(min(d))


# -- physics per reflection -------------------------------------------------------------

def _spot_shape(expt: Experiment, refl: ReflectionTable, sigma_b_rad: float,
                spot_sigma_px: float) -> np.ndarray:
    """Covariance (N, 2, 2) in px of each spot on its panel."""
    s0 = expt.beam.s0
    s1 = refl["s1"]
    n = len(s1)
    e1 = np.cross(s1, s0)
    e1 /= np.linalg.norm(e1, axis=1)[:, None]
    e2 = np.cross(s1, e1)
    e2 /= np.linalg.norm(e2, axis=1)[:, None]
    J = np.zeros((n, 2, 2))
    panel = refl["panel"].astype(np.int64)
    h = 1e-5  # rad
    k1 = np.linalg.norm(s1, axis=1)[:, None]
    for ip, pan in enumerate(expt.detector):
        sel = panel == ip
        if not sel.any():
            continue
        base = pan.millimeter_to_pixel(pan.ray_intersection(s1[sel])[0])
        for c, e in enumerate((e1, e2)):
            moved = pan.millimeter_to_pixel(pan.ray_intersection(s1[sel] + h * k1[sel] * e[sel])[0])
            J[sel, :, c] = (moved - base) / h
    cov = sigma_b_rad**2 * J @ np.swapaxes(J, 1, 2) + spot_sigma_px**2 * np.eye(2)
    return cov


def lorentz_polarisation(expt: Experiment, refl: ReflectionTable) -> np.ndarray:
    """L P of each reflection (columns s1, zeta): 1 / this is DIALS's ``lp`` correction
    (the DIALS formula, with |zeta| taken as at least ZETA_MIN)."""
    beam = expt.beam
    u0 = beam.unit_s0
    u1 = refl["s1"] / np.linalg.norm(refl["s1"], axis=1)[:, None]
    sin2t = np.linalg.norm(np.cross(u1, u0), axis=1)
    L = 1.0 / (np.maximum(np.abs(refl["zeta"]), ZETA_MIN) * np.maximum(sin2t, 1e-6))
    n = beam.polarization_normal / np.linalg.norm(beam.polarization_normal)
    e_h = np.cross(n, beam.direction)
    e_h /= np.linalg.norm(e_h)
    f = beam.polarization_fraction
    P = f * (1 - (u1 @ e_h) ** 2) + (1 - f) * (1 - (u1 @ n) ** 2)
    return L * P


def _phi_partials(z_c: np.ndarray, sigma_z: np.ndarray, n_images: int):
    """Long table of (row, image index 0-based, fraction) for Gaussian reflecting ranges
    centred at frame z_c with sigma sigma_z (frames)."""
    lo = np.clip(np.floor(z_c - 6 * sigma_z), 0, n_images).astype(np.int64)
    hi = np.clip(np.floor(z_c + 6 * sigma_z) + 1, 0, n_images).astype(np.int64)
    span = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(len(z_c)), span)
    first = np.repeat(lo, span)
    step = np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)
    img = first + step
    a = (img - z_c[rows]) / sigma_z[rows]
    frac = ndtr(a + 1.0 / sigma_z[rows]) - ndtr(a)
    return rows, img, frac


def _true_z(z_c, sigma_z, n_images):
    """Mean frame of the part of each Gaussian reflecting range inside [0, n_images)."""
    a, b = (0.0 - z_c) / sigma_z, (n_images - z_c) / sigma_z
    mass = ndtr(b) - ndtr(a)
    phi_a, phi_b = np.exp(-0.5 * a * a), np.exp(-0.5 * b * b)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = z_c + sigma_z * (phi_a - phi_b) / math.sqrt(2 * math.pi) / mass
    return z, mass


def _background(det: Detector, s0: np.ndarray, p: SimulationParams) -> np.ndarray:
    out = []
    for pan in det:
        nf, ns = pan.image_size
        jj, ii = np.mgrid[0:ns, 0:nf]
        xy = np.column_stack([ii.ravel() + 0.5, jj.ravel() + 0.5])
        dstar = 1.0 / pan.resolution_at_pixel(s0, xy)
        ring = p.solvent_ring * np.exp(-0.5 * ((dstar - 1 / 3.7) / 0.025) ** 2)
        out.append((p.background + ring).reshape(ns, nf))
    return np.array(out)


# -- main -------------------------------------------------------------------------------

def _models(p: SimulationParams, dspec: DetectorSpec):
    pol = p.polarization_fraction
    if pol is None:
        pol = 0.5 if p.wavelength < 0.1 else 0.999
    beam = Beam(direction=np.array([0.0, 0.0, 1.0]), wavelength=p.wavelength,
                polarization_normal=np.array([0.0, 1.0, 0.0]), polarization_fraction=pol)
    true_axis, header_axis = _axes(p)
    scan = Scan(image_range=(1, p.n_images), oscillation=(p.phi_start, p.osc),
                exposure_time=np.full(p.n_images, p.exposure_time),
                epochs=np.arange(p.n_images) * p.exposure_time)
    ext = EXT[p.format]
    out = Path(p.output).resolve() if p.output else None
    if p.format == "nexus":
        template = str(out / f"{p.prefix}_master.h5") if out else f"{p.prefix}_master.h5"
    else:
        template = str(out / f"{p.prefix}_#####.{ext}") if out else f"{p.prefix}_#####.{ext}"
    imageset = ImageSetRef(kind="ImageSequence", template=template, format=FORMAT_NAME[p.format])
    return beam, true_axis, header_axis, scan, imageset


def _crystals(p: SimulationParams, rng_orient: np.random.Generator) -> list[Crystal]:
    cell = gemmi.UnitCell(*[float(v) for v in p.unit_cell])
    sg = gemmi.find_spacegroup_by_name(str(p.space_group))
    U = _rotation(p.orientation) if p.orientation is not None else _random_rotation(rng_orient)
    crystals = [Crystal.from_cell_and_U(cell, U, sg)]
    if p.n_lattices == 2:
        crystals.append(Crystal.from_cell_and_U(cell, _rotation(p.lattice2_rotation) @ U, sg))
    return crystals


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
    rngs = [np.random.default_rng([p.seed, k]) for k in range(4)]
    img_size = tuple(p.image_size or (1024, 1024))
    mu = mu_per_mm("Si", p.wavelength) if p.format != "smv" else 0.0
    dspec = build_detector(p.detector, img_size, p.pixel_size, p.distance, p.beam_centre,
                           p.gaps, p.overload, mu)
    beam, true_axis, header_axis, scan, imageset = _models(p, dspec)
    gonio = Goniometer(rotation_axis_datum=true_axis)
    crystals = _crystals(p, rngs[0])
    d_min = p.d_min or _auto_d_min(dspec.detector, beam.s0)
    d_min = max(d_min, 0.5001 * p.wavelength)
    experiments = ExperimentList(
        Experiment(beam=beam, detector=dspec.detector, goniometer=gonio, scan=scan, crystal=c,
                   imageset=imageset,
                   profile={"__id__": "gaussian_rs", "n_sigma": 3.0, "sigma_b": p.sigma_b,
                            "sigma_m": p.sigma_m},
                   identifier=f"gonio-sim-{p.seed}-{i}")
        for i, c in enumerate(crystals))

    # intensities on the asymmetric unit
    sg = crystals[0].space_group
    if p.intensities:
        keys, values = read_intensities(p.intensities, sg)
    else:
        keys, values = wilson_intensities(sg, crystals[0].unit_cell, d_min, p.b_factor, rngs[1])

    # predict and attach physics
    sigma_m = np.deg2rad(p.sigma_m)
    margin = min(6 * p.sigma_m / ZETA_MIN, 180.0)
    tables = []
    for i, expt in enumerate(experiments):
        t = predict_rotation(expt, d_min, margin_deg=margin)
        t["id"] = np.full(len(t), i, np.int32)
        lp = lorentz_polarisation(expt, t)
        t["lp"] = 1.0 / lp  # DIALS convention: the correction factor
        f2 = lookup(keys, values, t["miller_index"], sg)
        t["F2"] = f2 * (p.lattice2_scale if i == 1 else 1.0)
        t["_LP"] = lp
        cov = _spot_shape(expt, t, np.deg2rad(p.sigma_b), p.spot_sigma)
        t["_cov"] = cov.reshape(-1, 4)
        tables.append(t)
    truth = ReflectionTable.concatenate(tables)
    truth.experiment_identifiers = {i: e.identifier for i, e in enumerate(experiments)}
    lp_all = truth["_LP"]
    scale = p.mean_intensity / max(np.median(lp_all), 1e-30) if len(truth) else 0.0
    intensity = scale * truth["F2"] * lp_all
    truth["intensity.true"] = intensity
    del truth["_LP"]

    # reflecting range in frames
    zeta_eff = np.maximum(np.abs(truth["zeta"]), ZETA_MIN)
    sigma_z = sigma_m / zeta_eff / np.deg2rad(p.osc)
    z_c = truth["xyzcal.px"][:, 2]
    z_true, mass = _true_z(z_c, sigma_z, p.n_images)
    recorded = mass > 1e-6  # drop reflections whose reflecting range misses the scan
    truth = truth.select(recorded)
    intensity, sigma_z, z_c = intensity[recorded], sigma_z[recorded], z_c[recorded]
    z_true, mass = z_true[recorded], mass[recorded]

    # spatial profile: inverse covariance, box, fraction on valid pixels, centroid
    cov = truth["_cov"].reshape(-1, 2, 2)
    del truth["_cov"]
    det_ = np.linalg.det(cov)
    inv = np.linalg.inv(cov)
    norm = 1.0 / (2 * np.pi * np.sqrt(det_))
    hx = 5.0 * np.sqrt(cov[:, 0, 0])
    hy = 5.0 * np.sqrt(cov[:, 1, 1])
    valid = ~np.array(dspec.gap_masks)
    xc = truth["xyzcal.px"][:, 0].copy()
    yc = truth["xyzcal.px"][:, 1].copy()
    panel = truth["panel"].astype(np.int64)
    ia, ib, ic = inv[:, 0, 0].copy(), inv[:, 0, 1].copy(), inv[:, 1, 1].copy()
    frac_xy, mx, my = kernels.spot_moments(valid, panel, xc, yc, ia, ib, ic, norm, hx, hy)
    truth["partiality"] = mass
    truth["fraction.on_detector"] = frac_xy
    truth["xyztrue.px"] = np.column_stack([mx, my, z_true])
    truth["sigma.px"] = np.column_stack([np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])])
    truth["sigma_z"] = sigma_z
    truth["intensity.recorded"] = intensity * mass * frac_xy

    rows, img, frac = _phi_partials(z_c, sigma_z, p.n_images)
    keep = frac * intensity[rows] > 1e-3
    rows, img, frac = rows[keep], img[keep], frac[keep]
    order = np.lexsort((rows, img))
    rows, img, frac = rows[order], img[order], frac[order]
    partials = {"refl": rows, "image": img + 1, "fraction": frac,
                "counts": intensity[rows] * frac * frac_xy[rows]}
    truth.set_flags(np.ones(len(truth), bool), Flags.predicted)
    t_setup = time.perf_counter() - t_start

    # images
    bg = _background(dspec.detector, beam.s0, p)
    starts = np.searchsorted(img, np.arange(p.n_images + 1))
    out = Path(p.output) if p.output else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    header_expts = _header_experiments(experiments, p, header_axis)
    geom = _header_geometry(p, dspec, header_expts[0])

    def make(k):
        sl = slice(starts[k], starts[k + 1])
        r = rows[sl]
        expected = bg.copy()
        kernels.render_spots(expected, panel[r], xc[r], yc[r], ia[r], ib[r], ic[r], norm[r],
                             hx[r], hy[r], intensity[r] * frac[sl])
        rng = np.random.default_rng([p.seed, 1000 + k])
        counts = rng.poisson(expected) if p.noise else np.rint(expected)
        if p.gain != 1.0:
            counts = np.rint(counts * p.gain)
        counts = np.minimum(counts, dspec.overload).astype(np.int32)
        counts[~valid] = -1
        return counts

    paths, images = [], ([] if out is None else None)
    master = None

    def tick(k):
        if progress is not None:
            progress("simulate", k + 1, p.n_images)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, int(p.nproc))) as pool:
        if out is not None and p.format == "nexus":
            master = out / f"{p.prefix}_master.h5"
            stacked = np.concatenate(list(~valid), axis=0)
            with NexusWriter(master, geom, p.n_images, stacked) as w:
                for k, counts in enumerate(pool.map(make, range(p.n_images))):
                    w.add(np.concatenate(list(counts), axis=0))
                    tick(k)
            paths = [str(x) for x in w.data_paths]
        elif out is not None:
            writer = write_minicbf if p.format == "cbf" else write_smv

            def make_and_write(k):
                counts = make(k)
                path = out / f"{p.prefix}_{k + 1:05d}.{EXT[p.format]}"
                writer(path, counts[0], geom, k)
                return str(path)

            paths = []
            for k, path in enumerate(pool.map(make_and_write, range(p.n_images))):
                paths.append(path)
                tick(k)
        else:
            for k, counts in enumerate(pool.map(make, range(p.n_images))):
                images.append(counts)
                tick(k)
    t_images = time.perf_counter() - t0

    if out is not None:
        from ..io.dials_refl import write_refl

        write_expt(experiments, out / "truth.expt")
        write_expt(header_expts, out / "header.expt")
        write_refl(truth, out / "truth.refl")
        np.savez_compressed(out / "truth_partials.npz", **partials)
    return SimulationResult(
        params=p, experiments=experiments, header_experiments=header_expts, truth=truth,
        partials=partials, image_paths=paths, master_path=str(master) if master else None,
        images=np.array(images) if images is not None else None, valid=valid,
        timing={"setup_s": t_setup, "images_s": t_images,
                "total_s": time.perf_counter() - t_start, "n_reflections": len(truth)})


def _header_experiments(experiments: ExperimentList, p: SimulationParams,
                        header_axis: np.ndarray) -> ExperimentList:
    e0 = experiments[0]
    beam = e0.beam.replace(wavelength=p.header_wavelength or p.wavelength)
    det = _header_detector(e0.detector, p)
    gonio = Goniometer(rotation_axis_datum=header_axis)
    return ExperimentList([Experiment(beam=beam, detector=det, goniometer=gonio, scan=e0.scan,
                                      imageset=e0.imageset, identifier="header")])


def _header_geometry(p: SimulationParams, dspec: DetectorSpec, hexp: Experiment) -> HeaderGeometry:
    pan0: Panel = hexp.detector[0]
    bc = pan0.beam_centre_mm(hexp.beam.s0) / np.asarray(pan0.pixel_size)
    multi = len(hexp.detector) > 1
    return HeaderGeometry(
        wavelength=hexp.beam.wavelength, distance=pan0.distance, beam_centre_px=tuple(bc),
        pixel_size=pan0.pixel_size[0], image_size=pan0.image_size, phi_start=p.phi_start,
        osc=p.osc, rotation_axis=tuple(hexp.goniometer.rotation_axis),
        exposure_time=p.exposure_time, overload=dspec.overload, thickness=pan0.thickness,
        material=pan0.material, detector_name={"pilatus": "PILATUS 6M-like",
                                               "eiger": "EIGER 16M-like",
                                               "timepix": "Timepix quad-like",
                                               "multipanel": "2x2 multi-panel"}[dspec.kind],
        panel_origins=[q.origin for q in hexp.detector] if multi else None,
        panel_fast=[q.fast_axis for q in hexp.detector] if multi else None,
        panel_slow=[q.slow_axis for q in hexp.detector] if multi else None)
