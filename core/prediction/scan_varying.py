"""Prediction with a scan-varying crystal model (A at every image boundary).

Within image i the reciprocal-lattice point moves from
r1 = S R(phi_i) F A_i h at its start to r2 = S R(phi_i+1) F A_i+1 h at its
end; the path is taken as the straight line r1 + alpha (r2 - r1), and the
reflection is recorded on image i when the point changes side of the Ewald
sphere within it. alpha solves |s0 + r1 + alpha dr| = |s0|:

    alpha^2 dr.dr + 2 alpha (s0 + r1).dr + r1.r1 + 2 s0.r1 = 0,   0 <= alpha <= 1,

then s1 = s0 + r1 + alpha dr and phi = phi_i + alpha (phi_i+1 - phi_i). The
reflection is entering when it starts outside the sphere. This is the
method of the DIALS scan-varying predictor (D. G. Waterman et al., Acta
Cryst. D72 (2016) 558).

Candidates are the reflections of the static prediction (``crystal.A``),
each tried on ``window`` images either side of its static frame: a crossing
that the scan-varying model moves by more than that is not found.
:func:`gonio.core.prediction.rotation.predict_scan_varying` (also reached by
``predict_rotation`` when the crystal has scan points) makes the candidates
and calls :func:`scan_varying_rays`; this module uses only :mod:`.rays`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..models.experiment import Experiment
from ..reflection_table import ReflectionTable
from .rays import PredictionError, lab_rlp, rays_table

#: candidates handed to each thread at least (numpy releases the GIL on large arrays)
THREAD_MIN = 100_000


def scan_varying_rays(experiment: Experiment, static: ReflectionTable, d_min: float,
                      d_max: float | None = None, window: int = 5) -> ReflectionTable:
    """Crossings with ``crystal.A_at_scan_points`` of the candidates in ``static`` (a static
    prediction of the same experiment, widened by ``window`` images): see the module.
    Large predictions run in two threads, the reflections split by Miller index (every
    row of one index in the same part, so that no crossing is found twice)."""
    scan, crystal = experiment.scan, experiment.crystal
    A_sp = crystal.A_at_scan_points
    n = scan.num_images
    if A_sp is None or len(A_sp) != n + 1:
        raise PredictionError(
            f"the crystal has {0 if A_sp is None else len(A_sp)} scan-point A matrices; a "
            f"scan-varying prediction over {n} images needs {n + 1} (one per image boundary). "
            "Refine scan-varying again, or predict with the static model.")
    parts = 2 if len(static) * (2 * window + 1) >= 2 * THREAD_MIN and (os.cpu_count() or 1) > 1 \
        else 1
    if parts == 1:
        table = _crossings(experiment, static, d_min, d_max, window)
    else:
        part = np.asarray(static["miller_index"], np.int64).sum(axis=1) % parts
        with ThreadPoolExecutor(parts) as ex:
            tables = list(ex.map(lambda k: _crossings(experiment, static.select(part == k),
                                                      d_min, d_max, window), range(parts)))
        table = ReflectionTable.concatenate(tables)
    table = table.select(np.argsort(table["xyzcal.px"][:, 2], kind="stable"))
    if experiment.identifier:
        table.experiment_identifiers = {0: experiment.identifier}
    return table


def _crossings(experiment: Experiment, static: ReflectionTable, d_min: float,
               d_max: float | None, window: int) -> ReflectionTable:
    scan, gonio = experiment.scan, experiment.goniometer
    A_sp = experiment.crystal.A_at_scan_points
    n = scan.num_images
    z0 = scan.array_range[0]
    centre = np.floor(static["xyzcal.px"][:, 2] - z0).astype(np.int64)
    offsets = np.arange(-window, window + 1)
    img = (centre[:, None] + offsets[None, :]).ravel()
    hkl = np.repeat(static["miller_index"], len(offsets), axis=0).astype(np.int64)
    inside = (img >= 0) & (img < n)
    img, hkl = img[inside], hkl[inside]
    key = ((hkl + 1024) @ np.array([1 << 22, 1 << 11, 1])) * (n + 1) + img
    _, first = np.unique(key, return_index=True)
    img, hkl = img[first], hkl[first]

    s0 = experiment.beam.s0
    phi_b = np.deg2rad(scan.angle_from_frame(z0 + np.arange(n + 1)))

    def lab(j):
        return lab_rlp(gonio, np.einsum("nij,nj->ni", A_sp[j], hkl.astype(float)), phi_b[j])

    r1, r2 = lab(img), lab(img + 1)
    k = np.linalg.norm(s0)
    out1 = np.linalg.norm(s0 + r1, axis=1) - k >= 0
    out2 = np.linalg.norm(s0 + r2, axis=1) - k >= 0
    dstar_max_sq = 1.0 / d_min**2
    cross = (out1 != out2) & (np.einsum("ij,ij->i", r1, r1) <= dstar_max_sq)
    dr = r2 - r1
    a = np.einsum("ij,ij->i", dr, dr)
    b = 2.0 * np.einsum("ij,ij->i", s0 + r1, dr)
    c = np.einsum("ij,ij->i", r1, r1) + 2.0 * (r1 @ s0)
    disc = np.sqrt(np.clip(b * b - 4 * a * c, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (b + np.where(b >= 0, disc, -disc))  # numerically stable roots q/a, c/q
        roots = np.stack([q / a, c / q], axis=1)
    in01 = (roots >= 0) & (roots <= 1)
    alpha = np.where(in01[:, 0], roots[:, 0], roots[:, 1])
    ok = cross & (in01[:, 0] | in01[:, 1])
    if d_max:
        ok &= np.einsum("ij,ij->i", r1, r1) > 1.0 / d_max**2
    alpha, img, hkl, r1, dr, out1 = alpha[ok], img[ok], hkl[ok], r1[ok], dr[ok], out1[ok]
    r = r1 + alpha[:, None] * dr
    phi = phi_b[img] + alpha * (phi_b[img + 1] - phi_b[img])
    table = rays_table(experiment, hkl.astype(np.int32), phi, s0 + r, out1,
                       1.0 / np.linalg.norm(r, axis=1))
    del table["_source_index"]
    return table
