"""The Gaussian reflection-profile model of the rotation method (DIALS ``gaussian_rs``;
W. Kabsch, Acta Cryst. D66 (2010) 133 and J. Appl. Cryst. 43 (2010) 611).

A reflection is a Gaussian in the local Kabsch frame (:mod:`.kabsch`): the beam
divergence sigma_b (deg) sets its extent in c1, c2 (on the detector) and the mosaicity
sigma_m (deg) its extent in c3 = zeta (phi' - phi) (along the rotation). ``n_sigma``
(3 by default) sets the size of the measurement box and of the foreground.

What is estimated and how (``estimate_profile_model``), as DIALS's
``ProfileModelCalculator`` does it from the indexed strong spots and their shoeboxes:

- only spots with |zeta| >= min_zeta (0.05) are used;
- sigma_b: for each spot, the count-weighted mean square angle between the
  diffracted-beam directions of its spot pixels (pixel centres) and its predicted s1,
  sum(v a^2) / (sum(v) - 1), for spots with sum(v) > 1; sigma_b is the root of the mean
  of these over the spots. No background is subtracted (as in DIALS), and the angle is
  the full 2D offset, so for a spot whose pixels follow a 2D Gaussian of per-axis sigma s
  this is about sqrt(2) s, less the tails the spot finder did not keep;
- sigma_m, algorithm ``extended`` (DIALS's default): maximum likelihood over sigma_m of
  the counts each spot puts on each image. An image spanning phi0..phi1 records the
  fraction z = (erf(|zeta| (tau + dphi/2) / (sqrt2 sigma_m)) -
  erf(|zeta| (tau - dphi/2) / (sqrt2 sigma_m))) / 2 of a spot whose predicted angle is
  phi_c, with tau = (phi0 + phi1)/2 - phi_c; the log-likelihood adds, per spot,
  sum_i n_i log z_i - (K - 1) log sum_i z_i (n_i the foreground counts on image i,
  K = sum n_i). ``basic`` maximises sum log z over the images where a spot has foreground
  pixels (falling back, as DIALS does, to the spread of zeta tau when that fails);
- the resolution term (gonio, ``sigma_m_model=auto``): a lattice point of finite size
  sigma_rlp (1/A; a small crystal, nanoBragg's ``-gauss_xtal``, electron diffraction)
  takes lambda sigma_rlp / sin 2theta (rad) in c3 to cross the Ewald sphere, so the
  width along the rotation is sqrt(sigma_m^2 + (lambda sigma_m_rlp / sin 2theta)^2):
  about sigma_rlp d, wide at low resolution, narrow at high resolution, where DIALS's
  single sigma_m (an average, weighted to the strong low-resolution spots) is too wide.
  Both terms are fitted by the ``extended`` likelihood; the constant model is kept
  unless the resolution term is significant (:func:`_sigma_m_with_rlp`). sigma_m_rlp
  is written to the .expt ``profile`` entry as an extra key, which DIALS ignores;
- scan-varying (``scan_varying=True``, DIALS ``gaussian_rs.scan_varying``): the spots
  are split into their single-image parts, sigma_b and sigma_m (``basic``) are estimated
  image by image, and their squares are smoothed along the scan with a 51-image Gaussian
  kernel (sigma 25/3 images, ends held), giving one value per image.

Units: angles in degrees everywhere in gonio (DIALS uses radians internally and stores
degrees in the .expt ``profile`` entry, exactly the dict ``ProfileModel.to_dict``
writes).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf

from ..errors import GonioError
from ..models.experiment import Experiment
from ..reflection_table import Flags, ReflectionTable
from .kabsch import kabsch_basis, kabsch_c12, kabsch_phi_from_c3, kabsch_s1_from_c12

PROFILE_ID = "gaussian_rs"
MIN_SPOTS_OVERALL = 50  # DIALS gaussian_rs.min_spots.overall
MIN_SPOTS_PER_DEGREE = 20  # DIALS gaussian_rs.min_spots.per_degree
MIN_ZETA = 0.05  # DIALS gaussian_rs.filter.min_zeta
SIGMA_B_MULTIPLIER = 2.0  # DIALS compute_bbox: the box is twice the foreground in c1, c2
SIGMA_M_MODELS = ("auto", "constant")  # gonio profile.gaussian_rs.sigma_m_model (any case)
MAX_REFLECTIONS = 10000  # DIALS: above this, a subset (refinement's first) is used
SMOOTHING_KERNEL = 51  # images, scan-varying model
_TINY = 1e-10
VALID, FOREGROUND = 1, 4  # DIALS MaskCode bits (as gonio.core.spotfinding.spots writes them)


class ProfileModelError(GonioError):
    """The profile model cannot be made from what was given."""


@dataclass(eq=False)
class ProfileModel:
    """sigma_b, sigma_m (deg; one value, or one per image when scan-varying) and n_sigma;
    optionally sigma_m_rlp (1/A), the size of the reciprocal-lattice point, which adds
    lambda sigma_m_rlp / sin 2theta (rad) in quadrature to each reflection's width in c3
    (:func:`rocking_width_deg`; None: DIALS's constant sigma_m)."""

    sigma_b_deg: float | np.ndarray
    sigma_m_deg: float | np.ndarray
    n_sigma: float = 3.0
    n_used: int | None = field(default=None, compare=False)  # spots the estimate used
    sigma_m_rlp: float | None = None

    def __post_init__(self):
        b, m = np.asarray(self.sigma_b_deg, float), np.asarray(self.sigma_m_deg, float)
        if b.shape != m.shape or b.ndim > 1:
            raise ProfileModelError(
                "sigma_b and sigma_m must both be single values or both one value per image "
                f"(got {b.size} and {m.size} values).")
        if not (np.all(np.isfinite(b)) and np.all(b > 0)):
            raise ProfileModelError(
                f"sigma_b must be a positive angle in degrees (got {self.sigma_b_deg}); "
                "a typical value is 0.01-0.1 deg for X-rays, 0.001-0.01 deg for electrons.")
        if not (np.all(np.isfinite(m)) and np.all(m > 0)):
            raise ProfileModelError(
                f"sigma_m must be a positive angle in degrees (got {self.sigma_m_deg}): a "
                "reflecting range of zero has no extent along the rotation, so no image "
                "would record any reflection. Typical values are 0.02-0.5 deg.")
        if not (math.isfinite(self.n_sigma) and self.n_sigma > 0):
            raise ProfileModelError(f"n_sigma must be positive (got {self.n_sigma}).")
        if self.sigma_m_rlp is not None:
            if not (math.isfinite(self.sigma_m_rlp) and self.sigma_m_rlp >= 0):
                raise ProfileModelError(
                    f"sigma_m_rlp must be a size in reciprocal space, >= 0 1/A (got "
                    f"{self.sigma_m_rlp}); leave it unset for DIALS's constant sigma_m.")
            self.sigma_m_rlp = float(self.sigma_m_rlp)
        if b.ndim == 1:
            self.sigma_b_deg, self.sigma_m_deg = b, m
        else:
            self.sigma_b_deg, self.sigma_m_deg = float(b), float(m)

    def __eq__(self, other) -> bool:
        if not isinstance(other, ProfileModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    @property
    def scan_varying(self) -> bool:
        return isinstance(self.sigma_b_deg, np.ndarray)

    def at_frames(self, experiment: Experiment, frame) -> tuple[np.ndarray, np.ndarray]:
        """(sigma_b, sigma_m) deg for reflections at frame coordinates ``frame`` (z, as in
        xyzcal.px): a scan-varying model takes the value of image floor(z), the first or
        last outside the scan (DIALS's rule)."""
        frame = np.asarray(frame, dtype=float)
        if not self.scan_varying:
            return np.full(frame.shape, self.sigma_b_deg), np.full(frame.shape, self.sigma_m_deg)
        i = np.floor(frame).astype(np.int64) - experiment.scan.array_range[0]
        i = np.clip(i, 0, len(self.sigma_b_deg) - 1)
        return self.sigma_b_deg[i], self.sigma_m_deg[i]

    def to_dict(self) -> dict:
        """The DIALS .expt ``profile`` entry (degrees)."""
        if self.scan_varying:
            b, m = [float(x) for x in self.sigma_b_deg], [float(x) for x in self.sigma_m_deg]
        else:
            b, m = float(self.sigma_b_deg), float(self.sigma_m_deg)
        out = {"__id__": PROFILE_ID, "n_sigma": float(self.n_sigma), "sigma_b": b,
               "sigma_m": m}
        if self.sigma_m_rlp is not None:  # gonio's extra key: DIALS ignores it
            out["sigma_m_rlp"] = self.sigma_m_rlp
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ProfileModel:
        if d.get("__id__") != PROFILE_ID:
            raise ProfileModelError(
                f"the experiment's profile model is {d.get('__id__')!r}; gonio integrates "
                f"with the {PROFILE_ID} model only. Give sigma_b= and sigma_m= to replace it.")
        return cls(d["sigma_b"], d["sigma_m"], d.get("n_sigma", 3.0),
                   sigma_m_rlp=d.get("sigma_m_rlp"))


def sin_two_theta(s1, s0) -> np.ndarray:
    """sin 2theta of diffracted beams s1 (N, 3) for the incident beam s0."""
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    u1 = s1 / np.linalg.norm(s1, axis=1)[:, None]
    return np.linalg.norm(np.cross(u1, np.asarray(s0, float) / np.linalg.norm(s0)), axis=1)


def rocking_width_deg(model: ProfileModel, experiment: Experiment, s1, frame) -> np.ndarray:
    """Each reflection's Gaussian width along the rotation in Kabsch's c3 = zeta dphi
    (deg): sqrt(sigma_m^2 + w^2), with w the lattice point's own size seen along the
    rotation.

    A lattice point of size sigma_rlp (1/A) crosses the Ewald sphere at the speed
    d|s0 + r|/dphi = |s0| |zeta| sin 2theta (1/A per rad), so it diffracts over
    dphi = lambda sigma_rlp / (|zeta| sin 2theta), i.e. w = lambda sigma_rlp / sin 2theta in
    c3: about sigma_rlp d, wide at low resolution where a mosaic spread (a rotation,
    constant in c3) is not. With ``sigma_m_rlp`` estimated (:func:`estimate_profile_model`)
    w is that term; without it (DIALS's constant model) w = sigma_b / sin 2theta, the
    lattice point taken as large along the sphere normal as across it, which keeps the
    whole of a low-angle reflection in its box. A scan-varying sigma_m is taken at
    image floor(frame)."""
    sigma_b, sigma_m = model.at_frames(experiment, frame)
    sin2t = np.maximum(sin_two_theta(s1, experiment.beam.s0), 1e-6)
    if model.sigma_m_rlp is None:
        w = sigma_b / sin2t
    else:
        w = np.rad2deg(experiment.beam.wavelength * model.sigma_m_rlp / sin2t)
    return np.sqrt(sigma_m**2 + w**2)


# -- bounding boxes and the foreground -------------------------------------------------


def bbox_from_profile(experiment: Experiment, s1, phi_deg, panel, model: ProfileModel,
                      sigma_b_multiplier: float = SIGMA_B_MULTIPLIER) -> np.ndarray:
    """Shoebox (x0, x1, y0, y1, z0, z1) of each reflection (int32 (N, 6); px and frames,
    ends exclusive), as DIALS's ``BBoxCalculator3D``.

    The four corners (+-D, +-D) of the square D = sigma_b_multiplier n_sigma sigma_b in
    the (c1, c2) plane are mapped to the reflection's panel; x, y are the floor of the
    smallest and the ceiling of the largest corner coordinates. Along the rotation,
    phi +- n_sigma sigma_m / zeta are turned into frames (floor, ceiling), then held
    inside the scan. DIALS's ``compute_bbox`` uses sigma_b_multiplier = 2 to leave room
    for background around the foreground.
    """
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    phi_deg = np.asarray(phi_deg, dtype=float)
    panel = np.asarray(panel, dtype=np.int64)
    scan = experiment.scan
    frame = scan.frame_from_angle(phi_deg)
    sigma_b, sigma_m = model.at_frames(experiment, frame)
    delta_b = sigma_b * model.n_sigma * sigma_b_multiplier
    delta_m = sigma_m * model.n_sigma
    e1, e2, _, zeta = kabsch_basis(experiment.beam.s0, s1, experiment.goniometer.rotation_axis)
    bbox = np.empty((len(s1), 6), np.int32)
    bbox[:, :4] = box_xy(experiment, s1, e1, e2, delta_b, panel)
    _, _, bbox[:, 4], bbox[:, 5] = frame_range(scan, delta_m, phi_deg, zeta)
    return bbox


def frame_range(scan, delta_m_deg, phi_deg, zeta):
    """(first, last frame (float) of the rotation range phi +- delta_m / zeta, deg, of
    :func:`bbox_from_profile`; and the box's z0, z1: their floor and ceiling held inside
    the scan's array range, ends exclusive)."""
    z = scan.frame_from_angle(np.stack([kabsch_phi_from_c3(-delta_m_deg, phi_deg, zeta),
                                        kabsch_phi_from_c3(delta_m_deg, phi_deg, zeta)]))
    lo, hi = z.min(0), z.max(0)
    a0, a1 = scan.array_range
    return lo, hi, np.clip(np.floor(lo), a0, a1 - 1), np.clip(np.ceil(hi), a0 + 1, a1)


def box_xy(experiment: Experiment, s1, e1, e2, delta_b, panel) -> np.ndarray:
    """x0, x1, y0, y1 (int32 (N, 4); px, ends exclusive) of :func:`bbox_from_profile`: the
    floor of the smallest and the ceiling of the largest pixel coordinates of the corners
    (+-delta_b, +-delta_b) deg in the (c1, c2) plane of reflections ``s1`` with Kabsch axes
    ``e1``, ``e2`` (:func:`.kabsch.kabsch_basis`), each on its panel."""
    xy = np.empty((4, len(s1), 2))
    for k, (a, b) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1))):
        corner = kabsch_s1_from_c12(a * delta_b, b * delta_b, s1, e1, e2)
        for ip in np.unique(panel):
            sel = panel == ip
            pan = experiment.detector[int(ip)]
            xy[k, sel] = pan.millimeter_to_pixel(pan.ray_intersection(corner[sel])[0])
    return np.column_stack([np.floor(xy[..., 0].min(0)), np.ceil(xy[..., 0].max(0)),
                            np.floor(xy[..., 1].min(0)), np.ceil(xy[..., 1].max(0))]
                           ).astype(np.int32)


