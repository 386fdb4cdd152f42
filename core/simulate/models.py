"""The true models of a simulated sweep, and the (possibly wrong) models its headers state."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np

from ..formats.attenuation import mu_per_mm
from ..models.beam import Beam
from ..models.crystal import Crystal
from ..models.detector import Detector
from ..models.experiment import Experiment, ExperimentList
from ..models.goniometer import Goniometer
from ..models.imageset import ImageSetRef
from ..models.rotation import axis_angle_matrix
from ..models.scan import Scan
from .detectors import KIND, DetectorSpec, build_detector
from .params import SimulationParams
from .writers import HeaderGeometry

EXT = {"cbf": "cbf", "smv": "img", "nexus": "h5"}
FORMAT_NAME = {"cbf": "miniCBF", "smv": "SMV", "nexus": "NXmx"}
DETECTOR_NAME = {"pilatus": "PILATUS 6M-like", "eiger": "EIGER 16M-like",
                 "timepix": "Timepix quad-like", "multipanel": "2x2 multi-panel"}


def rotation_xyz(angles_deg) -> np.ndarray:
    """R = Rz Ry Rx for rotations (deg) about the lab x, y and z axes."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=float))
    return (axis_angle_matrix([0, 0, 1], a[2]) @ axis_angle_matrix([0, 1, 0], a[1])
            @ axis_angle_matrix([1, 0, 0], a[0]))


