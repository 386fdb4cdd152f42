"""DIALS-integrated reflections with the models DIALS integrated them with, for the
integration tests (x4_xds and l_cysteine_wedges in ../shared/data).

x4_xds has no integrated.expt: DIALS integrated with its refined models, of which only
indexed.expt is kept. The refined incident beam is recovered exactly from DIALS's own
columns: |s1 - s0| = 1/d with |s0| = |s1| gives s1 . s0 = |s1|^2 - 1 / (2 d^2), linear in
s0 (least squares over all reflections). The refined detector plane is recovered exactly
from each reflection's s1 and xyzcal.mm: lab = D (x, y, 1) is parallel to s1, i.e.
(D^-1 s1) x (x, y, 1) = 0, linear in D^-1 (its null vector; unit fast axis). Its sensor
(thickness, mu, parallax correction) is the one dials.import recorded
(imported_experiments.json). The refined setting matrix A follows from
s1 - s0 = R(m2, phi) A h (phi from xyzcal.mm), linear in A. The rotation axis was not
refined.
"""

from __future__ import annotations

import numpy as np

from tests.conftest import data_path

CASES = {
    "x4": ("x4_xds/indexed.expt", "x4_xds/integrated.refl"),
    "lcys11": ("l_cysteine_wedges/11_integrated.expt", "l_cysteine_wedges/11_integrated.refl"),
    "lcys23": ("l_cysteine_wedges/23_integrated.expt", "l_cysteine_wedges/23_integrated.refl"),
}


def dials_reference(case: str):
    """(experiment, reflections DIALS processed (zeta != 0)) for one case."""
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl
    from gonio.core.models.beam import Beam

    expt_file, refl_file = CASES[case]
    expt = read_expt(data_path(expt_file))[0]
    refl = read_refl(data_path(refl_file))
    refl = refl.select(refl["zeta"] != 0)
    if case == "x4":
        s1, d = refl["s1"], refl["d"]
        s0 = np.linalg.lstsq(s1, np.sum(s1 * s1, axis=1) - 0.5 / d**2, rcond=None)[0]
        b = expt.beam
        expt = expt.replace(beam=Beam.from_s0(
            s0, polarization_normal=b.polarization_normal,
            polarization_fraction=b.polarization_fraction),
            detector=_refined_detector(refl, read_expt(data_path(
                "x4_xds/imported_experiments.json"))[0].detector),
            crystal=expt.crystal.replace(A=_refined_A(refl, s0, expt.goniometer.rotation_axis)))
    return expt, refl


def _refined_A(refl, s0, m2):
    """Least-squares A from R(m2, phi)^T (s1 - s0) = A h."""
    from gonio.core.models.rotation import rotate_vectors

    r = rotate_vectors(refl["s1"] - s0, m2, -refl["xyzcal.mm"][:, 2])
    h = refl["miller_index"].astype(float)
    return np.linalg.lstsq(h, r, rcond=None)[0].T


def _refined_detector(refl, imported):
    """The single-panel detector plane that maps each s1 to its xyzcal.mm."""
    from gonio.core.models.detector import Detector

    s1 = refl["s1"]
    h = np.column_stack([refl["xyzcal.mm"][:, :2], np.ones(len(s1))])
    rows = []
    for a, b in ((1, 2), (2, 0), (0, 1)):
        r = np.zeros((len(s1), 9))
        r[:, 3 * a:3 * a + 3] = s1 * h[:, b:b + 1]
        r[:, 3 * b:3 * b + 3] -= s1 * h[:, a:a + 1]
        rows.append(r)
    D = np.linalg.inv(np.linalg.svd(np.vstack(rows), full_matrices=False)[2][-1].reshape(3, 3))
    D /= np.linalg.norm(D[:, 0])
    if D[:, 2] @ s1[0] < 0:
        D = -D
    panel = imported[0].replace(fast_axis=D[:, 0], slow_axis=D[:, 1], origin=D[:, 2])
    return Detector([panel])