def is_foreground(c1_deg, c2_deg, delta_b_deg) -> np.ndarray:
    """DIALS's foreground criterion (``MaskCalculator3D``): (c1^2 + c2^2) <= delta_b^2
    with delta_b = n_sigma sigma_b (deg). DIALS applies it to the pixel corner nearest
    the centre (the smallest of the pixel's four corner values) and to every image of
    the shoebox: the foreground is a cylinder along c3, the shoebox's frame range
    (n_sigma sigma_m / |zeta| either side) bounding it."""
    c1, c2 = np.asarray(c1_deg, dtype=float), np.asarray(c2_deg, dtype=float)
    return c1 * c1 + c2 * c2 <= np.asarray(delta_b_deg, dtype=float) ** 2


def in_profile_ellipsoid(c1_deg, c2_deg, c3_deg, delta_b_deg, delta_m_deg) -> np.ndarray:
    """(c1^2 + c2^2) / delta_b^2 + c3^2 / delta_m^2 <= 1: the ellipsoid DIALS uses to
    mark pixels of a neighbouring reflection as overlapped (``adjacent``), with c3 taken
    at the image edge nearer the centre."""
    c1, c2, c3 = (np.asarray(c, dtype=float) for c in (c1_deg, c2_deg, c3_deg))
    return (c1 * c1 + c2 * c2) / np.asarray(delta_b_deg, float) ** 2 \
        + c3 * c3 / np.asarray(delta_m_deg, float) ** 2 <= 1.0


