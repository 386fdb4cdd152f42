"""Reflection prediction for the rotation method (static crystal model).

A reciprocal-lattice point h sits, at scan angle phi, at

    r(phi) = S R(e, phi) F A h          (1/A, laboratory frame)

with A = UB, F and S the goniometer's fixed and setting rotations and
R(e, phi) the right-handed rotation about the datum axis e. It diffracts
when it lies on the Ewald sphere, |s0 + r|^2 = |s0|^2, i.e.
2 s0 . r + |r|^2 = 0. Writing p = F A h and s0' = S^T s0 (the beam in the
goniometer datum frame), and splitting p into its parts along e and
perpendicular to it, the condition becomes

    a cos(phi) + b sin(phi) = c,
    a = s0'.p_perp,  b = s0'.(e x p),  c = -|p|^2 / 2 - s0'.p_par,

whose two solutions are phi = atan2(b, a) +- acos(c / sqrt(a^2 + b^2))
(the standard rotation-method solution: W. Kabsch, J. Appl. Cryst. 21
(1988) 916, and the DIALS ``rotation_angles``). A point whose
|c| > sqrt(a^2 + b^2) never crosses the sphere (it is in the blind region
around the rotation axis or beyond 2/lambda).

For each solution: s1 = s0 + r(phi); the reflection is *entering* the
sphere when s1 . (s0 x m2) < 0 (m2 = S e, the lab rotation axis), and
zeta = m2 . e1 with e1 = unit(s1 x s0) (the DIALS definitions; 1/|zeta| is
the Lorentz factor of the rotation method). Frame coordinates follow
:class:`gonio.core.models.scan.Scan` (z = 0 at the start of the first image).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..models.experiment import Experiment
from ..reflection_table import ReflectionTable
from .rays import (  # noqa: F401  (re-exported: the names callers import from here)
    PredictionError,
    diffracted_beams,
    entering_flags,
    lab_rlp,
    predict_rays,
    rays_table,
    xyz_mm_to_px,
    zeta_factor,
)
from .scan_varying import scan_varying_crossings
from .threads import thread_parts


def generate_indices(crystal, d_min: float, d_max: float | None = None,
                     remove_absent: bool = True) -> np.ndarray:
    """All Miller indices (N, 3) int32 with d_min <= d (<= d_max), whole sphere.

    ``remove_absent`` drops systematic absences of the crystal's space group
    (gemmi ``GroupOps.systematic_absences``). h = 0 is never returned.
    """
    if not d_min or d_min <= 0:
        raise PredictionError(f"d_min must be a positive resolution in A (got {d_min!r}).")
    A = np.asarray(crystal.A, dtype=float)
    real = np.linalg.inv(A)  # rows a, b, c (A)
    hmax = np.floor(np.linalg.norm(real, axis=1) / d_min).astype(int)
    dstar_max_sq = 1.0 / d_min**2
    dstar_min_sq = 1.0 / d_max**2 if d_max else 0.0
    k = np.arange(-hmax[1], hmax[1] + 1)
    l = np.arange(-hmax[2], hmax[2] + 1)
    kk, ll = np.meshgrid(k, l, indexing="ij")
    kk, ll = kk.ravel(), ll.ravel()
    out = []
    for h in range(-hmax[0], hmax[0] + 1):  # one slab of k, l per h keeps memory small
        hkl = np.stack([np.full_like(kk, h), kk, ll], axis=1)
        r = hkl @ A.T
        q = np.einsum("ij,ij->i", r, r)
        keep = (q <= dstar_max_sq) & (q > dstar_min_sq) & (q > 0)
        out.append(hkl[keep])
    hkl = np.concatenate(out).astype(np.int32) if out else np.zeros((0, 3), np.int32)
    if remove_absent and len(hkl):
        absent = np.asarray(crystal.space_group.operations().systematic_absences(hkl), dtype=bool)
        hkl = hkl[~absent]
    return hkl


def rotation_angles(s0_datum: np.ndarray, axis_datum: np.ndarray, p: np.ndarray):
    """Both angles (rad) at which points ``p`` (N, 3), rotated about ``axis_datum``, meet the
    Ewald sphere of ``s0_datum`` (all three in one frame: the goniometer datum frame for
    :func:`predict_rotation`, the lab frame for refinement).

    Returns (phi (N, 2), ok (N,)); phi in (-pi, pi] + [-pi, pi], undefined where not ok.
    """
    e = np.asarray(axis_datum, dtype=float)
    e = e / np.linalg.norm(e)
    s0 = np.asarray(s0_datum, dtype=float)
    p = np.asarray(p, dtype=float).reshape(-1, 3)
    p_par_len = p @ e
    p_perp = p - p_par_len[:, None] * e
    a = p_perp @ s0
    b = np.cross(e, p) @ s0
    c = -0.5 * np.einsum("ij,ij->i", p, p) - p_par_len * (s0 @ e)
    rho = np.hypot(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = c / rho
    ok = (rho > 0) & (np.abs(ratio) <= 1.0)
    base = np.arctan2(b, a)
    half = np.arccos(np.clip(ratio, -1.0, 1.0))
    return np.stack([base - half, base + half], axis=1), ok


def nearest_rotation_angle(phi2: np.ndarray, ok: np.ndarray, phi_near) -> np.ndarray:
    """Of the two solutions ``phi2`` (N, 2) of :func:`rotation_angles`, the one nearest
    ``phi_near`` (N,) rad, on the turn of ``phi_near``; NaN where not ``ok``."""
    phi_near = np.broadcast_to(np.asarray(phi_near, dtype=float), (len(phi2),))
    phi2 = phi2 + 2 * np.pi * np.round((phi_near[:, None] - phi2) / (2 * np.pi))
    pick = np.argmin(np.abs(phi2 - phi_near[:, None]), axis=1)
    return np.where(ok, phi2[np.arange(len(phi2)), pick], np.nan)


def _crossing_angles(experiment: Experiment, hkl: np.ndarray, nproc: int | None = None):
    """:func:`rotation_angles` of reflections ``hkl`` (N, 3) of ``experiment``'s crystal
    (a large set in up to ``nproc`` threads, :func:`thread_parts`)."""
    g = experiment.goniometer
    s0_datum = g.setting_rotation.T @ experiment.beam.s0
    A, F = experiment.crystal.A, g.fixed_rotation

    def angles(part):  # indices as float: a BLAS product (the same numbers, 4x faster)
        return rotation_angles(s0_datum, g.rotation_axis_datum,
                               (part.astype(float) @ A.T) @ F.T)

    parts = thread_parts(len(hkl), nproc)
    if parts < 2:
        return angles(hkl)
    with ThreadPoolExecutor(parts) as ex:
        done = list(ex.map(angles, np.array_split(hkl, parts)))
    return np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])


def _check(experiment: Experiment) -> None:
    missing = [n for n in ("beam", "detector", "goniometer", "scan", "crystal")
               if getattr(experiment, n) is None]
    if missing:
        raise PredictionError(
            f"rotation prediction needs a beam, detector, goniometer, scan and crystal; this "
            f"experiment has no {', '.join(missing)}. Index first (for the crystal) or import "
            "a rotation sweep (for the goniometer and scan).")
    if experiment.scan.oscillation[1] == 0:
        raise PredictionError("the scan has zero oscillation width (stills); rotation "
                              "prediction needs a rotation sweep.")


def detector_d_min(experiment: Experiment) -> float:
    """The highest resolution (A) anywhere on the detector: the d-spacing of the panel
    corner furthest from the beam."""
    s0 = experiment.beam.s0
    return float(min(p.resolution_at_pixel(s0, p.corners_px()).min() for p in experiment.detector))


def _crossings_in_scan(experiment: Experiment, d_min: float, d_max: float | None,
                       remove_absent: bool, margin_deg: float, nproc: int | None):
    """(Miller indices (N, 3) int32, angles (N,) rad) of every crossing of the Ewald
    sphere within the scan widened by ``margin_deg`` each side, to ``d_min`` (A), whether
    or not the ray meets a panel."""
    hkl = generate_indices(experiment.crystal, d_min, d_max, remove_absent)
    phi2, ok = _crossing_angles(experiment, hkl, nproc)
    lo, hi = np.deg2rad(experiment.scan.oscillation_range)
    if hi < lo:
        lo, hi = hi, lo
    lo, hi = lo - np.deg2rad(margin_deg), hi + np.deg2rad(margin_deg)
    rows, angles = [], []
    n_turns = int(np.ceil((hi - lo) / (2 * np.pi))) + 1
    for j in range(2):
        base = phi2[:, j]
        k0 = np.ceil((lo - base) / (2 * np.pi))
        for t in range(n_turns):
            a = base + 2 * np.pi * (k0 + t)
            sel = ok & (a >= lo) & (a < hi)
            rows.append(np.flatnonzero(sel))
            angles.append(a[sel])
    rows, angles = np.concatenate(rows), np.concatenate(angles)
    return np.asarray(hkl[rows], dtype=np.int32).reshape(-1, 3), angles.reshape(-1)


def predict_rotation(experiment: Experiment, d_min: float | None = None,
                     d_max: float | None = None, remove_absent: bool = True,
                     margin_deg: float = 0.0, scan_varying: bool | None = None,
                     nproc: int | None = None) -> ReflectionTable:
    """Predict every reflection of ``experiment`` that crosses the Ewald sphere during its
    scan (widened by ``margin_deg`` each side) and hits a panel, to ``d_min`` (A; None: the
    detector corner, :func:`detector_d_min`).

    With a scan-varying crystal (``crystal.A_at_scan_points``) and ``scan_varying`` None or
    True, the per-image models are used (:mod:`.scan_varying`; no margin there).
    Large predictions run in up to ``nproc`` threads (None: all cores).

    Returns a ReflectionTable with DIALS columns (see :func:`predict_rays`), sorted by
    frame z. Each hkl appears once per crossing (normally twice in a 360 deg scan).
    """
    _check(experiment)
    if d_min is None:
        d_min = max(detector_d_min(experiment), 0.5 * experiment.beam.wavelength)
    if scan_varying is None:
        scan_varying = experiment.crystal.A_at_scan_points is not None
    if scan_varying:
        return predict_scan_varying(experiment, d_min, d_max, remove_absent, nproc=nproc)
    hkl, angles = _crossings_in_scan(experiment, d_min, d_max, remove_absent, margin_deg, nproc)
    table = predict_rays(experiment, hkl, angles)
    del table["_source_index"]
    order = np.argsort(table["xyzcal.px"][:, 2], kind="stable")
    table = table.select(order)
    if experiment.identifier:
        table.experiment_identifiers = {0: experiment.identifier}
    return table


def predict_scan_varying(experiment: Experiment, d_min: float, d_max: float | None = None,
                         remove_absent: bool = True, window: int = 5,
                         nproc: int | None = None) -> ReflectionTable:
    """Predict with ``crystal.A_at_scan_points`` (n_images + 1 matrices, one per image
    boundary): the static prediction widened by ``window`` images each side gives the
    candidates, :func:`gonio.core.prediction.scan_varying.scan_varying_crossings` their
    crossings with the per-image models."""
    _check(experiment)
    scan = experiment.scan
    # the candidates: the static crossings whose rays meet a panel, with their frames (only
    # these two columns of a static prediction are needed)
    hkl, phi = _crossings_in_scan(experiment, d_min, d_max, remove_absent,
                                  window * abs(scan.oscillation[1]), nproc)
    _, s1 = diffracted_beams(experiment, hkl, phi)
    hit = experiment.detector.ray_intersection(s1)[0] >= 0
    frame = scan.frame_from_angle(np.rad2deg(phi[hit]))
    return scan_varying_crossings(experiment, hkl[hit], frame, d_min, d_max, window, nproc)


def predict_observed(experiment: Experiment, miller_index, phi_near) -> ReflectionTable:
    """Predict given reflections at the Ewald-sphere crossing nearest ``phi_near`` (rad).

    ``miller_index`` (N, 3) and ``phi_near`` (N,) (e.g. observed rotation angles). Unlike
    :func:`predict_rotation` there is no scan-range cut. Returns one row per input row that
    can diffract and hits a panel; column ``_source_index`` gives the input row.
    """
    _check(experiment)
    hkl = np.asarray(miller_index, dtype=np.int32).reshape(-1, 3)
    phi2, ok = _crossing_angles(experiment, hkl)
    phi = nearest_rotation_angle(phi2, ok, phi_near)
    idx = np.flatnonzero(ok)
    t = predict_rays(experiment, hkl[idx], phi[idx])
    t["_source_index"] = idx[t["_source_index"]]
    return t
