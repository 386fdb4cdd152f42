"""Unmerged MTZ as dials.export writes it (through gemmi.Mtz).

Columns: H K L M/ISYM BATCH, then the intensities: after scaling I SIGI (the
scaled intensity, intensity.scale / inverse_scale_factor) SCALEUSED
SIGSCALEUSED; before scaling I SIGI (summation, LP/QE/partiality corrected)
and IPR SIGIPR (profile fitted, LP/QE corrected), or I SIGI alone when only
one kind is exported; then FRACTIONCALC XDET YDET ROT LP QE. Indices are
mapped to the ASU of the space group with M/ISYM (gemmi
``switch_to_asu_hkl``) and sorted by H K L M/ISYM BATCH.

One batch header per image (DIALS export_mtz.add_batch_list): cell and the
MOSFLM U matrix (U = UB B^-1 with Busing & Levy's B) in the "Cambridge" frame
(X along the beam, Z along the rotation axis), at the image centre for a
scan-varying crystal; phi start/end/range, scan axis, source vector, detector
distance and size, wavelength and dataset; batch = image + offset
(:mod:`gonio.core.export.batches`).
"""

from __future__ import annotations

import time

import gemmi
import numpy as np

from gonio.core.export.prepare import Prepared
from gonio.core.models.experiment import Experiment

_TYPES = {"H": "H", "K": "H", "L": "H", "M/ISYM": "Y", "BATCH": "B", "I": "J", "SIGI": "Q",
          "IPR": "J", "SIGIPR": "Q", "SCALEUSED": "R", "SIGSCALEUSED": "R", "FRACTIONCALC": "R",
          "XDET": "R", "YDET": "R", "ROT": "R", "LP": "R", "QE": "R"}


def cambridge_frame(e: Experiment) -> np.ndarray:
    """R taking the lab frame to the Cambridge frame: rotation axis -> Z, beam -> X."""
    axis = e.goniometer.rotation_axis_datum if e.goniometer is not None else np.array([1.0, 0, 0])
    e3 = axis / np.linalg.norm(axis)
    us0 = e.beam.unit_s0
    e1 = us0 - (us0 @ e3) * e3
    e1 /= np.linalg.norm(e1)
    return np.array([e1, np.cross(e3, e1), e3])


def _reciprocal_params(params: np.ndarray) -> np.ndarray:
    """(n, 6) reciprocal cells (1/A, deg) of (n, 6) cells (A, deg)."""
    a, b, c = params[:, 0], params[:, 1], params[:, 2]
    al, be, ga = np.radians(params[:, 3]), np.radians(params[:, 4]), np.radians(params[:, 5])
    ca, cb, cg, sa, sb, sg = np.cos(al), np.cos(be), np.cos(ga), np.sin(al), np.sin(be), np.sin(ga)
    V = a * b * c * np.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)
    cas = (cb * cg - ca) / (sb * sg)
    cbs = (ca * cg - cb) / (sa * sg)
    cgs = (ca * cb - cg) / (sa * sb)
    return np.column_stack([b * c * sa / V, a * c * sb / V, a * b * sg / V,
                            np.degrees(np.arccos(cas)), np.degrees(np.arccos(cbs)),
                            np.degrees(np.arccos(cgs))])


def mosflm_u(UB: np.ndarray, cell) -> np.ndarray:
    """MOSFLM U = UB B^-1, B from the reciprocal cell (Busing & Levy 1967; dials ub_to_mosflm_u).

    ``UB`` (3, 3) or (n, 3, 3); ``cell`` a gemmi.UnitCell or (n, 6) parameters.
    """
    params = np.atleast_2d(np.asarray(cell.parameters if hasattr(cell, "parameters") else cell,
                                      dtype=float))
    ra, rb, rc, _, rbe, rga = _reciprocal_params(params).T
    al = np.radians(params[:, 3])
    B = np.zeros((len(params), 3, 3))
    B[:, 0, 0] = ra
    B[:, 0, 1] = rb * np.cos(np.radians(rga))
    B[:, 0, 2] = rc * np.cos(np.radians(rbe))
    B[:, 1, 1] = rb * np.sin(np.radians(rga))
    B[:, 1, 2] = -rc * np.sin(np.radians(rbe)) * np.cos(al)
    B[:, 2, 2] = 1.0 / params[:, 2]
    U = np.asarray(UB) @ np.linalg.inv(B)
    return U[0] if np.ndim(UB) == 2 else U