def foreground_mask_xy(experiment: Experiment, s1, panel: int, bbox, delta_b_deg) -> np.ndarray:
    """Foreground (ny, nx) bool of one shoebox with box ``bbox`` (x0, x1, y0, y1, ...):
    the pixels one of whose corners lies within delta_b of s1 (DIALS's rule). Corners are
    mapped to the laboratory with each corner's own parallax correction (DIALS takes the
    attenuation length at the reflection's centre for all of them: a difference far
    below a pixel)."""
    s1 = np.asarray(s1, dtype=float).reshape(1, 3)
    x0, x1, y0, y1 = (int(v) for v in bbox[:4])
    pan = experiment.detector[int(panel)]
    jj, ii = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    xy = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    lab = pan.lab_coord(pan.pixel_to_millimeter(xy))
    e1, e2, _, _ = kabsch_basis(experiment.beam.s0, s1, experiment.goniometer.rotation_axis)
    c1, c2 = kabsch_c12(lab, np.broadcast_to(s1, lab.shape), e1, e2)
    r2 = (c1 * c1 + c2 * c2).reshape(y1 - y0 + 1, x1 - x0 + 1)
    corner_min = np.minimum(np.minimum(r2[:-1, :-1], r2[1:, :-1]),
                            np.minimum(r2[:-1, 1:], r2[1:, 1:]))
    return corner_min <= float(delta_b_deg) ** 2