def drifting_crystal(crystal: Crystal, n_images: int, drift_deg) -> Crystal:
    """``crystal`` turning slowly over the scan: at image boundary j (0..n_images) its A is
    R(axis, j / n_images |drift|) A, the rotation vector ``drift_deg`` (deg, lab x, y, z at
    phi = 0) applied in proportion to the image; A_at_scan_points holds the n_images + 1
    matrices (``crystal.A`` stays the start)."""
    drift = np.asarray(drift_deg, dtype=float)
    angle = np.deg2rad(np.linalg.norm(drift))
    frac = np.arange(n_images + 1) / n_images
    R = axis_angle_matrix(drift, frac * angle)
    return crystal.replace(A_at_scan_points=R @ crystal.A)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed rotation (from a random unit quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_axes(p: SimulationParams) -> tuple[np.ndarray, np.ndarray]:
    """(true axis, header axis) in the lab frame.

    The header axis is the true one reversed and/or turned about the beam, as asked.
    miniCBF and SMV headers imply +x, so for them (unless ``rotation_axis`` is given)
    the *true* axis is chosen such that the header's +x carries the requested error.
    """
    sign = -1.0 if p.header_axis_reversed else 1.0
    R = axis_angle_matrix([0.0, 0.0, 1.0], np.deg2rad(p.header_axis_rotated))
    if p.rotation_axis is not None:
        true = np.asarray(p.rotation_axis, dtype=float)
        true = true / np.linalg.norm(true)
    elif p.format == "nexus":
        true = np.array([1.0, 0.0, 0.0])
    else:
        true = sign * (R.T @ np.array([1.0, 0.0, 0.0]))
    return true, R @ (sign * true)


def true_models(p: SimulationParams, rng: np.random.Generator):
    """(ExperimentList of the truth, DetectorSpec, header rotation axis)."""
    mu = mu_per_mm("Si", p.wavelength) if p.format != "smv" else 0.0
    overload = p.overload or KIND[p.detector]["overload"]
    if p.format == "smv":  # 16-bit pixels
        overload = min(overload, 65535.0)
    dspec = build_detector(p.detector, tuple(p.image_size or (1024, 1024)), p.pixel_size,
                           p.distance, p.beam_centre, p.gaps, overload, mu)
    pol = p.polarization_fraction
    if pol is None:
        pol = 0.5 if p.wavelength < 0.1 else 0.999  # electrons are not polarised
    beam = Beam(direction=np.array([0.0, 0.0, 1.0]), wavelength=p.wavelength,
                polarization_normal=np.array([0.0, 1.0, 0.0]), polarization_fraction=pol)
    true_axis, header_axis = rotation_axes(p)
    scan = Scan(image_range=(1, p.n_images), oscillation=(p.phi_start, p.osc),
                exposure_time=np.full(p.n_images, p.exposure_time),
                epochs=np.arange(p.n_images) * p.exposure_time)
    out = Path(p.output).resolve() if p.output else Path()
    name = (f"{p.prefix}_master.h5" if p.format == "nexus"
            else f"{p.prefix}_#####.{EXT[p.format]}")
    imageset = ImageSetRef(kind="ImageSequence", template=str(out / name),
                           format=FORMAT_NAME[p.format])
    cell = gemmi.UnitCell(*[float(v) for v in p.unit_cell])
    sg = gemmi.find_spacegroup_by_name(str(p.space_group))
    U = rotation_xyz(p.orientation) if p.orientation is not None else random_rotation(rng)
    crystals = [Crystal.from_cell_and_U(cell, U, sg)]
    if p.n_lattices == 2:
        crystals.append(Crystal.from_cell_and_U(cell, rotation_xyz(p.lattice2_rotation) @ U, sg))
    if any(p.crystal_drift):
        crystals = [drifting_crystal(c, p.n_images, p.crystal_drift) for c in crystals]
    gonio = Goniometer(rotation_axis_datum=true_axis)
    profile = {"__id__": "gaussian_rs", "n_sigma": 3.0, "sigma_b": p.sigma_b,
               "sigma_m": p.sigma_m}
    experiments = ExperimentList(
        Experiment(beam=beam, detector=dspec.detector, goniometer=gonio, scan=scan, crystal=c,
                   imageset=imageset, profile=profile, identifier=f"gonio-sim-{p.seed}-{i}")
        for i, c in enumerate(crystals))
    return experiments, dspec, header_axis


def header_models(experiments: ExperimentList, p: SimulationParams,
                  header_axis: np.ndarray) -> ExperimentList:
    """The models the headers state: the truth with the requested header errors."""
    e0 = experiments[0]
    wavelength = p.header_wavelength or p.wavelength
    off_f, off_s = (float(v) for v in p.header_beam_centre_offset)
    z = -(p.header_distance if p.header_distance is not None else p.distance)
    panels = []
    for pan in e0.detector:
        px = pan.pixel_size[0]
        # the beam centre moves by +d px along fast when the panel moves by -d px along fast
        origin = pan.origin - off_f * px * pan.fast_axis - off_s * px * pan.slow_axis
        mu = mu_per_mm(pan.material, wavelength) if pan.mu > 0 else 0.0
        panels.append(pan.replace(origin=np.array([origin[0], origin[1], z]), mu=mu))
    return ExperimentList([Experiment(
        beam=e0.beam.replace(wavelength=wavelength), detector=Detector(panels),
        goniometer=Goniometer(rotation_axis_datum=header_axis), scan=e0.scan,
        imageset=e0.imageset, identifier="header")])


def header_geometry(p: SimulationParams, dspec: DetectorSpec, hexp: Experiment) -> HeaderGeometry:
    """What the image writers put in the headers."""
    pan0 = hexp.detector[0]
    bc = pan0.beam_centre_mm(hexp.beam.s0) / np.asarray(pan0.pixel_size)
    multi = len(hexp.detector) > 1
    return HeaderGeometry(
        wavelength=hexp.beam.wavelength, distance=pan0.distance, beam_centre_px=tuple(bc),
        pixel_size=pan0.pixel_size[0], image_size=pan0.image_size, phi_start=p.phi_start,
        osc=p.osc, rotation_axis=tuple(hexp.goniometer.rotation_axis),
        exposure_time=p.exposure_time, overload=dspec.overload, thickness=pan0.thickness,
        material=pan0.material, detector_name=DETECTOR_NAME[dspec.kind],
        panel_origins=[q.origin for q in hexp.detector] if multi else None,
        panel_fast=[q.fast_axis for q in hexp.detector] if multi else None,
        panel_slow=[q.slow_axis for q in hexp.detector] if multi else None)
