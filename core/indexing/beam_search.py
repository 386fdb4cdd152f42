"""Search for the beam centre from strong spots (``search_beam_position``).

The method of Sauter, Grosse-Kunstleve & Adams (2004), J. Appl. Cryst. 37,
399, as the "default" method of dials.search_beam_position: with the right
beam position the rlps of a crystal lie on a lattice *through the origin*;
a wrong beam centre translates each rlp by a vector that turns with phi,
which both smears the lattice planes and moves them off the origin.

The search (the scores are computed in the numba kernel
:func:`.beam_search_kernels.phase_scores`):

1. rlps at a trial geometry; candidate real-space vectors v_k from DPS 1D FFTs
   of their projections (Steller, Bolotovsky & Rossmann 1997), the lowest
   Fourier terms ignored (rstbx's F0_cutoff), :func:`dps_vectors`;
2. each trial detector shift (in the plane of the panel the beam meets) is
   scored by refitting every v_k to the trial's rlps (index component by
   rounding, least squares with a free offset, low to high resolution) and
   summing mean_j cos(2 pi v_k . r_j), the Fourier phase of its planes at the
   origin (DIALS's ``backmax``): 1 when every rlp lies on a plane of v_k through
   the origin;
3. a coarse grid over +-``mm_search_scope``, cut into tiles each scored with
   vectors from the geometry at its centre (vectors from a geometry far off are
   smeared), moved to an edge maximum up to ``max_widenings`` times; the best
   few separate maxima rescored with every spot; the best refined on finer
   grids and a quadratic surface, with new vectors in later macro-cycles;
4. the landscape (best, runner-up, median and their contrast) says how sure
   the result is.
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
from ..params import param as _p
from ..reflection_table import ReflectionTable
from .beam_search_projection import METHODS, ProjectionParams
from .directions import hemisphere, local_maxima, periodicity
from .max_cell import nearest_neighbour_max_cell

N_BEST = 10  # rows of the table of best trial positions
COARSE_FRACTION = 0.4
MIN_SPOTS = 20
FRACTIONS = (0.3, 0.5, 0.75, 1.0)  # spots (low resolution first) of each vector refit
COARSE_FRACTIONS = (0.5, 1.0)  # the same on the coarse grid
N_CANDIDATES = 3  # separate coarse maxima refined with every spot
TILE_ANGLE = 0.02  # rad: coarse tiles, each with vectors from its centre's geometry
PLANE_TOLERANCE = 0.25  # |v . r - n| for a spot to join a refit


class BeamSearchError(GonioError):
    """The beam centre search could not run."""


#: The most candidate vectors and search widenings asked for that make sense.
MAX_VECTORS, MAX_WIDENINGS = 1000, 20


@dataclass
class BeamSearchParams:
    """Beam-centre search (names after dials.search_beam_position): ``method=default`` from
    the strong spots (this module), the others from the images
    (:mod:`.beam_search_projection`)."""

    method: str = _p("default", "default: from the strong spots (Sauter et al. 2004); "
                     "midpoint, maximum, inversion: from projections of the average image "
                     "(for visible scattering around the beam, e.g. electron diffraction).",
                     "method", choices=["default", *METHODS])
    mm_search_scope: float = _p(4.0, "Half-width of the square of beam-centre shifts searched "
                                "first; when the best lies at its edge the square moves there "
                                "(up to max_widenings times).", "default.mm_search_scope",
                                units="mm")
    max_widenings: int = _p(2, "Times the search square may move to an edge maximum.",
                            "default.max_widenings")
    coarse_step: float | None = _p(None, "Grid step of the widest search (None: from the "
                                   "wavelength, distance and max_cell).",
                                   "default.coarse_step", units="px")
    fine_step: float = _p(0.5, "Grid step of the last search, whose scores a quadratic "
                          "surface fits for the final position.",
                          "default.fine_step", units="px")
    n_macro_cycles: int = _p(2, "Cycles of new candidate vectors and search around the "
                             "current best (the second, from the improved geometry, "
                             "sharpens the vectors; the cycles stop early once one moves the "
                             "centre by less than fine_step / 100).", "default.n_macro_cycles")
    d_min: float | None = _p(None, "Use only spots to this resolution (None: all).",
                             "default.d_min", units="A")
    max_cell: float | None = _p(None, "Longest real-space cell edge (None: estimated from "
                                "the spot separations, times 1.3).", "default.max_cell",
                                units="A")
    n_vectors: int = _p(20, "Candidate real-space vectors that score each trial position.",
                        "default.n_vectors")
    max_reflections: int = _p(2000, "Use at most this many spots, the lowest resolution "
                              "first (every spot's phase is as sensitive to the beam centre; "
                              "low-angle spots give the candidate vectors).",
                              "default.max_reflections")
    coarse_reflections: int = _p(600, "Spots (lowest resolution first) that score the "
                                 "coarse grid.", "default.coarse_reflections")
    projection: ProjectionParams = field(default_factory=ProjectionParams, metadata={
        "help": "Parameters of the projection methods (midpoint, maximum, inversion).",
        "dials": "projection", "units": ""})


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
    range_px: float = 0.0  # half-width of the first coarse square
    landscape: dict = field(default_factory=dict)  # coarse grid: median, peaks, contrast
    timings: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        return {"beam_x_px": round(self.new_centre_px[0], 2),
                "beam_y_px": round(self.new_centre_px[1], 2),
                "shift_x_px": round(self.shift_px[0], 2), "shift_y_px": round(self.shift_px[1], 2),
                "shift_mm": round(float(np.hypot(*self.shift_mm)), 3),
                "score": round(self.score_new, 4),
                "contrast": round(float(self.landscape.get("contrast", 0.0)), 3)}

    def landscape_text(self) -> str:
        """How sure the search is: the best and the runner-up of the coarse grid."""
        land = self.landscape
        if not land:
            return ""
        rows = [[name, f"{p['x_px']:.1f}", f"{p['y_px']:.1f}", f"{p['score']:.3f}"]
                for name, p in zip(("best", "runner-up"), land["peaks"])]
        rows.append(["median", "", "", f"{land['median']:.3f}"])
        c = land["contrast"]
        verdict = ("a clear maximum" if c > 0.08 else "a weak maximum: check it by indexing "
                   "(try) or narrow the search with mm_search_scope" if c > 0.03 else
                   "no clear maximum: the spots do not decide the beam centre")
        return (f"Score landscape over {land['n_trials']} coarse positions "
                f"(+-{self.range_px:.1f} px):\n"
                + tabulate(rows, headers=["peak", "x px", "y px", "score"])
                + f"\ncontrast (best - runner-up) / (best - median) = {c:.2f}: {verdict}")

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
        lines.append("\n" + self.landscape_text())
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
    """Per imageset: lab positions (N, 3) mm sorted by increasing |rlp| (low resolution
    first), phi (rad), and the rotation model."""

    def __init__(self, expt, refl):
        self.expt = expt
        xy = refl["xyzobs.mm.value"]
        panels = refl["panel"].astype(np.int64)
        lab = np.zeros((len(refl), 3))
        for i, panel in enumerate(expt.detector):
            sel = panels == i
            lab[sel] = panel.lab_coord(xy[sel, :2])
        self.lab, self.phi = lab, xy[:, 2]
        order = np.argsort(np.linalg.norm(self.rlp(), axis=1), kind="stable")
        self.lab, self.phi = lab[order], self.phi[order]

    def rlp(self, shift_lab_mm=np.zeros(3)):
        e = self.expt
        lab = self.lab + shift_lab_mm
        s = lab / np.linalg.norm(lab, axis=1)[:, None] / e.beam.wavelength - e.beam.s0
        g = e.goniometer
        s = s @ np.linalg.inv(g.setting_rotation).T
        s = rotate_vectors(s, g.rotation_axis_datum, -self.phi)
        return s @ np.linalg.inv(g.fixed_rotation).T

    def scores(self, v, shifts_lab, n_spots=None, fractions=FRACTIONS):
        """Score of each trial shift (T, 3) mm with the first ``n_spots`` (lowest
        resolution) spots, see :func:`.beam_search_kernels.phase_scores`."""
        from .beam_search_kernels import phase_scores

        e, g = self.expt, self.expt.goniometer
        n = len(self.phi) if n_spots is None else min(n_spots, len(self.phi))
        counts = np.array([max(int(f * n), 8) for f in fractions], np.int64)
        return phase_scores(self.lab[:n], np.cos(self.phi[:n]), np.sin(self.phi[:n]),
                            np.ascontiguousarray(shifts_lab, float), e.beam.s0,
                            e.beam.wavelength, np.linalg.inv(g.setting_rotation),
                            np.asarray(g.rotation_axis_datum, float),
                            np.linalg.inv(g.fixed_rotation), np.ascontiguousarray(v, float),
                            np.minimum(counts, n), PLANE_TOLERANCE)


def _check_params(params: BeamSearchParams) -> None:
    bad = [f"{name}={getattr(params, name)}" for name in ("mm_search_scope", "fine_step",
                                                          "coarse_step", "d_min", "max_cell")
           if getattr(params, name) is not None and not getattr(params, name) > 0]
    bad += [f"{name}={getattr(params, name)}" for name in ("n_macro_cycles", "n_vectors",
                                                           "max_reflections",
                                                           "coarse_reflections")
            if not getattr(params, name) >= 1]
    bad += [f"max_widenings={params.max_widenings}"] if params.max_widenings < 0 else []
    if bad:
        raise BeamSearchError(f"{', '.join(bad)}: these must be positive (mm_search_scope in "
                              "mm, steps in px, d_min and max_cell in A, counts at least 1, "
                              "max_widenings 0 or more).")
    if params.n_vectors > MAX_VECTORS or params.max_widenings > MAX_WIDENINGS:
        raise BeamSearchError(
            f"n_vectors={params.n_vectors}, max_widenings={params.max_widenings}: at most "
            f"{MAX_VECTORS} candidate vectors (the default is 20) and {MAX_WIDENINGS} "
            "widenings (the default is 2); a wider search is mm_search_scope=.")


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


def search_beam_position(experiments: ExperimentList, strong: ReflectionTable | None,
                         params: BeamSearchParams | None = None, readers=None, masks=None):
    """Experiments with every detector moved to the best beam position, and the result.

    ``method=default``: all experiments share one shift (in the plane of the panel the
    first experiment's beam meets), as dials.search_beam_position does. The projection
    methods work on each imageset's average image (``readers``, ``masks``: see
    :func:`.beam_search_projection.search_by_projection`) and return a ProjectionResult.
    """
    params = params or BeamSearchParams()
    if params.method != "default":
        from .beam_search_projection import search_by_projection

        return search_by_projection(experiments, params.method, params.projection, readers,
                                    masks)
    _check_params(params)
    t0 = time.perf_counter()
    refl = _prepare(experiments, strong)
    i_panel, old_mm = _beam_panel(experiments)
    panel = experiments[0].detector[i_panel]
    px = np.asarray(panel.pixel_size)
    groups = []
    for i_exp, e in enumerate(experiments):
        r = refl.select(refl["id"] == i_exp)
        if not len(r):
            continue
        g = _Spots(e, r)
        n = len(g.phi)
        if params.d_min is not None:
            n = int(np.count_nonzero(1.0 / np.linalg.norm(g.rlp(), axis=1) >= params.d_min))
        g.lab, g.phi = g.lab[:min(n, params.max_reflections)], g.phi[:min(n, params.max_reflections)]
        if len(g.phi) >= MIN_SPOTS:
            groups.append(g)
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
    step = params.coarse_step
    if step is None:
        # a shift of step px moves the low-angle rlps by about 0.4 / max_cell (1/A)
        e = experiments[0]
        step = COARSE_FRACTION * e.beam.wavelength * panel.distance / (max_cell * px.min())
    step = max(float(step), params.fine_step)
    result.coarse_step = step

    def scorer(centre):
        """Score function of trial shifts (px), with vectors from the geometry at centre."""
        shift_lab = centre[0] * fast + centre[1] * slow
        vs = []
        for g in groups:
            r = g.rlp(shift_lab)
            d_min = float(1.0 / np.linalg.norm(r, axis=1).max())
            vs.append(dps_vectors(r, max_cell, d_min, params.n_vectors))

        def score(trial_px, n_spots=None, fractions=FRACTIONS):
            lab = trial_px[:, :1] * fast + trial_px[:, 1:] * slow
            return sum(g.scores(v, lab, n_spots, fractions) for g, v in zip(groups, vs))
        return score

    half = params.mm_search_scope / px.min()
    width_mm, height_mm = panel.image_size_mm
    if params.mm_search_scope > max(width_mm, height_mm):
        raise BeamSearchError(
            f"mm_search_scope={params.mm_search_scope:g} mm is larger than the detector panel "
            f"({width_mm:.0f} x {height_mm:.0f} mm): the beam centre cannot be that far off. "
            "Give a few mm (the default is 4; the search widens itself when the best centre "
            "lies at its edge), or give the beam centre to import (fast_slow_beam_centre= or "
            "mosflm_beam_centre=).")
    result.range_px = half
    tile = TILE_ANGLE * panel.distance / px.min()
    coarse_trials, coarse_scores, fns = _coarse_search(
        scorer, step, half, tile, params.coarse_reflections, params.max_widenings)
    result.score_old = float(scorer(np.zeros(2))(np.zeros((1, 2)))[0])
    # the coarse landscape can have ridges of near-equal scores: the best few separate
    # maxima are rescored with every spot (+-1 coarse step), the best one is refined
    candidates = []
    for i in _local_maxima(coarse_trials, coarse_scores, step, N_CANDIDATES):
        trials, _ = _grid(coarse_trials[i], step, step)
        scores = fns[i](trials)
        candidates.append((float(scores.max()), trials[int(np.argmax(scores))], fns[i]))
    candidates.sort(key=lambda c: -c[0])
    # candidates that rescore onto the best are the same peak, not a runner-up
    candidates = candidates[:1] + [c for c in candidates[1:]
                                   if np.hypot(*(c[1] - candidates[0][1])) > 2.0 * step]
    _, centre, score = candidates[0]
    built_at = None  # where the score of the cycle was built (cycles after the first)
    for cycle in range(params.n_macro_cycles):
        if cycle:
            if built_at is not None and np.hypot(*(centre - built_at)) < 0.01 * params.fine_step:
                break  # converged: the last cycle left the centre where its vectors came from
            score, built_at = scorer(centre), centre
        centre, trials, scores = _refine_search(score, centre, step, params.fine_step)
        result.cycles.append({"cycle": cycle + 1, "range_px": half if cycle == 0 else 2 * step,
                              "x_px": float(centre[0]), "y_px": float(centre[1]),
                              "score": float(scores.max())})
    refined = [(float(scores.max()), centre)] + [(c[0], c[1]) for c in candidates[1:]]
    result.landscape = _landscape(coarse_scores, [(c[1], c[0]) for c in refined])
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
    for peak in result.landscape.get("peaks", []):
        peak["x_px"], peak["y_px"] = (result.old_centre_px[0] - peak["x_px"],
                                      result.old_centre_px[1] - peak["y_px"])
    for c in result.cycles:
        c["x_px"], c["y_px"] = result.old_centre_px[0] - c["x_px"], result.old_centre_px[1] - c["y_px"]
    return out, result


def dps_vectors(rlp: np.ndarray, max_cell: float, d_min: float, n_vectors: int,
                step_rad: float = 0.02, n_bins: int = 256, f0_cutoff: int = 4,
                max_spots: int = 800) -> np.ndarray:
    """Candidate real-space vectors (M, 3) A: the DPS 1D FFTs of rlp projections over a
    hemisphere of directions (Steller et al. 1997; Sauter et al. 2004), as
    :func:`gonio.core.indexing.fft1d.fft1d_vectors` but with the lowest ``f0_cutoff``
    Fourier terms ignored (rstbx's F0_cutoff): near the beam the spots' projections form a
    smooth bump whose lowest terms would otherwise win every direction (the search starts
    from a wrong geometry, where the lattice terms are weaker)."""
    d_all = 1.0 / np.linalg.norm(rlp, axis=1)
    sel = d_all >= max(d_min, 2.0 * max_cell * step_rad)
    if np.count_nonzero(sel) < 50:
        sel = d_all >= np.sort(d_all)[::-1][min(len(d_all) - 1, 299)]
    r = rlp[sel][:max_spots]  # the lowest-resolution ones: callers sort rlps by |r|
    pmax = 1.0 / d_all[sel].min()
    dirs = hemisphere(step_rad)
    width = 2.0 * pmax / n_bins
    lengths = np.arange(n_bins // 2 + 1) / (n_bins * width)
    ok = (lengths >= 3.0) & (lengths <= max_cell) & (np.arange(len(lengths)) >= f0_cutoff)
    if not ok.any():
        return np.zeros((0, 3))
    spectrum = np.zeros((len(dirs), n_bins // 2 + 1))
    for s in range(0, len(dirs), 1024):
        p = dirs[s:s + 1024] @ r.T
        idx = np.clip(((p + pmax) / width).astype(np.int64), 0, n_bins - 1)
        idx += (np.arange(len(p)) * n_bins)[:, None]
        hist = np.bincount(idx.ravel(), minlength=len(p) * n_bins).reshape(len(p), n_bins)
        spectrum[s:s + 1024] = np.abs(np.fft.rfft(hist, axis=1))
    k = np.flatnonzero(ok)[np.argmax(spectrum[:, ok], axis=1)]
    best = local_maxima(dirs, spectrum[np.arange(len(dirs)), k], 3 * step_rad, n_vectors)
    out = []
    for i in best:
        # the FFT length is coarse: the best nearby one; the scoring refits the
        # vector (direction and length) at every trial position anyway
        trial = lengths[k[i]] + np.linspace(-0.5, 0.5, 11) / (n_bins * width)
        trial = trial[trial >= 3.0]
        length = trial[int(np.argmax(periodicity(r, np.outer(trial, dirs[i]), 1.0)))]
        out.append(length * dirs[i])
    return np.array(out).reshape(-1, 3)


def _grid(centre, half, step):
    g1 = np.arange(-half, half + 0.5 * step, step)
    gx, gy = np.meshgrid(g1, g1)
    return centre + np.column_stack([gx.ravel(), gy.ravel()]), len(g1)


def _coarse_search(scorer, step, half, tile, n_spots, max_widenings):
    """Coarse grids of ``step`` px over a square of +-``half`` px cut into tiles of about
    ``tile`` px, each scored with vectors from the geometry at its own centre (vectors
    from a geometry much further off than a tile are smeared) and the ``n_spots``
    lowest-resolution spots. The square moves to an edge maximum at most
    ``max_widenings`` times. Returns trials (T, 2) px, scores (T,) and each trial's
    score function."""
    centre = np.zeros(2)
    n_tiles = max(1, int(np.ceil(2.0 * half / tile)))
    tile_half = half / n_tiles
    offsets = -half + tile_half * (2 * np.arange(n_tiles) + 1)
    all_trials, all_scores, all_fns = [], [], []
    for _ in range(max_widenings + 1):
        best, best_score = None, -np.inf
        for dy in offsets:
            for dx in offsets:
                c = centre + [dx, dy]
                fn = scorer(c)
                trials, _ = _grid(c, tile_half, step)
                scores = fn(trials, n_spots, COARSE_FRACTIONS)
                all_trials.append(trials)
                all_scores.append(scores)
                all_fns += [fn] * len(trials)
                if scores.max() > best_score:
                    best, best_score = trials[int(np.argmax(scores))], scores.max()
        if np.abs(best - centre).max() < half - 1.5 * step:
            break
        centre = best
    return np.concatenate(all_trials), np.concatenate(all_scores), all_fns


def _local_maxima(trials, scores, step, n):
    """Indices of the ``n`` highest trials that are each the best within 3 grid steps."""
    order = np.argsort(scores)[::-1]
    picked = []
    for i in order:
        if len(picked) == n:
            break
        near = np.hypot(*(trials - trials[i]).T) <= 3.0 * step
        if scores[i] >= scores[near].max() and all(
                np.hypot(*(trials[i] - trials[j])) > 3.0 * step for j in picked):
            picked.append(i)
    return picked


def _refine_search(score, best, step, fine_step):
    """Finer grids around ``best`` with every spot (+-2 coarse steps, then +-1 step of the
    last grid at a quarter of its step, down to ``fine_step``), and the vertex of a
    quadratic surface fitted to the finest; returns it, the trials and scores."""
    lo_step, half = step, 2.0 * step
    while True:
        trials, _ = _grid(best, half, lo_step)
        scores = score(trials)
        best = trials[int(np.argmax(scores))]
        if lo_step <= fine_step:
            return _quadratic_peak(trials, scores, best), trials, scores
        half, lo_step = lo_step, max(lo_step / 4.0, fine_step)


def _landscape(coarse_scores, peaks) -> dict:
    """How sure the search is: the refined candidate maxima (shift px, score), best first,
    the median of the coarse grid, and the deciding figure
    (best - runner-up) / (best - median)."""
    med = float(np.median(coarse_scores))
    top = peaks[0][1]
    runner = peaks[1][1] if len(peaks) > 1 else med
    return {"median": med, "n_trials": len(coarse_scores),
            "peaks": [{"x_px": float(c[0]), "y_px": float(c[1]), "score": float(v)}
                      for c, v in peaks],
            "contrast": (top - runner) / (top - med) if top > med else 0.0}


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
