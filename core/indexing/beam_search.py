"""Search for the beam centre from strong spots (``search_beam_position``).

The method of Sauter, Grosse-Kunstleve & Adams (2004), J. Appl. Cryst. 37,
399, as the "default" method of dials.search_beam_position: with the right
beam position the rlps of a crystal lie on a lattice *through the origin*;
a wrong beam centre translates each rlp by a vector that turns with phi,
which both smears the lattice planes and moves them off the origin.

Each macro-cycle:

1. rlps at the current geometry; the strongest real-space vectors v_k of
   their 1D FFTs (DPS; Steller, Bolotovsky & Rossmann 1997, via
   :func:`gonio.core.indexing.fft1d.fft1d_vectors`);
2. a coarse-to-fine grid search of detector shifts in the plane of the
   panel the beam meets (whole-array numpy over all trial shifts). At each
   trial every v_k is refitted to the trial rlps (index component by
   rounding, least squares with a free offset, low to high resolution) and
   scores mean_j cos(2 pi v_k . r_j), the Fourier phase of its planes at the
   origin (DIALS's ``backmax``): 1 when every rlp lies on a plane of v_k
   through the origin. The score of a trial is the sum over the vectors;
   a quadratic surface fitted to the scores of the last grid gives the shift;
3. the detector moves by that shift.

The first cycle searches +-``max_deviation`` px, later ones +-2 coarse
steps around the current best, with vectors from the improved geometry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate

from ..errors import GonioError
from ..geometry.spots import centroid_px_to_mm
from ..models.experiment import ExperimentList
from ..models.rotation import rotate_vectors
from ..reflection_table import ReflectionTable
from .fft1d import fft1d_vectors
from .max_cell import nearest_neighbour_max_cell

N_BEST = 10  # rows of the table of best trial positions
COARSE_FRACTION = 0.4
MIN_SPOTS = 20


class BeamSearchError(GonioError):
    """The beam centre search could not run."""


def _p(default, help, dials, units=""):
    return field(default=default, metadata={"help": help, "dials": dials, "units": units})


@dataclass
class BeamSearchParams:
    """Beam-centre search (names after dials.search_beam_position, method=default)."""

    max_deviation: float = _p(60.0, "Largest shift of the beam centre searched, each way "
                              "(dials.search_beam_position's mm_search_scope is 4 mm).",
                              "default.max_deviation", units="px")
    coarse_step: float | None = _p(None, "Grid step of the widest search (None: from the "
                                   "wavelength, distance and max_cell).",
                                   "default.coarse_step", units="px")
    fine_step: float = _p(0.5, "Grid step of the last search, whose scores a quadratic "
                          "surface fits for the final position.",
                          "default.fine_step", units="px")
    n_macro_cycles: int = _p(2, "Cycles of new candidate vectors and search around the "
                             "current best.", "default.n_macro_cycles")
    d_min: float | None = _p(None, "Use only spots to this resolution (None: all).",
                             "default.d_min", units="A")
    max_cell: float | None = _p(None, "Longest real-space cell edge (None: estimated from "
                                "the spot separations, times 1.3).", "default.max_cell",
                                units="A")
    n_vectors: int = _p(20, "Candidate real-space vectors that score each trial position.",
                        "default.n_vectors")
    max_reflections: int = _p(2000, "Use a random subset of at most this many spots.",
                              "default.max_reflections")
    seed: int = _p(42, "Seed of the random subset.", "default.seed")


@dataclass
class BeamSearchResult:
    """What the search found; shifts are new minus old beam centre."""

    old_centre_px: tuple = (np.nan, np.nan)
    new_centre_px: tuple = (np.nan, np.nan)
    old_centre_mm: tuple = (np.nan, np.nan)
    new_centre_mm: tuple = (np.nan, np.nan)
    shift_px: tuple = (0.0, 0.0)
    shift_mm: tuple = (0.0, 0.0)
    score_old: float = 0.0
    score_new: float = 0.0
    n_spots: int = 0
    max_cell: float = 0.0
    max_cell_estimated: bool = True
    coarse_step: float = 0.0  # px
    best_positions: list = field(default_factory=list)  # dicts: x_px, y_px, score (last cycle)
    cycles: list = field(default_factory=list)  # dicts: cycle, range_px, x_px, y_px, score
    timings: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        return {"beam_x_px": round(self.new_centre_px[0], 2),
                "beam_y_px": round(self.new_centre_px[1], 2),
                "shift_x_px": round(self.shift_px[0], 2), "shift_y_px": round(self.shift_px[1], 2),
                "shift_mm": round(float(np.hypot(*self.shift_mm)), 3),
                "score": round(self.score_new, 4)}

    def format_text(self) -> str:
        src = "estimated from spot separations" if self.max_cell_estimated else "given"
        lines = [f"Using {self.n_spots} spots; max_cell {self.max_cell:.1f} A ({src}); "
                 f"coarse grid step {self.coarse_step:.2f} px"]
        lines.append(tabulate([[c["cycle"], f"{c['range_px']:.1f}", f"{c['x_px']:.2f}",
                                f"{c['y_px']:.2f}", f"{c['score']:.3f}"] for c in self.cycles],
                              headers=["cycle", "+- px", "x px", "y px", "score"]))
        lines.append("\nBest trial positions (last cycle):")
        lines.append(tabulate([[f"{b['x_px']:.2f}", f"{b['y_px']:.2f}", f"{b['score']:.3f}"]
                               for b in self.best_positions],
                              headers=["x px", "y px", "score"]))
        lines.append("\nOld beam centre: {:.2f}, {:.2f} mm ({:.1f}, {:.1f} px)".format(
            *self.old_centre_mm, *self.old_centre_px))
        lines.append("New beam centre: {:.2f}, {:.2f} mm ({:.1f}, {:.1f} px)".format(
            *self.new_centre_mm, *self.new_centre_px))
        lines.append("Shift: {:.2f}, {:.2f} mm ({:.1f}, {:.1f} px)".format(
            *self.shift_mm, *self.shift_px))
        return "\n".join(lines)


def _beam_panel(experiments: ExperimentList):
    e = experiments[0]
    for i, panel in enumerate(e.detector):
        xy, ok = panel.ray_intersection(e.beam.s0[None, :])
        if ok[0] and panel.is_coord_valid_mm(xy)[0]:
            return i, xy[0]
    raise BeamSearchError("The beam does not meet the detector with the current geometry, "
                          "so there is no beam centre to search around: set the beam centre "
                          "on import (e.g. beam_centre=x,y px) and search again.")


def _shift_detector(detector, shift_lab_mm):
    return detector.replace(panels=[p.replace(origin=p.origin + shift_lab_mm)
                                    for p in detector])


class _Spots:
    """Per imageset: lab positions (N, 3) mm, phi (rad), and the rotation model."""

    def __init__(self, expt, refl):
        self.expt = expt
        xy = refl["xyzobs.mm.value"]
        panels = refl["panel"].astype(np.int64)
        self.lab = np.zeros((len(refl), 3))
        for i, panel in enumerate(expt.detector):
            sel = panels == i
            self.lab[sel] = panel.lab_coord(xy[sel, :2])
        self.phi = xy[:, 2]

    def rlp(self, shift_lab_mm=np.zeros(3)):
        e = self.expt
        lab = self.lab + shift_lab_mm
        s = lab / np.linalg.norm(lab, axis=1)[:, None] / e.beam.wavelength - e.beam.s0
        g = e.goniometer
        s = s @ np.linalg.inv(g.setting_rotation).T
        s = rotate_vectors(s, g.rotation_axis_datum, -self.phi)
        return s @ np.linalg.inv(g.fixed_rotation).T

    def scores(self, v, shifts_lab, chunk=32):
        """Score of each trial shift (T, 3) mm, see :func:`_phase_scores`."""
        e = self.expt
        lab0 = self.lab
        order = np.argsort(np.linalg.norm(self.rlp(), axis=1))
        out = np.empty(len(shifts_lab))
        for s in range(0, len(shifts_lab), chunk):
            sh = shifts_lab[s:s + chunk]
            lab = lab0[None] + sh[:, None, :]
            S = lab / np.linalg.norm(lab, axis=2)[..., None] / e.beam.wavelength - e.beam.s0
            g = e.goniometer
            S = S @ np.linalg.inv(g.setting_rotation).T
            S = rotate_vectors(S.reshape(-1, 3), g.rotation_axis_datum,
                               np.tile(-self.phi, len(sh))).reshape(S.shape)
            r = S @ np.linalg.inv(g.fixed_rotation).T
            out[s:s + chunk] = _phase_scores(r, v, order)
        return out


def _phase_scores(r, v0, order, fractions=(0.3, 0.5, 0.75, 1.0), tol=0.25):
    """sum_k mean_j cos(2 pi v_k . r_j) for rlps r (T, N, 3) of T trial geometries.

    Each vector v_k (K, 3) is first fitted to the trial's rlps: Miller index
    components n = round(v . r) within ``tol`` of an integer, then least
    squares v . r + c = n, over growing fractions of the spots from low
    resolution (``order``: spot indices by increasing |r|). The offset c is
    fitted but not scored, so the score is high only when the fitted lattice
    planes pass through the origin. A vector that collapses (shorter than half
    its start) scores 0.
    """
    t, n = r.shape[:2]
    X = np.concatenate([r, np.ones((t, n, 1))], axis=2)
    v = np.broadcast_to(v0, (t,) + v0.shape)
    for f in fractions:
        sel = order[:max(int(f * n), 8)]
        Xs = X[:, sel]
        p = Xs[..., :3] @ v.transpose(0, 2, 1)
        h = np.rint(p)
        wT = (np.abs(p - h) < tol).astype(float).transpose(0, 2, 1)
        XX = (Xs[..., :, None] * Xs[..., None, :]).reshape(t, len(sel), 16)
        A = (wT @ XX).reshape(t, -1, 4, 4) + 1e-9 * np.eye(4)
        b = (wT * h.transpose(0, 2, 1)) @ Xs
        v = np.linalg.solve(A, b[..., None])[..., 0][..., :3]
    ok = np.linalg.norm(v, axis=2) > 0.5 * np.linalg.norm(v0, axis=1)
    terms = np.cos(2.0 * np.pi * (r @ v.transpose(0, 2, 1))).mean(axis=1)
    return np.where(ok, terms, 0.0).sum(axis=1)


def _check_params(params: BeamSearchParams) -> None:
    bad = [f"{name}={getattr(params, name)}" for name in ("max_deviation", "fine_step",
                                                          "coarse_step", "d_min", "max_cell")
           if getattr(params, name) is not None and not getattr(params, name) > 0]
    bad += [f"{name}={getattr(params, name)}" for name in ("n_macro_cycles", "n_vectors",
                                                           "max_reflections")
            if not getattr(params, name) >= 1]
    if bad:
        raise BeamSearchError(f"{', '.join(bad)}: these must be positive (steps and distances "
                              "in px, d_min and max_cell in A, counts at least 1).")


def _prepare(experiments, strong):
    if strong is None or not len(strong) or "xyzobs.px.value" not in strong:
        raise BeamSearchError("There are no strong spots to search the beam centre with: "
                              "run findspots first.")
    if not len(experiments):
        raise BeamSearchError("There are no experiments: run import first.")
    for e in experiments:
        if e.goniometer is None or e.scan is None or e.scan.oscillation[1] == 0:
            raise BeamSearchError("The beam centre search needs rotation sweeps (goniometer "
                                  "and scan); import a sweep or set the oscillation on import.")
    n = len(strong)
    refl = ReflectionTable({"xyzobs.px.value": strong["xyzobs.px.value"],
                            "id": (strong["imageset_id"] if "imageset_id" in strong else
                                   strong["id"] if "id" in strong else
                                   np.zeros(n, np.int32)).astype(np.int32),
                            "panel": (strong["panel"] if "panel" in strong
                                      else np.zeros(n, np.uint64))})
    if refl["id"].min() < 0 or refl["id"].max() >= len(experiments):
        raise BeamSearchError(f"The strong spots refer to imageset {refl['id'].max()}, but "
                              f"there are {len(experiments)}: use the spots of these images.")
    centroid_px_to_mm(experiments, refl)
    return refl


def search_beam_position(experiments: ExperimentList, strong: ReflectionTable,
                         params: BeamSearchParams | None = None
                         ) -> tuple[ExperimentList, BeamSearchResult]:
    """Experiments with every detector moved to the best beam position, and the result.

    All experiments share one shift (in the plane of the panel the first
    experiment's beam meets), as dials.search_beam_position does.
    """
    params = params or BeamSearchParams()
    _check_params(params)
    t0 = time.perf_counter()
    refl = _prepare(experiments, strong)
    i_panel, old_mm = _beam_panel(experiments)
    panel = experiments[0].detector[i_panel]
    px = np.asarray(panel.pixel_size)
    rng = np.random.default_rng(params.seed)
    groups = []
    for i_exp, e in enumerate(experiments):
        r = refl.select(refl["id"] == i_exp)
        if params.d_min is not None and len(r):
            d = 1.0 / np.linalg.norm(_Spots(e, r).rlp(), axis=1)
            r = r.select(d >= params.d_min)
        if len(r) > params.max_reflections:
            r = r.select(np.sort(rng.choice(len(r), params.max_reflections, replace=False)))
        if len(r) >= MIN_SPOTS:
            groups.append(_Spots(e, r))
    n_spots = sum(len(g.phi) for g in groups)
    if not groups:
        raise BeamSearchError(f"Too few strong spots ({len(refl)}) to search the beam centre "
                              f"(at least {MIN_SPOTS} in a sweep); check findspots and d_min.")
    result = BeamSearchResult(n_spots=n_spots, max_cell_estimated=params.max_cell is None)
    if params.max_cell is None:
        rlp = np.concatenate([g.rlp() for g in groups])
        phi = np.rad2deg(np.concatenate([g.phi for g in groups]))
        iset = np.concatenate([np.full(len(g.phi), i) for i, g in enumerate(groups)])
        entering = np.concatenate([_entering(g) for g in groups])
        max_cell = 1.3 * nearest_neighbour_max_cell(rlp, phi, iset, entering)
        if not np.isfinite(max_cell):
            raise BeamSearchError("Could not estimate max_cell from the spots; give max_cell=.")
    else:
        max_cell = float(params.max_cell)
    result.max_cell = max_cell

    fast, slow = panel.fast_axis * px[0], panel.slow_axis * px[1]
    centre = np.zeros(2)  # current shift, px
    search = float(params.max_deviation)
    step = params.coarse_step
    if step is None:
        # a shift of step px moves the low-angle rlps by about 0.4 / max_cell (1/A)
        e = experiments[0]
        step = COARSE_FRACTION * e.beam.wavelength * panel.distance / (max_cell * px.min())
    step = max(float(step), params.fine_step)
    result.coarse_step = step
    for cycle in range(params.n_macro_cycles):
        shift_lab = centre[0] * fast + centre[1] * slow
        vs = []
        for g in groups:
            r = g.rlp(shift_lab)
            d_min = float(1.0 / np.linalg.norm(r, axis=1).max())
            vs.append(fft1d_vectors(r, max_cell, d_min, n_vectors=params.n_vectors))

        def score(trial_px, vs=vs):
            lab = trial_px[:, :1] * fast + trial_px[:, 1:] * slow
            return sum(g.scores(v, lab) for g, v in zip(groups, vs))

        if cycle == 0:
            result.score_old = float(score(np.zeros((1, 2)))[0])
        best, lo_step, half = centre, step, search
        while True:
            g1 = np.arange(-half, half + 0.5 * lo_step, lo_step)
            gx, gy = np.meshgrid(g1, g1)
            trials = best + np.column_stack([gx.ravel(), gy.ravel()])
            scores = score(trials)
            best = trials[int(np.argmax(scores))]
            if lo_step <= params.fine_step:
                best = _quadratic_peak(trials, scores, best)
                break
            half = 2.0 * lo_step
            lo_step = max(lo_step / 4.0, params.fine_step)
        centre = best
        result.cycles.append({"cycle": cycle + 1, "range_px": search,
                              "x_px": float(centre[0]), "y_px": float(centre[1]),
                              "score": float(scores.max())})
        search = 2.0 * step
    result.timings["search"] = time.perf_counter() - t0

    shift_lab = centre[0] * fast + centre[1] * slow
    out = ExperimentList()
    for e in experiments:
        out.append(e.replace(detector=_shift_detector(e.detector, shift_lab)))
    new_mm = out[0].detector[i_panel].beam_centre_mm(out[0].beam.s0)
    result.old_centre_mm = tuple(float(x) for x in old_mm)
    result.new_centre_mm = tuple(float(x) for x in new_mm)
    result.old_centre_px = tuple(float(x) for x in panel.millimeter_to_pixel(old_mm[None])[0])
    result.new_centre_px = tuple(float(x) for x in out[0].detector[i_panel].millimeter_to_pixel(
        new_mm[None])[0])
    result.shift_px = tuple(float(b - a) for a, b in zip(result.old_centre_px,
                                                          result.new_centre_px))
    result.shift_mm = tuple(float(b - a) for a, b in zip(result.old_centre_mm,
                                                          result.new_centre_mm))
    result.score_new = float(result.cycles[-1]["score"])
    # the beam centre moves opposite to the detector shift: table in beam-centre px
    top = np.argsort(scores)[::-1][:N_BEST]
    result.best_positions = [{"x_px": result.old_centre_px[0] - trials[i, 0],
                              "y_px": result.old_centre_px[1] - trials[i, 1],
                              "score": float(scores[i])} for i in top]
    for c in result.cycles:
        c["x_px"], c["y_px"] = result.old_centre_px[0] - c["x_px"], result.old_centre_px[1] - c["y_px"]
    return out, result


def _quadratic_peak(trials: np.ndarray, scores: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Vertex of the quadratic surface fitted to scores (T,) at trial shifts (T, 2) px, when
    it is a maximum inside the grid; else ``best``."""
    x, y = (trials - best).T
    M = np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y])
    c = np.linalg.lstsq(M, scores, rcond=None)[0]
    H = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    if np.any(np.linalg.eigvalsh(H) >= 0):
        return best
    peak = np.linalg.solve(H, -c[1:3])
    if np.any(np.abs(peak) > np.abs(trials - best).max(axis=0)):
        return best
    return best + peak


def _entering(g: _Spots) -> np.ndarray:
    """Entering flags: s1 . (axis x s0) < 0 (DIALS convention)."""
    e = g.expt
    s1 = g.lab / np.linalg.norm(g.lab, axis=1)[:, None]
    return s1 @ np.cross(e.goniometer.rotation_axis, e.beam.s0) < 0
