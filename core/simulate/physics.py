"""Per-reflection physics of the rotation method: intensity factors, reflecting range,
spot shape and the background.

Each reflection is a Gaussian around its predicted position, as in the
DIALS profile model (W. Kabsch, Acta Cryst. D66 (2010) 133): along the
rotation its reflecting range has sigma_phi = sigma_m / |zeta|; on the
detector the beam divergence sigma_b maps through the local Jacobian of the
panel pixel coordinates with respect to the direction of s1, and an
isotropic ``spot_sigma`` (px; crystal and beam size) is added.

Full (all-images) intensities carry the Lorentz and polarisation factors
exactly as DIALS corrects for them (dials ``lp_correction``):

    L = 1 / (|zeta| sin 2theta),
    P = (1 - 2f)(1 - (n . s1^)^2) + f (1 + cos^2 2theta),

for a beam polarised with fraction f in the plane normal to n. |zeta| is
taken as at least ZETA_MIN: reflections nearer the rotation axis are spread
over many images, not infinitely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ..integration.corrections import polarisation_factor
from ..models.detector import Detector
from ..models.experiment import Experiment
from ..reflection_table import ReflectionTable

ZETA_MIN = 0.05
SOLVENT_RING_D = 3.7  # A, water/solvent scattering maximum
SOLVENT_RING_WIDTH = 0.025  # 1/A, Gaussian sigma in 1/d


def lorentz_polarisation(expt: Experiment, refl: ReflectionTable) -> np.ndarray:
    """L P of each reflection (columns s1, zeta); 1 / (L P) is DIALS's ``lp`` column."""
    u1 = refl["s1"] / np.linalg.norm(refl["s1"], axis=1)[:, None]
    sin2t = np.linalg.norm(np.cross(u1, expt.beam.unit_s0), axis=1)
    L = 1.0 / (np.maximum(np.abs(refl["zeta"]), ZETA_MIN) * np.maximum(sin2t, 1e-6))
    return L * polarisation_factor(expt.beam, refl["s1"])


def reflecting_range_frames(refl: ReflectionTable, sigma_m_deg: float,
                            osc_deg: float) -> np.ndarray:
    """sigma of each reflection's reflecting range in frames: sigma_m / |zeta| / width."""
    return sigma_m_deg / np.maximum(np.abs(refl["zeta"]), ZETA_MIN) / osc_deg


def recorded_part(z_c: np.ndarray, sigma_z: np.ndarray, n_images: int):
    """(fraction inside frames [0, n_images), mean frame of that part) of Gaussian
    reflecting ranges centred at z_c (truncated-Gaussian mean)."""
    a, b = (0.0 - z_c) / sigma_z, (n_images - z_c) / sigma_z
    mass = ndtr(b) - ndtr(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = z_c + sigma_z * (np.exp(-0.5 * a * a) - np.exp(-0.5 * b * b)) \
            / math.sqrt(2 * math.pi) / mass
    return mass, z


def image_partials(z_c: np.ndarray, sigma_z: np.ndarray, n_images: int):
    """Long table (row, image index 0-based, fraction) of each reflecting range per image,
    for the images within 6 sigma of the centre."""
    lo = np.clip(np.floor(z_c - 6 * sigma_z), 0, n_images).astype(np.int64)
    hi = np.clip(np.floor(z_c + 6 * sigma_z) + 1, 0, n_images).astype(np.int64)
    span = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(len(z_c)), span)
    step = np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)
    img = np.repeat(lo, span) + step
    a = (img - z_c[rows]) / sigma_z[rows]
    return rows, img, ndtr(a + 1.0 / sigma_z[rows]) - ndtr(a)


def spot_covariance(expt: Experiment, refl: ReflectionTable, sigma_b_deg: float,
                    spot_sigma_px: float) -> np.ndarray:
    """Covariance (N, 2, 2) in px of each spot on its panel (parallax included)."""
    s0, s1 = expt.beam.s0, refl["s1"]
    e1 = np.cross(s1, s0)
    e1 /= np.linalg.norm(e1, axis=1)[:, None]
    e2 = np.cross(s1, e1)
    e2 /= np.linalg.norm(e2, axis=1)[:, None]
    J = np.zeros((len(s1), 2, 2))
    panel = refl["panel"].astype(np.int64)
    h = 1e-5  # rad
    k1 = np.linalg.norm(s1, axis=1)[:, None]
    for ip, pan in enumerate(expt.detector):
        sel = panel == ip
        if not sel.any():
            continue
        base = pan.millimeter_to_pixel(pan.ray_intersection(s1[sel])[0])
        for c, e in enumerate((e1, e2)):
            ray = s1[sel] + h * k1[sel] * e[sel]
            J[sel, :, c] = (pan.millimeter_to_pixel(pan.ray_intersection(ray)[0]) - base) / h
    sigma_b = np.deg2rad(sigma_b_deg)
    return sigma_b**2 * J @ np.swapaxes(J, 1, 2) + spot_sigma_px**2 * np.eye(2)


@dataclass
class SpotProfiles:
    """Arrays the spot rendering (:mod:`.render`) takes: centre, inverse covariance,
    normalisation, box."""

    panel: np.ndarray
    xc: np.ndarray
    yc: np.ndarray
    ia: np.ndarray
    ib: np.ndarray
    ic: np.ndarray
    norm: np.ndarray
    hx: np.ndarray
    hy: np.ndarray

    @classmethod
    def from_covariance(cls, panel, xy_px: np.ndarray, cov: np.ndarray,
                        n_sigma: float = 5.0) -> SpotProfiles:
        inv = np.linalg.inv(cov)
        return cls(panel=np.asarray(panel, dtype=np.int64),
                   xc=np.ascontiguousarray(xy_px[:, 0]), yc=np.ascontiguousarray(xy_px[:, 1]),
                   ia=np.ascontiguousarray(inv[:, 0, 0]), ib=np.ascontiguousarray(inv[:, 0, 1]),
                   ic=np.ascontiguousarray(inv[:, 1, 1]),
                   norm=1.0 / (2 * np.pi * np.sqrt(np.linalg.det(cov))),
                   hx=n_sigma * np.sqrt(cov[:, 0, 0]), hy=n_sigma * np.sqrt(cov[:, 1, 1]))

    def args(self, rows) -> tuple:
        return (self.panel[rows], self.xc[rows], self.yc[rows], self.ia[rows], self.ib[rows],
                self.ic[rows], self.norm[rows], self.hx[rows], self.hy[rows])


def background(det: Detector, s0: np.ndarray, constant: float, ring: float) -> np.ndarray:
    """Expected background photons per pixel (n_panels, slow, fast): a constant plus a
    Gaussian solvent ring in 1/d around SOLVENT_RING_D."""
    out = []
    for pan in det:
        nf, ns = pan.image_size
        jj, ii = np.mgrid[0:ns, 0:nf]
        xy = np.column_stack([ii.ravel() + 0.5, jj.ravel() + 0.5])
        dstar = 1.0 / pan.resolution_at_pixel(s0, xy)
        r = ring * np.exp(-0.5 * ((dstar - 1 / SOLVENT_RING_D) / SOLVENT_RING_WIDTH) ** 2)
        out.append((constant + r).reshape(ns, nf))
    return np.array(out)