# -- estimation from strong spots ------------------------------------------------------


@dataclass
class _Pixels:
    """The pixels of the spots' shoeboxes, flattened."""

    row: np.ndarray  # spot of each pixel
    column: np.ndarray  # its (spot, y, x) column along the rotation, numbered over the spots
    z: np.ndarray  # frame index
    value: np.ndarray
    mask: np.ndarray


def _shoebox_pixels(refl: ReflectionTable) -> _Pixels:
    sb = refl["shoebox"]
    if not np.all(sb.allocated):
        raise ProfileModelError(
            "some strong spots have empty shoeboxes, so their pixels are not known; run "
            "findspots again (it keeps each spot's pixels), then index and refine.")
    sizes = sb.sizes()
    n = np.prod(sizes, axis=1)
    row = np.repeat(np.arange(len(sb)), n)
    local = np.arange(n.sum()) - np.repeat(sb.offset[:-1], n)
    plane = sizes[:, 1] * sizes[:, 2]
    column = local % plane[row] + (np.cumsum(plane) - plane)[row]
    z = local // plane[row] + sb.bbox[row, 4]
    return _Pixels(row, column, z, sb.data.astype(float), sb.mask)


def _column_centres(refl: ReflectionTable, column: np.ndarray):
    """(spot, x, y) of columns numbered as :attr:`_Pixels.column`, x and y the pixel
    centre (px)."""
    sb = refl["shoebox"]
    sizes = sb.sizes()
    plane = sizes[:, 1] * sizes[:, 2]
    end = np.cumsum(plane)
    row = np.searchsorted(end, column, side="right")
    local = column - (end - plane)[row]
    nx = sizes[row, 2]
    return row, local % nx + sb.bbox[row, 0] + 0.5, local // nx + sb.bbox[row, 2] + 0.5


def _pixel_directions(experiment: Experiment, panel: np.ndarray, x, y) -> np.ndarray:
    """Unit diffracted-beam directions (N, 3) through pixel positions (x, y) px."""
    out = np.empty((len(x), 3))
    for ip in np.unique(panel):
        sel = panel == ip
        pan = experiment.detector[int(ip)]
        out[sel] = pan.lab_coord(pan.pixel_to_millimeter(np.column_stack([x[sel], y[sel]])))
    return out / np.linalg.norm(out, axis=1)[:, None]


