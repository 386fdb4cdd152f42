"""Prediction with a scan-varying crystal model (A at every image boundary).

Within image i the reciprocal-lattice point moves from
r1 = S R(phi_i) F A_i h at its start to r2 = S R(phi_i+1) F A_i+1 h at its
end; the path is taken as the straight line r1 + alpha (r2 - r1), and the
reflection is recorded on image i when the point changes side of the Ewald
sphere within it. alpha solves |s0 + r1 + alpha dr| = |s0|:

    alpha^2 dr.dr + 2 alpha (s0 + r1).dr + r1.r1 + 2 s0.r1 = 0,   0 <= alpha <= 1,

then s1 = s0 + r1 + alpha dr and phi = phi_i + alpha (phi_i+1 - phi_i). The
reflection is entering when it starts outside the sphere. The lattice point is evaluated
once per image boundary j, as C_j h with C_j = S R(phi_j) F A_j (one matrix per boundary):
an image's end is the next image's start. This is the
method of the DIALS scan-varying predictor (D. G. Waterman et al., Acta
Cryst. D72 (2016) 558).

Candidates are the reflections of the static prediction (``crystal.A``),
each tried on ``window`` images either side of its static frame: a crossing
that the scan-varying model moves by more than that is not found.
:func:`gonio.core.prediction.rotation.predict_scan_varying` (also reached by
``predict_rotation`` when the crystal has scan points) makes the candidates
and calls :func:`scan_varying_crossings`; this module uses only :mod:`.rays` (and
:mod:`.threads`, and the kernel of :mod:`.kernels`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..models.experiment import Experiment
from ..models.rotation import axis_angle_matrix
from ..models.vectors import norms3
from ..reflection_table import ReflectionTable, take_rows
from .rays import PredictionError, rays_table
from .threads import thread_parts


def scan_varying_crossings(experiment: Experiment, hkl: np.ndarray, frame: np.ndarray,
                           d_min: float, d_max: float | None = None, window: int = 5,
                           nproc: int | None = None) -> ReflectionTable:
    """Crossings with ``crystal.A_at_scan_points`` of the candidates ``hkl`` (N, 3) whose
    static crossings (``crystal.A``, in a scan widened by ``window`` images) are at frames
    ``frame`` (N,): see the module. Large predictions run in up to ``nproc`` threads
    (None: all cores), the reflections split by Miller index (every row of one index in
    the same part, so that no crossing is found twice)."""

    scan, crystal = experiment.scan, experiment.crystal
    A_sp = crystal.A_at_scan_points
    n = scan.num_images
    if A_sp is None or len(A_sp) != n + 1:
        raise PredictionError(
            f"the crystal has {0 if A_sp is None else len(A_sp)} scan-point A matrices; a "
            f"scan-varying prediction over {n} images needs {n + 1} (one per image boundary). "
            "Refine scan-varying again, or predict with the static model.")
    parts = thread_parts(len(hkl) * (2 * window + 1), nproc)
    if parts == 1:
        table = _crossings(experiment, hkl, frame, d_min, d_max, window)
    else:
        part = np.asarray(hkl, np.int64).sum(axis=1) % parts
        with ThreadPoolExecutor(parts) as ex:
            tables = list(ex.map(lambda k: _crossings(experiment, hkl[part == k],
                                                      frame[part == k], d_min, d_max, window),
                                 range(parts)))
        table = ReflectionTable.concatenate(tables)
    table = table.select(np.argsort(table["xyzcal.px"][:, 2], kind="stable"))
    if experiment.identifier:
        table.experiment_identifiers = {0: experiment.identifier}
    return table


def _crossings(experiment: Experiment, hkl: np.ndarray, frame: np.ndarray, d_min: float,
               d_max: float | None, window: int) -> ReflectionTable:
    scan, gonio = experiment.scan, experiment.goniometer
    A_sp = experiment.crystal.A_at_scan_points
    n = scan.num_images
    z0 = scan.array_range[0]
    s0 = experiment.beam.s0
    phi_b = np.deg2rad(scan.angle_from_frame(z0 + np.arange(n + 1)))
    # r at image boundary j is C_j h, C_j = S R(e, phi_j) F A_j: one matrix per boundary
    C = gonio.setting_rotation @ axis_angle_matrix(gonio.rotation_axis_datum, phi_b) \
        @ gonio.fixed_rotation @ A_sp
    # each candidate's lattice point at the 2 window + 2 boundaries of its 2 window + 1
    # images, each boundary once (an image's end is the next one's start)
    centre = np.floor(frame - z0).astype(np.int64)
    hkl = np.asarray(hkl, np.int64)
    h = hkl.astype(float)
    offsets = np.arange(-window, window + 2)
    bound = np.clip(centre[:, None] + offsets[None, :], 0, n)
    # which side of the sphere each boundary's point is on, and its |r|^2, once per
    # boundary (a kernel: no gathered copy of C per boundary); an image's pair (start,
    # end) is kept only where it crosses (a tenth of them)
    from .kernels import boundary_points

    r = np.empty(bound.shape + (3,))
    out_b = np.empty(bound.shape, bool)
    rr_b = np.empty(bound.shape)
    boundary_points(np.ascontiguousarray(C, dtype=float), bound, h, np.asarray(s0, float),
                    float(np.linalg.norm(s0)), r, out_b, rr_b)
    img = centre[:, None] + offsets[None, :-1]
    cross = (img >= 0) & (img < n) & (out_b[:, :-1] != out_b[:, 1:]) \
        & (rr_b[:, :-1] <= 1.0 / d_min**2)
    if d_max:
        cross &= rr_b[:, :-1] > 1.0 / d_max**2
    pair = np.flatnonzero(cross)
    cand, step = np.divmod(pair, len(offsets) - 1)
    start = cand * len(offsets) + step  # the pair's first boundary in r, out_b (raveled)
    img, hkl, out1 = img.ravel()[pair], take_rows(hkl, cand), out_b.ravel()[start]
    # a lattice point tried twice (two candidates of one index within a window): once,
    # the first of each; np.unique's first rows are in the order of the sorted keys, so
    # by (index, image) as the candidates were before
    key = ((hkl + 1024) @ np.array([1 << 22, 1 << 11, 1])) * (n + 1) + img
    _, first = np.unique(key, return_index=True)
    img, hkl, out1, start = img[first], take_rows(hkl, first), out1[first], start[first]
    r1 = take_rows(r.reshape(-1, 3), start)
    dr = take_rows(r.reshape(-1, 3), start + 1) - r1
    a = np.einsum("ij,ij->i", dr, dr)
    b = 2.0 * np.einsum("ij,ij->i", s0 + r1, dr)
    c = np.einsum("ij,ij->i", r1, r1) + 2.0 * (r1 @ s0)
    disc = np.sqrt(np.clip(b * b - 4 * a * c, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (b + np.where(b >= 0, disc, -disc))  # numerically stable roots q/a, c/q
        roots = np.stack([q / a, c / q], axis=1)
    in01 = (roots >= 0) & (roots <= 1)
    alpha = np.where(in01[:, 0], roots[:, 0], roots[:, 1])
    ok = in01[:, 0] | in01[:, 1]
    alpha, img, out1 = alpha[ok], img[ok], out1[ok]
    hkl, r1, dr = take_rows(hkl, ok), take_rows(r1, ok), take_rows(dr, ok)
    r = r1 + alpha[:, None] * dr
    phi = phi_b[img] + alpha * (phi_b[img + 1] - phi_b[img])
    table = rays_table(experiment, hkl.astype(np.int32), phi, s0 + r, out1,
                       1.0 / norms3(r))
    del table["_source_index"]
    return table
