"""Per-reflection correction factors stored with integrated intensities, exactly as DIALS
computes them (``dials/algorithms/integration/corrections.h``, ``reflection_table.
compute_corrections``, ``compute_d`` and the gaussian_rs ``PartialityCalculator3D``).

- ``lp``: L^-1 / P, the factor an intensity is multiplied by. L^-1 = |s1 . (m2 x s0)| /
  (|s0| |s1|) = |zeta| sin 2theta for a rotation (1 for a still), and the polarisation
  P = (1 - 2f)(1 - (n . s1^)^2) + f (1 + (s0^ . s1^)^2) for a beam polarised with fraction
  f (XDS convention: f = 0.5 unpolarised) in the plane normal to n
  (W. Kabsch, J. Appl. Cryst. 21 (1988) 916).
- ``qe``: the fraction of the diffracted beam the sensor absorbs, 1 - exp(-mu t0 /
  |cos a|), a the angle between s1 and the panel normal, mu (1/mm) and t0 (mm) the
  sensor's attenuation coefficient and thickness; intensities are divided by it. DIALS
  writes the column only when the detector has mu > 0.
- ``partiality``: the fraction of a Gaussian rocking curve (sigma_m / |zeta|) about the
  predicted angle phi that lies inside the shoebox's images z0..z1:
  (erf(c (phi_b - phi)) - erf(c (phi_a - phi))) / 2, c = |zeta| / (sqrt2 sigma_m).
- ``d``: the resolution 1/|A h| (A) from the crystal's static setting matrix.

Every function works on whole arrays; angles in degrees.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from ..models.beam import Beam
from ..models.experiment import Experiment
from ..models.vectors import norms3
from .kabsch import kabsch_basis
from .profile_model import ProfileModel


def polarisation_factor(beam: Beam, s1) -> np.ndarray:
    """P of diffracted beams s1 (N, 3): (1 - 2f)(1 - (n . s1^)^2) + f (1 + cos^2 2theta)."""
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    u1 = s1 / norms3(s1)[:, None]
    u0 = beam.s0 / np.linalg.norm(beam.s0)
    n = np.asarray(beam.polarization_normal, dtype=float)
    f = beam.polarization_fraction
    return (1.0 - 2.0 * f) * (1.0 - (u1 @ n) ** 2) + f * (1.0 + (u1 @ u0) ** 2)


def lorentz_inverse(s0, m2, s1) -> np.ndarray:
    """1 / L of the rotation method, |s1 . (m2 x s0)| / (|s0| |s1|) = |zeta| sin 2theta."""
    s0, m2 = np.asarray(s0, dtype=float), np.asarray(m2, dtype=float)
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    return np.abs(s1 @ np.cross(m2, s0)) / (np.linalg.norm(s0) * norms3(s1))


def lp(experiment: Experiment, s1) -> np.ndarray:
    """DIALS's ``lp`` column: L^-1 / P for a rotation scan, 1 / P for a still."""
    beam = experiment.beam
    P = polarisation_factor(beam, s1)
    if experiment.is_sweep:
        return lorentz_inverse(beam.s0, experiment.goniometer.rotation_axis, s1) / P
    return 1.0 / P


def qe(experiment: Experiment, s1, panel) -> np.ndarray:
    """DIALS's ``qe`` column: 1 - exp(-mu t0 / |cos a|) on each reflection's panel."""
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    panel = np.asarray(panel, dtype=np.int64)
    out = np.empty(len(s1))
    u1 = s1 / norms3(s1)[:, None]
    for ip in np.unique(panel):
        sel = panel == ip
        pan = experiment.detector[int(ip)]
        cos_a = np.abs(u1[sel] @ pan.normal)
        out[sel] = 1.0 - np.exp(-pan.mu * pan.thickness / cos_a)
    return out


def has_qe(experiment: Experiment) -> bool:
    """Whether DIALS writes a ``qe`` column: the detector's first panel has mu > 0."""
    return experiment.detector[0].mu > 0


def partiality(experiment: Experiment, s1, frame, bbox, model: ProfileModel) -> np.ndarray:
    """DIALS's ``partiality`` column: the part of each reflection's Gaussian reflecting
    range recorded on the images bbox z0..z1 (``frame`` = xyzcal.px z, the predicted
    frame). A scan-varying model gives sigma_m of image floor(frame)."""
    _, sigma_m = model.at_frames(experiment, np.asarray(frame, dtype=float))
    return partiality_of_width(experiment, s1, frame, bbox, sigma_m)


def partiality_of_width(experiment: Experiment, s1, frame, bbox, sigma_m_deg) -> np.ndarray:
    """:func:`partiality` for given rocking widths ``sigma_m_deg`` (deg; one per reflection
    or one for all), e.g. the resolution-dependent ones of
    :func:`.profile_model.rocking_width_deg`."""
    scan = experiment.scan
    frame = np.asarray(frame, dtype=float)
    bbox = np.asarray(bbox).reshape(-1, 6)
    zeta = kabsch_basis(experiment.beam.s0, s1, experiment.goniometer.rotation_axis)[3]
    c = np.abs(zeta) / (math.sqrt(2.0) * np.deg2rad(sigma_m_deg))
    phi = np.deg2rad(scan.angle_from_frame(frame))
    phi_a = np.deg2rad(scan.angle_from_frame(bbox[:, 4]))
    phi_b = np.deg2rad(scan.angle_from_frame(bbox[:, 5]))
    # abs: a negative oscillation runs the images' angles backwards
    return np.abs(0.5 * (erf(c * (phi_b - phi)) - erf(c * (phi_a - phi))))


def d_spacing(experiment: Experiment, miller_index) -> np.ndarray:
    """Resolution (A) of each Miller index: 1 / |A h| with A = UB of the static crystal
    (DIALS ``compute_d``: the unit cell's d-spacing)."""
    h = np.asarray(miller_index, dtype=float).reshape(-1, 3)
    return 1.0 / norms3(h @ experiment.crystal.A.T)
