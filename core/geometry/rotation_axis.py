"""The rotation-axis azimuth from strong spots, for flat-Ewald-sphere (3D-ED) data.

The projected-lattice-variance method of Gorelik et al. (2012, in *Uniting Electron
Crystallography and Powder Diffraction*, doi:10.1007/978-94-007-5580-2_31), as used by
Lanza et al. (2019) in edtools and by ``dials.find_rotation_axis``: the strong spots are
mapped to reciprocal space with a trial rotation axis lying in the detector plane; the
difference vectors between every pair of rlps are projected onto a (longitude, latitude)
grid about that axis; with the right axis the difference vectors of a lattice fall on few
directions, so the 2D histogram is sharp and its variance is highest.

Azimuth convention (as dials.find_rotation_axis): the angle (deg) of the axis in the detector
plane, from the panel's fast axis towards its slow axis (clockwise on the displayed image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..models.rotation import axis_angle_matrix

# (longitude, latitude) bins of the cylindrical projection, as dials.find_rotation_axis
HIST_BINS = (1000, 500)
# pairs grow as N^2: above these many spots a fixed-seed random subset is used, smaller for
# the 72-point global search (its 5 deg steps need only the coarse peak) than for the local
# and fine searches (dials.find_rotation_axis uses every pair at every level)
MAX_SPOTS_GLOBAL = 600
MAX_SPOTS = 1200


@dataclass
class RotationAxisParams:
    """dials.find_rotation_axis parameters (same names and defaults)."""

    d_max: float | None = field(default=10.0, metadata={
        "help": "Low-resolution limit: spots with d above it (noisy low-angle scatter) are not "
        "used.", "dials": "d_max", "units": "A"})
    max_two_theta: float | None = field(default=10.0, metadata={
        "help": "Only spots within this scattering angle, where the Ewald sphere is nearly "
        "flat, are used.", "dials": "max_two_theta", "units": "deg"})
    global_search: bool = field(default=True, metadata={
        "help": "Search every azimuth (5 deg steps) first; False: only the local (1 deg) and "
        "fine (0.1 deg) searches around the current axis or azimuth=.",
        "dials": "global_search"})
    azimuth: float | None = field(default=None, metadata={
        "help": "Start of the local search instead of the current axis' azimuth.",
        "dials": "azimuth", "units": "deg"})
    opposite: bool = field(default=False, metadata={
        "help": "Start from the opposite of the current azimuth (or of azimuth=).",
        "dials": "opposite"})


@dataclass
class RotationAxisResult:
    azimuth_deg: float  # of the found axis, in the sense of higher variance
    axis: np.ndarray  # unit vector, lab frame
    score: float  # variance of the projection histogram
    score_opposite: float
    azimuth_current_deg: float
    levels: dict  # "global"/"local"/"fine" -> (azimuths deg, scores), the searched points
    best_by_level: dict
    n_spots: int
    n_spots_total: int

    def format_text(self) -> str:
        lines = [f"{self.n_spots} of {self.n_spots_total} strong spots used "
                 "(d <= d_max, 2theta <= max_two_theta)",
                 f"Azimuth (current): {self.azimuth_current_deg:.2f} deg", "---"]
        for level, best in self.best_by_level.items():
            lines.append(f"Best azimuth ({level} search): {best:.3f}")
        lines.append(f"Variance: {self.score:.2f}   (opposite sense: {self.score_opposite:.2f})")
        lines.append("New rotation axis: ({:.4f}, {:.4f}, {:.4f})".format(*self.axis))
        return "\n".join(lines)


def detector_frame(panel, s0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fast, slow, beam) unit vectors; fast and slow made perpendicular to the beam."""
    beam = np.asarray(s0, float) / np.linalg.norm(s0)
    f = np.asarray(panel.fast_axis, float)
    f = f - (f @ beam) * beam
    f /= np.linalg.norm(f)
    s = np.cross(beam, f)
    if s @ np.asarray(panel.slow_axis, float) < 0:
        s = -s
    return f, s, beam


def axis_from_azimuth(azimuth_deg, panel, s0) -> np.ndarray:
    """Unit rotation axis in the lab frame at ``azimuth_deg`` in the detector plane."""
    f, s, _ = detector_frame(panel, s0)
    a = np.deg2rad(azimuth_deg)
    return np.cos(a) * f + np.sin(a) * s


def azimuth_of_axis(axis, panel, s0) -> float:
    """Azimuth (deg, -180..180) of the axis' projection on the detector plane."""
    f, s, _ = detector_frame(panel, s0)
    return float(np.degrees(np.arctan2(np.asarray(axis) @ s, np.asarray(axis) @ f)))


def select_spots(q_lab, d_max, max_two_theta, wavelength) -> np.ndarray:
    """Boolean selection of spots by d (A) and scattering angle (deg) from s1 - s0 (1/A)."""
    q = np.linalg.norm(q_lab, axis=1)
    keep = q > 0
    if d_max:
        keep &= q >= 1.0 / d_max
    if max_two_theta:
        two_theta = 2 * np.degrees(np.arcsin(np.clip(q * wavelength / 2, 0, 1)))
        keep &= two_theta <= max_two_theta
    return keep