def _b_of(A: np.ndarray) -> np.ndarray:
    """The cctbx B (lower triangular, B^T B = A^T A) of each (n, 3, 3) A = U B."""
    P = np.eye(3)[::-1]
    C = np.linalg.cholesky(P @ np.swapaxes(A, 1, 2) @ A @ P)  # lower: C C^T = P G* P
    return P @ np.swapaxes(C, 1, 2) @ P  # B^T = P C P is upper triangular


def _cell_params_of(B: np.ndarray) -> np.ndarray:
    """(n, 6) cells of (n, 3, 3) B matrices: the rows of B^-1 are a, b, c."""
    real = np.linalg.inv(B)
    length = np.linalg.norm(real, axis=2)

    def ang(i, j):
        cos = np.sum(real[:, i] * real[:, j], axis=1) / (length[:, i] * length[:, j])
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    return np.column_stack([length, ang(1, 2), ang(0, 2), ang(0, 1)])


def _half_rotations(U0: np.ndarray, U1: np.ndarray) -> np.ndarray:
    """For each pair, the rotation half-way from U0 to U1 applied to U0 (n, 3, 3)."""
    M = U1 @ np.swapaxes(U0, 1, 2)
    angle = np.arccos(np.clip((np.trace(M, axis1=1, axis2=2) - 1) / 2, -1, 1))
    axis = np.stack([M[:, 2, 1] - M[:, 1, 2], M[:, 0, 2] - M[:, 2, 0], M[:, 1, 0] - M[:, 0, 1]], 1)
    norm = np.linalg.norm(axis, axis=1)
    axis = np.where(norm[:, None] > 1e-15, axis / np.maximum(norm, 1e-300)[:, None],
                    np.array([1.0, 0.0, 0.0]))
    R = axis_angle_matrix_batch(axis, angle / 2)
    return R @ U0