def _sigma_b_deg(experiment: Experiment, refl: ReflectionTable, px: _Pixels) -> float:
    """DIALS ``ComputeEsdBeamDivergence`` (centroid = predicted s1), in deg."""
    use = px.mask != 0
    # a pixel's direction is the same on every image: one per column, its counts summed
    n_columns = int(np.prod(refl["shoebox"].sizes()[:, 1:], axis=1).sum())
    columns = px.column[use]
    v_column = np.bincount(columns, weights=px.value[use], minlength=n_columns)
    column = np.flatnonzero(np.bincount(columns, minlength=n_columns))
    row, x, y = _column_centres(refl, column)
    panel = refl["shoebox"].panel.astype(np.int64)[row]
    u = _pixel_directions(experiment, panel, x, y)
    s1 = refl["s1"] / np.linalg.norm(refl["s1"], axis=1)[:, None]
    cos_a = np.clip(np.sum(u * s1[row], axis=1), -1.0, 1.0)
    a2 = np.arccos(cos_a) ** 2
    v = v_column[column]
    n = len(refl)
    sv = np.bincount(row, weights=v, minlength=n)
    sva2 = np.bincount(row, weights=v * a2, minlength=n)
    ok = sv > 1
    if not ok.any():
        raise ProfileModelError(
            "no strong spot has more than one count, so the beam divergence sigma_b cannot "
            "be estimated; give sigma_b= and sigma_m= yourself.")
    return float(np.rad2deg(np.sqrt(np.mean(sva2[ok] / (sv[ok] - 1)))))


def _frame_table(experiment: Experiment, refl: ReflectionTable, px: _Pixels, counts: bool):
    """Per (spot, image) with foreground, ordered by spot then image: tau (rad), |zeta|,
    counts, spot index, image (frame) index.

    counts=True (``extended``): images where the spot's Valid|Foreground pixels sum to
    more than zero, with that sum. counts=False (``basic``): images with any such pixel.
    """
    sb = refl["shoebox"]
    nz = sb.sizes()[:, 0]
    start = np.concatenate([[0], np.cumsum(nz)])
    key = start[px.row] + (px.z - sb.bbox[px.row, 4])
    fg = px.mask == (VALID | FOREGROUND)
    total = start[-1]
    if counts:
        per = np.bincount(key[fg], weights=px.value[fg], minlength=total)
        keep = per > 0
    else:
        per = np.bincount(key[fg], minlength=total).astype(float)
        keep = per > 0
    spot = np.repeat(np.arange(len(refl)), nz)
    frame = np.arange(total) - np.repeat(start[:-1], nz) + np.repeat(sb.bbox[:, 4], nz)
    scan = experiment.scan
    mid = np.deg2rad(scan.angle_from_frame(frame + 0.5))
    tau = mid - refl["xyzcal.mm"][spot, 2]
    return tau[keep], np.abs(refl["zeta"][spot[keep]]), per[keep], spot[keep], frame[keep]


class _Fraction:
    """Fraction of a Gaussian rocking curve recorded on each image: for a width sigma_m
    (rad; one, or one per boundary, :attr:`spot` gives each boundary's spot),
    (erf(hi / (sqrt2 sigma_m)) - erf(lo / (sqrt2 sigma_m))) / 2 with hi, lo =
    (tau +- dphi/2) |zeta| formed once for all the widths a fit tries.

    An image's upper boundary is the next image's lower one when the spot has counts on
    both: each boundary is kept once (``edge``: every image's lo, then the hi of the
    images whose next image is not in the table), so one erf per boundary, n + 1 per run
    of n images of a spot instead of 2 n."""

    def __init__(self, tau, zeta, dphi2, spot, frame):
        n = len(tau)
        shared = np.zeros(n, bool)
        shared[:-1] = (spot[1:] == spot[:-1]) & (frame[1:] == frame[:-1] + 1)
        last = ~shared
        self.edge = np.concatenate([(tau - dphi2) * zeta, (tau[last] + dphi2) * zeta[last]])
        self.spot = np.concatenate([spot, spot[last]])
        self.n = n
        self.hi = np.where(shared, np.arange(1, n + 1), n + np.cumsum(last) - 1)

    def _erf(self, sigma_m):
        """u = edge / (sqrt2 sigma_m) and erf(u), per boundary."""
        u = self.edge / (math.sqrt(2.0) * sigma_m)
        return u, erf(u)

    def _per_image(self, at_boundaries):
        """Upper minus lower boundary's value, per image of the table."""
        return at_boundaries[self.hi] - at_boundaries[:self.n]

    def __call__(self, sigma_m):
        return np.maximum(self._per_image(self._erf(sigma_m)[1]) / 2.0, _TINY)

    def with_slope(self, sigma_m):
        """(fraction, its derivative in the image's sigma_m (1/rad)) for widths sigma_m
        (rad) one per boundary, a spot's boundaries sharing its width; where the fraction
        is held at its floor the derivative is 0. d/dsigma erf(u)/2 = -u exp(-u^2) /
        (sqrt(pi) sigma)."""
        u, e = self._erf(sigma_m)
        z = self._per_image(e) / 2.0
        low = z <= _TINY
        slope = self._per_image(-u * np.exp(-u * u) / (math.sqrt(math.pi) * sigma_m))
        return np.where(low, _TINY, z), np.where(low, 0.0, slope)


