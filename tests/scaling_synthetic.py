"""Synthetic integrated sweeps with known scale factors, for the scaling tests and benchmark.

A real experiment (the geometry of one L-cysteine sweep: beam, detector, multi-axis
goniometer, 170 deg scan) with a crystal of the given cell and space group; every
reflection crossing the sphere is predicted (gonio's rotation prediction), gets a
Wilson-distributed true intensity (the same for symmetry equivalents), and is observed as

    counts = Poisson(g_true * I_true + background) - background,

g_true = scale(phi) * exp(B(phi) / (2 d^2)) * absorption(s1 in the crystal frame),
with a smooth scale change of +-15 %, a B drifting by ``b_drift`` A^2 over the scan and an
absorption-like term that depends on the scattered-beam direction (+-``absorption``).
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np

from gonio.core.io.dials_expt import read_expt
from gonio.core.merging.equivalents import map_to_asu
from gonio.core.models.crystal import Crystal
from gonio.core.models.experiment import ExperimentList
from gonio.core.models.rotation import rotate_vectors
from gonio.core.prediction.rotation import predict_rotation
from gonio.core.reflection_table import Flags


@dataclass
class Synthetic:
    experiments: ExperimentList
    table: object
    g_true: np.ndarray     # applied inverse scale factor of each row
    i_true: np.ndarray     # true intensity of each row (its unique reflection)


def true_scale(phi_deg, d, s1_crystal, phi0, width, b_drift, absorption, amplitude=0.15):
    """The applied inverse scale factor."""
    x = (phi_deg - phi0) / width
    scale = 1.0 + amplitude * np.sin(2 * np.pi * x)
    b = -b_drift * x
    u = np.array([0.6, 0.0, 0.8])
    absorb = 1.0 - absorption * np.dot(s1_crystal, u)
    return scale * np.exp(b / (2 * d ** 2)) * absorb


def true_intensities(hkl_asu, mean_i=2000.0, seed=0):
    """Wilson-distributed (B = 20 A^2 on a 40 x 50 x 60 cell scale) true intensities, a
    deterministic function of the ASU index (the same in every sweep)."""
    key = (hkl_asu[:, 0].astype(np.int64) * 1_000_003 + hkl_asu[:, 1] * 1_009 + hkl_asu[:, 2])
    u = np.random.default_rng(seed).random(2 ** 20)[np.abs(key) % 2 ** 20]
    return -np.log1p(-u) * mean_i


def make_sweep(expt_path, cell=(40.0, 50.0, 60.0, 90, 90, 90), space_group="P 21 21 21",
               d_min=2.0, b_drift=4.0, absorption=0.05, mean_i=2000.0, background=20.0,
               seed=1, amplitude=0.15, overall_scale=1.0, overall_b=0.0, orientation_seed=1,
               identifier="synthetic", scan_deg=None, absences=False,
               indexed_in=None) -> Synthetic:
    """``scan_deg``: keep only the first scan_deg of the rotation; ``absences``: the
    systematically absent reflections of ``space_group`` get zero intensity;
    ``indexed_in``: the space group recorded in the crystal model (e.g. "P 1", as
    integrate leaves it; default ``space_group``)."""
    rng = np.random.default_rng(seed)
    e = read_expt(expt_path)[0]
    sg = gemmi.SpaceGroup(space_group)
    U = np.linalg.qr(np.random.default_rng(orientation_seed).normal(size=(3, 3)))[0]
    e = e.replace(crystal=Crystal.from_cell_and_U(gemmi.UnitCell(*cell), U,
                                                  gemmi.SpaceGroup(indexed_in or space_group)),
                  identifier=identifier)
    if scan_deg is not None:
        first = e.scan.image_range[0]
        n = int(round(scan_deg / abs(e.scan.oscillation[1])))
        e = e.replace(scan=e.scan.replace(image_range=(first, first + n - 1)))
    t = predict_rotation(e, d_min=d_min)
    t["id"] = np.zeros(len(t), np.int32)
    d = t["d"]
    # true intensities: Wilson (B = 20 A^2), one per unique reflection
    m = map_to_asu(t["miller_index"], sg)
    i_true = true_intensities(m.hkl_asu, mean_i) * np.exp(-20.0 / (2 * d ** 2))
    if absences:
        h = np.ascontiguousarray(t["miller_index"], dtype=np.int32)
        i_true[np.asarray(sg.operations().systematic_absences(h), bool)] = 0.0
    phi = e.scan.angle_from_frame(t["xyzcal.px"][:, 2])
    s1 = t["s1"] / np.linalg.norm(t["s1"], axis=1)[:, None]
    s1c = rotate_vectors(s1, e.goniometer.rotation_axis, -np.radians(phi))
    lo, hi = e.scan.oscillation_range
    g = true_scale(phi, d, s1c, min(lo, hi), abs(hi - lo), b_drift, absorption, amplitude)
    g = g * overall_scale * np.exp(overall_b / (2 * d ** 2))
    lam = g * i_true
    counts = rng.poisson(lam + background) - background
    var = lam + background  # the Poisson variance: the error model should find a = 1, b = 0
    t["xyzobs.px.value"] = t["xyzcal.px"].copy()
    for k in ("sum", "prf"):
        t[f"intensity.{k}.value"] = counts.astype(float)
        t[f"intensity.{k}.variance"] = var.astype(float)
    t["flags"] = np.full(len(t), Flags.integrated_sum | Flags.integrated_prf | Flags.indexed,
                         np.uint64)
    t.experiment_identifiers = {0: e.identifier}
    return Synthetic(ExperimentList([e]), t, g, i_true)


def combine(sweeps: list[Synthetic]) -> Synthetic:
    """Several synthetic sweeps as one experiment list and table (ids 0, 1, ...)."""
    from gonio.core.reflection_table import ReflectionTable

    tables = []
    for i, s in enumerate(sweeps):
        t = s.table.copy()
        t["id"] = np.full(len(t), i, np.int32)
        t.experiment_identifiers = {i: s.experiments[0].identifier}
        tables.append(t)
    return Synthetic(ExperimentList([s.experiments[0] for s in sweeps]),
                     ReflectionTable.concatenate(tables),
                     np.concatenate([s.g_true for s in sweeps]),
                     np.concatenate([s.i_true for s in sweeps]))


def scale_deviation(g, g_ref, d):
    """log(g / g_ref) after removing a free overall scale and relative B (which scaling
    cannot fix): (deviations, fitted (log scale, B))."""
    lr = np.log(g / g_ref)
    x = np.column_stack([np.ones(len(lr)), 1 / (2 * d ** 2)])
    coef = np.linalg.lstsq(x, lr, rcond=None)[0]
    return lr - x @ coef, coef


def deviation_from_truth(table, g_true):
    """:func:`scale_deviation` of the refined inverse scale factors of the scaled rows
    from the applied ones."""
    used = table.get_flags(Flags.scaled)
    return scale_deviation(table["inverse_scale_factor"][used], g_true[used],
                           table["d"][used])