def axis_angle_matrix_batch(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Right-handed rotation matrices (n, 3, 3) about unit axes (n, 3) by angles (n,) rad."""
    x, y, z = axis.T
    c, s = np.cos(angle), np.sin(angle)
    t = 1 - c
    return np.stack([np.stack([c + x * x * t, x * y * t - z * s, x * z * t + y * s], 1),
                     np.stack([y * x * t + z * s, c + y * y * t, y * z * t - x * s], 1),
                     np.stack([z * x * t - y * s, z * y * t + x * s, c + z * z * t], 1)], 1)


def batch_orientations(e: Experiment, image_range, force_static_model=False):
    """Per image: (cell parameters (n, 6), MOSFLM U (n, 3, 3)) in the Cambridge frame.

    A scan-varying crystal is taken at the image centre as DIALS does: U half-way
    (by rotation) between the image's start and end, B the mean of the two B.
    """
    R = cambridge_frame(e)
    S = e.goniometer.setting_rotation if e.goniometer is not None else np.eye(3)
    F = e.goniometer.fixed_rotation if e.goniometer is not None else np.eye(3)
    n = image_range[1] - image_range[0] + 1
    cr = e.crystal
    varying = (not force_static_model and cr.A_at_scan_points is not None
               and e.goniometer is not None and e.scan is not None)
    if varying:
        k = image_range[0] - e.scan.image_range[0] + np.arange(n)
        A0, A1 = cr.A_at_scan_points[k], cr.A_at_scan_points[k + 1]
        B0, B1 = _b_of(A0), _b_of(A1)
        Uc = _half_rotations(A0 @ np.linalg.inv(B0), A1 @ np.linalg.inv(B1))
        Bc = (B0 + B1) / 2
        cells = _cell_params_of(Bc)
        A = Uc @ Bc
    else:
        cells = np.tile(cr.unit_cell.parameters, (n, 1))
        A = np.broadcast_to(cr.A, (n, 3, 3))
    return cells, mosflm_u(R @ S @ F @ A, cells)


def _add_batches(mtz: gemmi.Mtz, e: Experiment, image_range, offset: int, wavelength: float,
                 dataset_id: int, force_static_model: bool) -> None:
    if image_range == (0, 0):
        image_range = (1, 1)  # a still: one batch
    R = cambridge_frame(e)
    cells, Us = batch_orientations(e, image_range, force_static_model)
    axis = R @ e.goniometer.rotation_axis if e.goniometer is not None else np.zeros(3)
    source = R @ e.beam.direction  # sample -> source
    panel = e.detector[0]
    distance = float(panel.origin @ panel.normal)
    mosaic = float(e.crystal.extra.get("mosaicity", 0.0) or 0.0)
    b = gemmi.Mtz.Batch()
    b.dataset_id = dataset_id
    b.wavelength = wavelength
    for k, v in ((12, 1), (14, 2), (15, 1), (17, 1), (19, 1)):  # ncryst ldtype jsaxs ngonax ndet
        b.ints[k] = v
    fixed = {21: mosaic, 43: 1.0, 80 + int(np.argmin(source)): -1.0, 111: distance,
             114: panel.image_size[0], 116: panel.image_size[1]}
    fixed.update({38 + j: axis[j] for j in range(3)})  # scanax
    fixed.update({59 + j: axis[j] for j in range(3)})  # e1
    fixed.update({83 + j: source[j] for j in range(3)})  # source incl. tilts
    for k, v in fixed.items():
        b.floats[k] = float(v)
    b.axes = ["AXIS"]
    for i in range(image_range[1] - image_range[0] + 1):
        image = image_range[0] + i
        if e.scan is not None and e.scan.oscillation[1] != 0:
            start = e.scan.oscillation[0] + (image - e.scan.image_range[0]) * e.scan.oscillation[1]
            width = e.scan.oscillation[1]
        else:
            start, width = 0.0, 0.0
        b.number = image + offset
        b.title = f"Batch {b.number}"
        per_image = list(cells[i]) + list(Us[i].T.ravel())  # cell, U column-major
        for k, v in enumerate(per_image):
            b.floats[k] = float(v)
        b.floats[36], b.floats[37], b.floats[47] = start, start + width, width
        mtz.batches.append(b)


def unmerged_mtz(p: Prepared, crystal_name: str = "XTAL", project_name: str = "DIALS",
                 force_static_model: bool = False, title: str = "From gonio") -> gemmi.Mtz:
    """The unmerged MTZ of the prepared reflections (see the module docstring)."""
    t = p.table
    mtz = gemmi.Mtz(with_base=True)
    mtz.title = title
    mtz.history = [f"From gonio export, run on {time.strftime('%Y-%m-%d at %H:%M:%S %Z')}"]
    mtz.spacegroup = p.space_group
    mtz.cell = p.cell
    for k, group in enumerate(p.wavelengths):
        for i in group.experiments:
            _add_batches(mtz, p.experiments[i], p.image_ranges[i], p.offsets[i],
                         group.weighted_mean, k + 1, force_static_model)
    for group in p.wavelengths:
        ds = mtz.add_dataset("FROMDIALS")
        ds.crystal_name, ds.project_name = crystal_name, project_name
        ds.wavelength = group.weighted_mean
        ds.cell = p.cell
    cols = {"H": t["miller_index"][:, 0], "K": t["miller_index"][:, 1],
            "L": t["miller_index"][:, 2], "M/ISYM": np.zeros(len(t)), "BATCH": t["batch"]}
    if p.scaled:
        cols["I"] = t["intensity.scale.value"]
        cols["SIGI"] = np.sqrt(t["intensity.scale.variance"])
        cols["SCALEUSED"] = t["inverse_scale_factor"]
        cols["SIGSCALEUSED"] = np.sqrt(t["inverse_scale_factor_variance"]) \
            if "inverse_scale_factor_variance" in t else np.zeros(len(t))
    else:
        if "intensity.prf.value" in t:
            names = ("IPR", "SIGIPR") if "intensity.sum.value" in t else ("I", "SIGI")
            cols[names[0]] = t["intensity.prf.value"]
            cols[names[1]] = np.sqrt(t["intensity.prf.variance"])
        if "intensity.sum.value" in t:
            cols["I"] = t["intensity.sum.value"]
            cols["SIGI"] = np.sqrt(t["intensity.sum.variance"])
    xyz = t["xyzobs.px.value"] if "xyzobs.px.value" in t else t["xyzcal.px"]
    cols["FRACTIONCALC"] = t["fractioncalc"]
    cols["XDET"], cols["YDET"] = xyz[:, 0], xyz[:, 1]
    cols["ROT"] = t["ROT"]
    if "lp" in t:
        cols["LP"] = t["lp"]
    cols["QE"] = t["qe"] if "qe" in t else t["dqe"] if "dqe" in t else np.ones(len(t))
    for label in list(cols)[3:]:
        mtz.add_column(label, _TYPES[label])
    mtz.switch_to_original_hkl()  # marks the indices as original, so that the next call maps
    mtz.set_data(np.column_stack([np.asarray(v, dtype=np.float32) for v in cols.values()]))
    mtz.switch_to_asu_hkl()
    mtz.sort(5)
    return mtz