def _maximise(neg_log_likelihood) -> float:
    """sigma (rad) maximising a likelihood over log sigma, from 1e-4 to 30 deg."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(neg_log_likelihood, bounds=(math.log(math.radians(1e-4)),
                                                      math.log(math.radians(30.0))),
                          method="bounded", options={"xatol": 1e-7})
    return math.exp(res.x)


def _sigma_m_deg(experiment: Experiment, refl: ReflectionTable, px: _Pixels,
                 algorithm: str, frames=None) -> float:
    """DIALS ``ComputeEsdReflectingRange`` (``extended`` or ``basic``), in deg.
    ``frames``: the ``extended`` algorithm's :func:`_frame_table` (counts=True)."""
    dphi2 = math.radians(experiment.scan.oscillation[1]) / 2.0
    if algorithm == "extended":
        tau, zeta, n, spot, frame = frames
        if len(tau) == 0:
            raise ProfileModelError(
                "no strong spot has foreground counts, so the mosaicity sigma_m cannot be "
                "estimated; give sigma_b= and sigma_m= yourself.")
        K = np.bincount(spot, weights=n)
        has = K > 0
        fraction = _Fraction(tau, zeta, dphi2, spot, frame)

        def nll(log_sigma):
            z = fraction(math.exp(log_sigma))
            Z = np.bincount(spot, weights=z)[has]
            return -(np.sum(n * np.log(z)) - np.sum((K[has] - 1.0) * np.log(Z)))

        return math.degrees(_maximise(nll))
    tau, zeta, _, spot, frame = _frame_table(experiment, refl, px, counts=False)
    if len(tau) == 0:
        raise ProfileModelError(
            "no strong spot has foreground pixels, so the mosaicity sigma_m cannot be "
            "estimated; give sigma_b= and sigma_m= yourself.")
    fraction = _Fraction(tau, zeta, dphi2, spot, frame)
    if np.all(fraction(math.radians(30.0)) <= _TINY):
        return math.degrees(float(np.std(tau * zeta, ddof=1)))  # DIALS's crude estimate
    return math.degrees(_maximise(lambda ls: -np.sum(np.log(fraction(math.exp(ls))))))


def _sigma_m_with_rlp(experiment: Experiment, refl: ReflectionTable, frames,
                      sigma_m_deg: float, pool=None,
                      helper_cpu: list | None = None) -> tuple[float, float] | None:
    """(sigma_m deg, sigma_m_rlp 1/A) maximising the ``extended`` likelihood when each
    spot's c3 width is sqrt(sigma_m^2 + (lambda sigma_m_rlp / sin 2theta)^2)
    (:func:`rocking_width_deg`), or None when the resolution term is not significant.

    Significant means both: the likelihood-ratio statistic against the constant model
    (``sigma_m_deg``), scaled from photons to spots (the likelihood counts every photon,
    the spots are the independent samples), exceeds chi2(1 dof, p = 0.001) = 10.83; and
    the fitted width changes by more than 10 % between the 10th and 90th percentiles of
    the spots' 1 / sin 2theta. ``frames``: :func:`_frame_table` (counts=True).
    The fit: L-BFGS-B (R. H. Byrd et al., SIAM J. Sci. Comput. 16 (1995) 1190) with the
    likelihood's analytic gradient, from two starts (~25 likelihoods each on the user
    case of bench_integrate.py, where Nelder-Mead took 91 and 101 to a lower precision).
    With an executor ``pool`` the fit's second start runs in one of its threads beside
    the first (the same result; that thread's CPU seconds appended to ``helper_cpu``)."""
    from scipy.optimize import minimize

    from ..refinement.blas import one_thread

    dphi2 = math.radians(experiment.scan.oscillation[1]) / 2.0
    tau, zeta, n, spot, frame = frames
    K = np.bincount(spot, weights=n, minlength=len(refl))
    has = K > 0
    if has.sum() < MIN_SPOTS_OVERALL:
        return None
    g_spot = experiment.beam.wavelength / np.maximum(sin_two_theta(refl["s1"],
                                                                   experiment.beam.s0), 1e-6)
    fraction = _Fraction(tau, zeta, dphi2, spot, frame)
    g = g_spot[fraction.spot]  # per boundary

    def nll_and_sums(z):  # the extended negative log-likelihood, and each spot's sum z
        Z = np.bincount(spot, weights=z, minlength=len(refl))
        return -(np.sum(n * np.log(z)) - np.sum((K[has] - 1.0) * np.log(Z[has]))), Z

    def nll(sigma_c3):
        return nll_and_sums(fraction(sigma_c3))[0]

    g2 = g[:fraction.n] ** 2  # per image
    K1 = K[spot] - 1.0

    def nll2(p):  # and its gradient in p = (log sigma_m, log sigma_m_rlp)
        a, b = math.exp(2 * p[0]), math.exp(2 * p[1])
        sigma = np.sqrt(a + b * g * g)  # sigma^2 = a + b g^2: d sigma / d p = (a, b g^2) / sigma
        z, dz = fraction.with_slope(sigma)
        f, Z = nll_and_sums(z)
        c = (K1 / Z[spot] - n / z) * dz / sigma[:fraction.n]  # (d nll / d sigma) / sigma
        return f, np.array([np.sum(c) * a, np.sum(c * g2) * b])

    sm0 = math.radians(sigma_m_deg)
    g_med = float(np.median(g_spot[has]))

    def fit(f):  # f: the share of the constant width given to the resolution term
        x0 = [math.log(sm0 * math.sqrt(1 - f * f)), math.log(sm0 * f / g_med)]
        return minimize(nll2, x0, jac=True, method="L-BFGS-B",
                        options={"ftol": 1e-15, "gtol": 1e-2, "maxiter": 400})

    # two starts, the second in a thread of its own when there are threads to spare (its
    # likelihoods' erf and sums release the GIL); L-BFGS-B's vector steps call BLAS, in
    # one thread (OpenBLAS's own threads would spin beside ours: 0.17 s against 0.53 s of
    # CPU for the estimate on the user case, integrate's own limit made before scipy's
    # BLAS was loaded)
    with one_thread():
        second = _submit_timed(pool, lambda: fit(0.7), helper_cpu) if pool else None
        best = fit(0.3)
        res = second.result() if second else fit(0.7)
    if res.fun < best.fun:
        best = res
    sigma_m, sigma_rlp = math.exp(best.x[0]), math.exp(best.x[1])
    lr = 2.0 * (nll(sm0) - best.fun) * has.sum() / K.sum()
    g10, g90 = np.percentile(g_spot[has], [10, 90])
    spread = math.sqrt((sigma_m**2 + (sigma_rlp * g90) ** 2)
                       / (sigma_m**2 + (sigma_rlp * g10) ** 2))
    if lr <= 10.83 or spread <= 1.1:
        return None
    return math.degrees(sigma_m), sigma_rlp