def projection_variance(q_lab, phi_rad, axis, beam, bins=HIST_BINS) -> float:
    """Variance of the 2D histogram of pair-difference directions of the rlps.

    ``q_lab`` (N, 3) = s1 - s0 (1/A) at each spot's rotation angle ``phi_rad``; the rlps
    are rotated back by -phi about ``axis``; the difference vectors are expressed in the
    frame (x = beam x axis, y = axis, z = beam) and binned by longitude atan2(y, x) in
    [-pi, pi) and latitude atan2(z, hypot(x, y)) in [-pi/2, pi/2].
    """
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    rot = axis_angle_matrix(axis, -np.asarray(phi_rad))  # (N, 3, 3)
    rlp = np.einsum("nij,nj->ni", rot, q_lab)
    z_dir = beam - (beam @ axis) * axis
    z_dir /= np.linalg.norm(z_dir)
    frame = np.stack([np.cross(axis, z_dir), axis, z_dir])
    p = (rlp @ frame.T).astype(np.float32)  # single precision: bins of 0.36 deg
    i, j = np.triu_indices(len(p), k=1)
    dx, dy, dz = (p[i, k] - p[j, k] for k in range(3))
    n_lon, n_lat = bins
    lon = np.arctan2(dy, dx)
    lon += np.float32(np.pi)
    lon *= np.float32(n_lon / (2 * np.pi))
    lat = np.arctan2(dz, np.hypot(dx, dy))
    lat += np.float32(np.pi / 2)
    lat *= np.float32(n_lat / np.pi)
    il = np.minimum(lon.astype(np.int32), n_lon - 1)
    jl = np.minimum(lat.astype(np.int32), n_lat - 1)
    hist = np.bincount(il * np.int32(n_lat) + jl, minlength=n_lon * n_lat)
    return float(np.var(hist))


def _scan(q_lab, phi, panel, s0, centre, plusminus, step):
    azimuths = np.arange(centre - plusminus, centre + plusminus, step)
    beam = detector_frame(panel, s0)[2]
    scores = np.array([projection_variance(q_lab, phi, axis_from_azimuth(a, panel, s0), beam)
                       for a in azimuths])
    return azimuths, scores


def _wrap(a: float) -> float:
    return float((a + 180.0) % 360.0 - 180.0)


def find_rotation_axis(q_lab, phi_rad, panel, s0, current_axis,
                       params: RotationAxisParams | None = None,
                       rng_seed: int = 0) -> RotationAxisResult:
    """Coarse-to-fine search of the azimuth maximising the projection variance.

    As dials.find_rotation_axis: a global search (every 5 deg over 360 deg, from 0), a
    local search (1 deg steps, +-5 deg) and a fine search (0.1 deg steps, +-1 deg). Of the
    two senses of the found axis the one of higher variance is returned, but on a flat
    Ewald sphere the variance barely tells them apart: compare the indexing RMSD_Z of both.
    ``current_axis`` gives the start of a search without the global level.
    """
    params = params or RotationAxisParams()
    q_lab = np.asarray(q_lab, float)
    phi_rad = np.asarray(phi_rad, float)
    wavelength = 1.0 / np.linalg.norm(s0)
    keep = select_spots(q_lab, params.d_max, params.max_two_theta, wavelength)
    n_total = len(q_lab)
    q, phi = q_lab[keep], phi_rad[keep]
    order = np.random.default_rng(rng_seed).permutation(len(q))
    q, phi = q[order[:MAX_SPOTS]], phi[order[:MAX_SPOTS]]  # the first ones: a random subset
    current = azimuth_of_axis(current_axis, panel, s0)
    start = current if params.azimuth is None else params.azimuth
    if params.opposite:
        start = _wrap(start + 180.0)
    levels, best = {}, {}
    searches = [("global", 180.0, 5.0)] if params.global_search else []
    searches += [("local", 5.0, 1.0), ("fine", 1.0, 0.1)]
    centre = 0.0 if params.global_search else start
    for name, plusminus, step in searches:
        n = MAX_SPOTS_GLOBAL if name == "global" else MAX_SPOTS
        az, sc = _scan(q[:n], phi[:n], panel, s0, centre, plusminus, step)
        levels[name] = (az, sc)
        centre = float(az[np.argmax(sc)])
        best[name] = _wrap(centre)
    axis = axis_from_azimuth(centre, panel, s0)
    beam = detector_frame(panel, s0)[2]
    score = projection_variance(q, phi, axis, beam)
    score_opp = projection_variance(q, phi, -axis, beam)
    if score_opp > score:
        centre, axis, score, score_opp = centre + 180.0, -axis, score_opp, score
    return RotationAxisResult(azimuth_deg=_wrap(centre), axis=axis, score=score,
                              score_opposite=score_opp, azimuth_current_deg=current,
                              levels=levels, best_by_level=best, n_spots=len(q),
                              n_spots_total=n_total)