def _submit_timed(pool, fn, cpu: list | None):
    """``fn()`` submitted to the executor ``pool``; its thread's CPU seconds are appended to
    ``cpu`` when given. The future's ``result()`` raises its error in the caller, so errors
    come in the order the caller asks for the results."""
    def timed():
        c0 = time.thread_time()
        try:
            return fn()
        finally:
            if cpu is not None:
                cpu.append(time.thread_time() - c0)

    return pool.submit(timed)


def _split_by_image(refl: ReflectionTable) -> ReflectionTable:
    """Each spot cut into its single-image parts (DIALS ``split_partials_with_shoebox``)."""
    from ..reflection_table import Shoeboxes

    sb = refl["shoebox"]
    sizes = sb.sizes()
    nz, plane = sizes[:, 0], sizes[:, 1] * sizes[:, 2]
    rows = np.repeat(np.arange(len(refl)), nz)
    k = np.arange(nz.sum()) - np.repeat(np.cumsum(nz) - nz, nz)
    bbox = sb.bbox[rows].copy()
    bbox[:, 4] += k
    bbox[:, 5] = bbox[:, 4] + 1
    offset = np.concatenate([[0], np.cumsum(plane[rows])]).astype(np.int64)
    parts = Shoeboxes(sb.panel[rows], bbox, sb.data, sb.background, sb.mask, offset,
                      np.ones(len(rows), bool))
    out = refl.select(rows)
    out["shoebox"] = parts
    out["bbox"] = bbox
    return out


def _smooth(values: np.ndarray, n: int = SMOOTHING_KERNEL) -> np.ndarray:
    """Gaussian smoothing (sigma (n // 2) / 3 images), values beyond the ends held."""
    mid = n // 2
    kernel = np.exp(-((np.arange(n) - mid) ** 2) / (2 * (mid / 3.0) ** 2))
    kernel /= kernel.sum()
    padded = np.concatenate([np.full(mid, values[0]), values, np.full(mid, values[-1])])
    return np.convolve(padded, kernel[::-1], mode="valid")


def _select_for_estimate(refl: ReflectionTable) -> ReflectionTable:
    """At most ~MAX_REFLECTIONS spots: those used in refinement, topped up with every
    n-th other spot (DIALS ``_select_reflections_for_sigma_calc``)."""
    if len(refl) < MAX_REFLECTIONS:
        return refl
    used = refl.get_flags(Flags.used_in_refinement)
    if used.sum() >= MAX_REFLECTIONS:
        return refl.select(used)
    others = np.flatnonzero(~used)
    step = int(math.floor(len(others) / (MAX_REFLECTIONS - used.sum())))
    keep = np.concatenate([np.flatnonzero(used), others[::max(step, 1)]])
    return refl.select(np.sort(keep))


def estimate_profile_model(experiment: Experiment, indexed: ReflectionTable,
                           n_sigma: float = 3.0, min_zeta: float = MIN_ZETA,
                           algorithm: str = "extended", scan_varying: bool = False,
                           experiment_id: int | None = None,
                           sigma_m_model: str = "constant", threads: int = 1,
                           helper_cpu: list | None = None) -> ProfileModel:
    """sigma_b and sigma_m of one sweep from its indexed strong spots, as DIALS's
    ``ProfileModelCalculator`` / ``ScanVaryingProfileModelCalculator`` (module docstring).

    ``indexed`` needs the columns shoebox (the spot pixels findspots kept), s1 and
    xyzcal.mm (predicted by the refined models; phi in rad as in DIALS), miller_index and
    flags; rows of other experiments are left out when ``experiment_id`` is given.
    ``sigma_m_model`` auto also fits the resolution term sigma_m_rlp (static ``extended``
    estimate only; constant, DIALS's model, otherwise). ``threads`` > 1: the static
    estimate's sigma_b and the two starts of the resolution term's fit each run in a
    thread beside the sigma_m fits (the same result, errors in the same order; the
    helper threads' CPU seconds appended to ``helper_cpu``).
    """
    sigma_m_model = str(sigma_m_model).lower()
    if sigma_m_model not in SIGMA_M_MODELS:
        raise ProfileModelError(f"unknown sigma_m_model {sigma_m_model!r}; choose auto (the "
                                "resolution term when the spots show it) or constant (DIALS).")
    if algorithm not in ("extended", "basic"):
        raise ProfileModelError(f"unknown sigma_m algorithm {algorithm!r}; choose extended "
                                "(the DIALS default) or basic.")
    if not experiment.is_sweep or experiment.crystal is None:
        raise ProfileModelError(
            "the profile model is estimated from a rotation sweep with a crystal model: "
            "index (and refine) first, or give sigma_b= and sigma_m=.")
    missing = [c for c in ("shoebox", "s1", "xyzcal.mm", "miller_index", "flags")
               if c not in indexed]
    if missing:
        raise ProfileModelError(
            f"the indexed reflections lack {', '.join(missing)}: the profile model needs "
            "indexed strong spots with their pixels (findspots, then index and refine).")
    # the rows used, chosen on a table of the columns the choice needs (shared, not
    # copied): the table with its pixels is then copied once
    light = ReflectionTable({"flags": indexed["flags"], "miller_index": indexed["miller_index"],
                             "row": np.arange(len(indexed))})
    if experiment_id is not None and "id" in indexed:
        light = light.select(indexed["id"] == experiment_id)
    keep = light.get_flags(Flags.indexed) & np.any(light["miller_index"] != 0, axis=1)
    keep &= ~light.get_flags(Flags.centroid_outlier)
    light = light.select(keep)
    rows = light["row"]
    scan = experiment.scan
    n_all = len(rows)
    degrees = scan.num_images * abs(scan.oscillation[1])
    if n_all == 0 or (n_all < MIN_SPOTS_OVERALL and n_all / degrees < MIN_SPOTS_PER_DEGREE):
        raise ProfileModelError(
            f"too few indexed strong spots for the profile model: {n_all} "
            f"({n_all / degrees:.1f} per degree); it needs {MIN_SPOTS_OVERALL} in total or "
            f"{MIN_SPOTS_PER_DEGREE} per degree. Give sigma_b= and sigma_m= (deg) yourself, "
            "or find more spots (findspots with a lower threshold).")
    if not scan_varying:
        rows = _select_for_estimate(light)["row"]
    zeta = kabsch_basis(experiment.beam.s0, indexed["s1"][rows],
                        experiment.goniometer.rotation_axis)[3]
    off_axis = np.abs(zeta) >= min_zeta
    refl = indexed.select(rows[off_axis])
    refl["zeta"] = zeta[off_axis]
    if len(refl) == 0:
        raise ProfileModelError(
            f"every indexed spot lies within |zeta| < {min_zeta} of the rotation axis, "
            "where its reflecting range is undefined; give sigma_b= and sigma_m= yourself.")
    if not scan_varying:
        with ThreadPoolExecutor(2) if threads > 1 else nullcontext() as pool:
            px = _shoebox_pixels(refl)
            sigma_b = _submit_timed(pool, lambda: _sigma_b_deg(experiment, refl, px),
                                    helper_cpu) if pool else None
            frames = _frame_table(experiment, refl, px, counts=True) \
                if algorithm == "extended" else None
            sigma_m = _sigma_m_deg(experiment, refl, px, algorithm, frames)
            two = None
            if sigma_m_model == "auto" and algorithm == "extended":
                two = _sigma_m_with_rlp(experiment, refl, frames, sigma_m, pool, helper_cpu)
            sigma_b = sigma_b.result() if sigma_b else _sigma_b_deg(experiment, refl, px)
        return ProfileModel(sigma_b, two[0] if two else sigma_m, n_sigma, n_used=len(refl),
                            sigma_m_rlp=two[1] if two else None)
    parts = _split_by_image(refl)
    z0 = parts["bbox"][:, 4]
    a0, a1 = scan.array_range
    sigma_b, sigma_m = np.empty(a1 - a0), np.empty(a1 - a0)
    for i, frame in enumerate(range(a0, a1)):
        on = parts.select(z0 == frame)
        if len(on) == 0:
            raise ProfileModelError(
                f"image {frame + 1} has no indexed strong spot, so a scan-varying profile "
                "model cannot be estimated there; use the static model (scan_varying=False).")
        px = _shoebox_pixels(on)
        sigma_b[i] = _sigma_b_deg(experiment, on, px)
        sigma_m[i] = _sigma_m_deg(experiment, on, px, "basic")
    return ProfileModel(np.sqrt(_smooth(sigma_b**2)), np.sqrt(_smooth(sigma_m**2)), n_sigma,
                        n_used=len(refl))
