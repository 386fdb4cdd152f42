"""Scaling of one or several sweeps together (dials.scale), on whole arrays.

The model is fitted to the reflections that ``reflection_selection.method`` chooses
(:mod:`gonio.core.scaling.selection`; all of them by default); every reflection gets its
scale factor. Rounds, as dials.scale: (1) L-BFGS refinement of the model on the initial
intensities (profile where available) after outlier rejection (judged with a provisional
error model refined on everything with the initial scales); (2) the
intensity choice (``combine``: the profile/summation mix
I = w I_prf + (1 - w) I_sum, w = 1 / (1 + (I_sum / Imid)^3), with the Imid,
among pure profile, pure summation, the mean and max/10, max/100, ... of the
summation intensities (as DIALS), that gives the lowest Rmeas of the
observations with I/sigma > 1); (3) the error model (a, b), outlier rejection with it, the
error model again and a second L-BFGS round with the new weights
(``minimisation_weights=integration``: still 1/sigma^2 of the integration, as DIALS 1.x);
(4) outlier rejection and the error model on the final scales, and a full-matrix
Gauss-Newton round whose
normal matrix gives the parameter uncertainties and the variance of every
inverse scale factor.

``error_model_schedule=dials`` follows dials.scale 3.x's procedure step by step instead
(read from DIALS 3.12's scaling_algorithm, MultiScaler and SingleScaler): partial
measurements summed (:mod:`gonio.core.scaling.partials`); a first outlier rejection sweep
by sweep, judged with the inverse scale factors the table already holds and a = 1,
b = 0.02; L-BFGS rounds with DIALS's iterations and stopping rule
(:mod:`gonio.core.scaling.lbfgs_dials`), whose end point, well before the minimum, sets the
outliers and the error model that follow; outliers judged by the integration variances
until the intensity combination or the first error model; pairs never rejected; the
smoothers placed from the first reflection (:func:`gonio.core.scaling.model.smoother_design`);
then :func:`_dials_rounds`. ``ScalingResult.rounds`` lists each rejection and refinement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from gonio.core.errors import GonioError
from gonio.core.merging.equivalents import group_equivalents, map_to_asu
from gonio.core.models.rotation import rotate_vectors
from gonio.core.reflection_table import Flags, ReflectionTable
from gonio.core.scaling.array_model import ArraySweepModel
from gonio.core.scaling.error_model import apply_error_model, refine_error_model
from gonio.core.scaling.existing import continue_from_existing
from gonio.core.scaling.model import SweepModel
from gonio.core.scaling.params import ScalingParams
from gonio.core.scaling.partials import sum_partials
from gonio.core.scaling.selection import Selection, select_for_minimisation
from gonio.core.scaling.targets import (
    best_means,
    r_meas,
    reject_outliers,
    reject_outliers_simple,
)

_CHUNK = 100  # L-BFGS iterations between re-whitenings (the physical model converges in fewer)


class ScalingError(GonioError):
    pass


@dataclass
class ScalingResult:
    """What scaling did: the models, the error model, the intensity choice, counts."""

    models: list[SweepModel]
    error_model: tuple[float, float] | None
    intensity_choice: str
    imid: float | None
    n_used: int
    n_outliers: int
    n_excluded: int
    r_meas_choices: dict = field(default_factory=dict)
    target: float = 0.0
    filtering: list = field(default_factory=list)  # FilterCycle per delta-CC1/2 cycle
    selection: Selection | None = None  # the reflections the minimisation used
    #: each outlier rejection and error-model refinement in order: ("outliers", n rejected)
    #: or ("error model", (a, b)), as dials.scale logs them
    rounds: list = field(default_factory=list)
    #: per sweep: started from its existing model (overwrite_existing_models=False)
    continued: list = field(default_factory=list)


@dataclass
class _Obs:
    """The observations used in scaling (sorted by experiment): their symmetry groups, and
    the groups with Friedel mates apart (dials.scale refines its error model on those)."""

    group: np.ndarray
    n_groups: int
    anom_group: np.ndarray | None = None
    n_anom_groups: int = 0
    rounds: list = field(default_factory=list)  # ScalingResult.rounds, filled as they run
    d_star_sq: np.ndarray | None = None  # 1/d^2 (1/A^2) of each observation
    sweep: np.ndarray | None = None  # set for a sweep-by-sweep rejection: E^2 per sweep


def _conversions(table: ReflectionTable):
    """(lp/qe, partiality) per row; missing columns count as 1."""
    n = len(table)
    lp = table["lp"] if "lp" in table else np.ones(n)
    qe = table["qe"] if "qe" in table else (table["dqe"] if "dqe" in table else np.ones(n))
    part = table["partiality"] if "partiality" in table else np.ones(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return lp / qe, part


def combined_intensities(table: ReflectionTable, rows: np.ndarray, imid: float):
    """Corrected intensities and variances of ``rows`` for an Imid, as dials.scale.

    ``imid`` 0: profile (summation where profile fitting failed); 1: summation
    (profile where summation failed); otherwise, where both succeeded,
    I = w I_prf + (1 - w) I_sum with w = 1 / (1 + (I_sum / Imid)^3) (w = 1 for
    I_sum <= 0) and, as dials.scale, var = w var_prf + (1 - w) var_sum: the two estimates
    come from the same pixels, so their errors are strongly correlated and the
    independent-error sum w^2 var_prf + (1 - w)^2 var_sum would understate the variance.
    Corrections: lp / qe for both, and 1 / partiality for summation intensities.
    """
    conv, part = _conversions(table)
    conv, part = conv[rows], part[rows]
    part = np.where(part > 0, part, np.nan)  # no partiality: unusable summation intensity
    has_prf = "intensity.prf.value" in table
    has_sum = "intensity.sum.value" in table
    if has_sum:
        i_sum = table["intensity.sum.value"][rows] / part
        v_sum = table["intensity.sum.variance"][rows] / part ** 2
        sum_ok = table.get_flags(Flags.integrated_sum)[rows]
    if not has_prf:
        return i_sum * conv, v_sum * conv ** 2
    i_prf = table["intensity.prf.value"][rows]
    v_prf = table["intensity.prf.variance"][rows]
    prf_ok = table.get_flags(Flags.integrated_prf)[rows]
    if not has_sum:
        return i_prf * conv, v_prf * conv ** 2
    if imid == 1:
        i = np.where(sum_ok, i_sum, i_prf)
        v = np.where(sum_ok, v_sum, v_prf)
    else:
        i = np.where(prf_ok, i_prf, i_sum)
        v = np.where(prf_ok, v_prf, v_sum)
        if imid != 0:
            both = prf_ok & sum_ok
            with np.errstate(over="ignore", invalid="ignore"):
                w = np.where(i_sum > 0, 1.0 / (1.0 + (np.maximum(i_sum, 0) / imid) ** 3), 1.0)
            i = np.where(both, w * i_prf + (1 - w) * i_sum, i)
            v = np.where(both, w * v_prf + (1 - w) * v_sum, v)
    return i * conv, v * conv ** 2


def _both_integrated(table: ReflectionTable, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) bool: profile fitting and summation both succeeded with positive
    variances, and a positive partiality: the observations dials.scale compares the
    intensity choices on (the same observations for every choice)."""
    ok = table.get_flags(Flags.integrated_prf)[rows] & table.get_flags(Flags.integrated_sum)[rows]
    ok &= (table["intensity.prf.variance"][rows] > 0) & (table["intensity.sum.variance"][rows] > 0)
    return ok & (_conversions(table)[1][rows] > 0)


def imid_candidates(i_sum_corrected: np.ndarray) -> list[float]:
    """Imid values dials.scale tries: 0 (profile), 1 (summation), the mean, max/10, max/100, ...
    down to the mean."""
    avg = max(10.0, float(np.mean(i_sum_corrected)))
    imid = float(np.max(i_sum_corrected)) / 10.0
    out = [0.0, 1.0, avg, imid]
    while imid > avg:
        imid /= 10.0
        out.append(imid)
    return out


def _phi_deg(experiment, table: ReflectionTable, rows) -> np.ndarray:
    z = None
    if "xyzobs.px.value" in table:
        z = table["xyzobs.px.value"][rows, 2]
        if "xyzcal.px" in table:
            z = np.where(z != 0, z, table["xyzcal.px"][rows, 2])
    elif "xyzcal.px" in table:
        z = table["xyzcal.px"][rows, 2]
    if z is None:
        raise ScalingError("The reflections have no xyzobs.px.value or xyzcal.px column, so "
                           "their rotation angles are unknown: scale needs integrated reflections "
                           "(run integrate, or import DIALS's integrated.refl).")
    return experiment.scan.angle_from_frame(z)


def _crystal_frame_directions(experiment, table, rows, phi_deg):
    """The incident and scattered beam directions in the crystal frame (rotated by -phi about
    the spindle), as dials.scale: the incident one from the sample towards the source (-s0,
    DIALS's ``get_sample_to_source_direction``; DIALS 1.x used +s0), both unit vectors, so
    that the absorption surface is read along the two paths out of the crystal."""
    s1 = table["s1"][rows]
    norm = np.linalg.norm(s1, axis=1)
    s1 = s1 / np.where(norm > 0, norm, 1.0)[:, None]
    s0 = np.broadcast_to(-np.asarray(experiment.beam.unit_s0, float), s1.shape)
    axis = experiment.goniometer.rotation_axis
    ang = -np.radians(phi_deg)
    return rotate_vectors(s0, axis, ang), rotate_vectors(s1, axis, ang)


def _max_two_theta(experiment, table, rows) -> float:
    """Largest scattering angle 2theta (deg) of ``rows``, from s1 and the beam's s0."""
    if not len(rows):
        return 0.0
    s1 = table["s1"][rows]
    s0 = np.asarray(experiment.beam.unit_s0, float)
    cos = (s1 @ s0) / np.maximum(np.linalg.norm(s1, axis=1), 1e-300)
    return float(np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))))


def _detector_xy(table, rows) -> np.ndarray:
    """Observed (else predicted) detector position (px) of ``rows``, (N, 2)."""
    key = "xyzobs.px.value" if "xyzobs.px.value" in table else "xyzcal.px"
    if key not in table:
        raise ScalingError("model=array needs the detector positions of the reflections "
                           "(xyzobs.px.value or xyzcal.px): scale integrated reflections.")
    xy = table[key][rows, :2]
    if key == "xyzobs.px.value" and "xyzcal.px" in table:
        xy = np.where((xy == 0).all(axis=1)[:, None], table["xyzcal.px"][rows, :2], xy)
    return xy


def _d_spacing(experiments, table) -> np.ndarray:
    """d (A) of every row from its crystal's UB (DIALS leaves d = 0 on some rows)."""
    d = np.zeros(len(table))
    ids = table["id"]
    for i, e in enumerate(experiments):
        sel = ids == i
        q = table["miller_index"][sel] @ e.crystal.A.T
        norm = np.linalg.norm(q, axis=1)
        d[sel] = np.where(norm > 0, 1 / np.where(norm > 0, norm, 1.0), 0.0)
    return d


def _parse_exclude(items, n_exp):
    """[(experiment, first image, last image)] from "0:1:50,1:200:260" or a list of such."""
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    out = []
    for it in items or []:
        try:
            e, a, b = (int(x) for x in str(it).split(":"))
        except ValueError:
            raise ScalingError(f"exclude_images={it!r} is not exp:first:last (e.g. 0:1:50 leaves out "
                               "images 1 to 50 of the first experiment).") from None
        if not 0 <= e < n_exp:
            raise ScalingError(f"exclude_images={it!r}: there is no experiment {e} (there are "
                               f"{n_exp}, counted from 0).")
        out.append((e, a, b))
    return out


def select_for_scaling(experiments, table: ReflectionTable, p: ScalingParams):
    """Flags (N,) of user-excluded and excluded-for-scaling rows, and phi (deg), d (A)."""
    n = len(table)
    ids = table["id"]
    d = _d_spacing(experiments, table)
    phi = np.zeros(n)
    image = np.zeros(n)
    for i, e in enumerate(experiments):
        sel = np.flatnonzero(ids == i)
        if len(sel):
            phi[sel] = _phi_deg(e, table, sel)
            image[sel] = e.scan.frame_from_angle(phi[sel]) + 1
    user = np.zeros(n, bool)
    if p.d_min is not None:
        user |= d < p.d_min
    for e, a, b in _parse_exclude(p.exclude_images, len(experiments)):
        user |= (ids == e) & (image >= a) & (image < b + 1)
    excluded = (ids < 0) | (ids >= len(experiments))
    if "intensity.prf.value" not in table and "intensity.sum.value" not in table:
        raise ScalingError("The reflections have no intensity.prf.value or intensity.sum.value "
                           "column: scale needs integrated reflections; run integrate first.")
    conv, part = _conversions(table)
    has_both = "intensity.prf.value" in table and "intensity.sum.value" in table
    # dials.scale with intensity_choice=profile or sum scales only reflections integrated so
    kind = p.intensity_choice if p.error_model_schedule == "dials" and has_both and \
        p.intensity_choice != "combine" else None
    i0, v0 = combined_intensities(table, np.arange(n), 1.0 if kind == "sum" else 0.0)
    both = p.require_both_integrated and has_both
    flags = {"profile": Flags.integrated_prf, "sum": Flags.integrated_sum}.get(kind,
                                                                            Flags.integrated)
    need = table.get_flags(flags, all_bits=both) & (v0 > 0) & np.isfinite(i0)
    with np.errstate(divide="ignore", invalid="ignore"):
        need &= i0 / np.sqrt(v0) >= p.min_isigi
    excluded |= ~need | ~np.isfinite(conv) | (conv <= 0) | (part < p.partiality_cutoff)
    excluded |= ~np.isfinite(d) | (d <= 0) | ~np.isfinite(phi)
    return user, excluded, phi, d


def scale(experiments, table: ReflectionTable, p: ScalingParams):
    """Scale the reflections of ``experiments`` together.

    Returns (experiments with ``scaling_model`` set, a new table with
    ``inverse_scale_factor``, ``inverse_scale_factor_variance``,
    ``intensity.scale.value/variance`` and the scaling flags, ScalingResult). With
    ``filtering_method=deltacchalf``, scaling alternates with delta-CC1/2 filtering
    (:mod:`gonio.core.scaling.filtering`); removed rows are flagged
    ``user_excluded_in_scaling``. BLAS runs on one thread: its calls here are small, and
    more threads only cost CPU (measured: 0.83 s CPU and wall on one thread against 1.7 s
    CPU for 0.9 s wall on two, for 60k reflections).
    """
    from gonio.core.refinement.blas import one_thread

    with one_thread(None):
        return _scale_and_filter(experiments, table, p)


def _scale_and_filter(experiments, table: ReflectionTable, p: ScalingParams):
    out = _scale_once(experiments, table, p, None)
    if p.filtering_method != "deltacchalf":
        return out
    removed = np.zeros(len(table), bool)
    cycles = []
    for _ in range(p.filtering_max_cycles):
        cycle, newly = _filter_cycle(out[0], out[1], p, removed)
        cycles.append(cycle)
        if not newly.any():
            break
        removed |= newly
        out = _scale_once(experiments, table, p, removed)
    out[2].filtering = cycles
    return out


def _filter_cycle(experiments, scaled: ReflectionTable, p: ScalingParams, removed):
    """One delta-CC1/2 cycle on a scaled table: (FilterCycle, rows newly removed)."""
    import gemmi

    from gonio.core.scaling.filtering import (
        FilterCycle,
        choose_removals,
        delta_cc_half,
        resolution_bins,
    )

    used = np.flatnonzero(scaled.get_flags(Flags.scaled))
    all_ids = scaled["id"].astype(np.int64)
    if p.filtering_mode == "dataset":
        all_key = all_ids
        names = {i: f"dataset {i}" for i in range(len(experiments))}
    else:
        img = np.zeros(len(scaled), np.int64)
        for i, e in enumerate(experiments):
            sel = all_ids == i
            z = scaled["xyzobs.px.value"][sel, 2]
            img[sel] = (np.floor(z).astype(np.int64) - e.scan.array_range[0]) // \
                p.filtering_group_size
        all_key = all_ids * 1_000_000 + img
        names = {}
        for k in np.unique(all_key[used]):
            i, g = divmod(int(k), 1_000_000)
            first = experiments[i].scan.image_range[0] + g * p.filtering_group_size
            names[int(k)] = f"dataset {i} images {first}-{first + p.filtering_group_size - 1}"
    key = all_key[used]
    uniq_keys, fgroup = np.unique(key, return_inverse=True)
    labels = [names[int(k)] for k in uniq_keys]
    g = scaled["inverse_scale_factor"][used]
    sg = experiments[0].crystal.space_group
    m = map_to_asu(scaled["miller_index"][used], sg)
    grp = group_equivalents(m.hkl_asu, m.friedel_minus if p.anomalous else None)
    cell = gemmi.UnitCell(*experiments[0].crystal.unit_cell.parameters)
    bins = resolution_bins(cell.calculate_d_array(grp.hkl.astype(np.int32)))
    cc_all, delta = delta_cc_half(grp.group, len(grp), scaled["intensity.scale.value"][used] / g,
                                  fgroup.reshape(-1), labels, bins)
    sizes = np.bincount(fgroup.reshape(-1), minlength=len(labels))
    n_total = int((scaled.get_flags(Flags.scaled) | removed).sum())
    gone, cutoff = choose_removals(delta, sizes, n_total, int(removed.sum()),
                                   p.filtering_stdcutoff, p.filtering_max_percent_removed)
    # every row of a removed group goes, not only its scaled ones (outliers could come back)
    newly = np.isin(all_key, uniq_keys[gone]) if gone else np.zeros(len(scaled), bool)
    return FilterCycle(cc_all, labels, delta, [labels[k] for k in gone], cutoff), newly


def _scale_once(experiments, table: ReflectionTable, p: ScalingParams, removed):
    """One scaling run; rows in ``removed`` (or None) are user-excluded."""
    if not len(table) or "miller_index" not in table or "id" not in table:
        raise ScalingError("There are no indexed, integrated reflections to scale: run integrate "
                           "first (or import DIALS's integrated .expt/.refl).")
    for e in experiments:
        if e.crystal is None or not e.is_sweep:
            raise ScalingError("Every experiment needs a crystal model and a rotation scan to be "
                               "scaled; import or index them first.")
    if "s1" not in table:
        raise ScalingError("The reflections have no s1 column (the scattered-beam vectors): scale "
                           "needs integrated reflections; run integrate first.")
    sg = experiments[0].crystal.space_group
    lmax, surface_weight = p.resolved_absorption()
    user, excluded, phi, d = select_for_scaling(experiments, table, p)
    if p.error_model_schedule == "dials":  # after the exclusions, which judge each part
        table, absorbed = sum_partials(table)
        excluded |= absorbed
    if removed is not None:
        user = user | removed
    if p.d_min is not None and d.max() < p.d_min:
        raise ScalingError(f"d_min={p.d_min} A is beyond the data, whose lowest-resolution "
                           f"reflection is at {d.max():.2f} A: nothing would be left. Choose a "
                           f"d_min below {d.max():.2f} A (the data reach {d[d > 0].min():.2f} A).")
    use = ~user & ~excluded
    rows = np.flatnonzero(use)
    rows = rows[np.argsort(table["id"][rows], kind="stable")]
    if len(rows) == 0:
        raise ScalingError("No reflection is usable for scaling (all are excluded by the "
                           f"integration flags, partiality_cutoff={p.partiality_cutoff}, "
                           f"min_isigi={p.min_isigi}, d_min={p.d_min} or exclude_images); "
                           "check those parameters.")
    m = map_to_asu(table["miller_index"][rows], sg)
    grp = group_equivalents(m.hkl_asu, m.friedel_minus if p.anomalous else None)
    if np.max(grp.count) < 2:
        raise ScalingError(f"No reflection is measured more than once in {sg.xhm()} ({len(rows)} "
                           "observations, all of different unique reflections), so there is "
                           "nothing to scale against: scaling needs symmetry-equivalent or "
                           "repeated observations. Check the space group (run symmetry) or "
                           "collect more rotation.")
    exp_idx = table["id"][rows].astype(np.int64)
    obs = _Obs(grp.group, len(grp), d_star_sq=1.0 / d[rows] ** 2)
    if p.error_model_minimisation != "leave_one_out":  # dials.scale's: Friedel mates apart
        grp_anom = grp if p.anomalous else group_equivalents(m.hkl_asu, m.friedel_minus)
        obs.anom_group, obs.n_anom_groups = grp_anom.group, len(grp_anom)

    # models and designs (for every row of each experiment; scaling uses the selected rows)
    ids_all = table["id"]
    models, designs, blocks, full_designs, continued = [], [], [], [], []
    for i, e in enumerate(experiments):
        osc = e.scan.oscillation_range
        phi_range = (float(min(osc)), float(max(osc)))
        every = np.flatnonzero(ids_all == i)
        sel = rows[exp_idx == i]
        d_every = np.where(d[every] > 0, d[every], 1.0)
        phi_every = np.where(np.isfinite(phi[every]), phi[every], phi_range[0])  # excluded rows
        width = phi_range[1] - phi_range[0]
        scale_interval, decay_interval = p.resolved_intervals(width)
        absorption = p.resolved_absorption_correction(width, _max_two_theta(e, table, sel))
        if p.model == "array":  # the grids span the reflections scaled (else all of them)
            span = sel if len(sel) else every
            mdl = ArraySweepModel.new(phi_range, decay_interval, p.n_resolution_bins,
                                      p.n_absorption_bins, p.n_modulation_bins, d[span],
                                      _detector_xy(table, span), p.decay_correction,
                                      absorption, p.modulation_correction)
            full = mdl.design(phi_every, d_every, _detector_xy(table, every))
        else:
            mdl = SweepModel.new(p.model, phi_range, scale_interval, decay_interval, lmax,
                                 surface_weight, p.decay_restraint, p.decay_correction,
                                 absorption)
            if p.error_model_schedule == "dials" and len(sel):
                mdl.data_range = (float(phi[sel].min()), float(phi[sel].max()))
            s0c, s1c = _crystal_frame_directions(e, table, every, phi_every)
            full = mdl.design(phi_every, d_every, s0c, s1c)
        continued.append(not p.overwrite_existing_models and continue_from_existing(mdl, e))
        designs.append(full.subset(np.searchsorted(every, sel)))
        full_designs.append((every, full))
        models.append(mdl)
        blocks.append(slice(int(np.searchsorted(exp_idx, i)), int(np.searchsorted(exp_idx, i + 1))))

    has_both = "intensity.prf.value" in table and "intensity.sum.value" in table
    start = {"profile": 0.0, "sum": 1.0}.get(p.intensity_choice, 0.0)
    intensity, variance = combined_intensities(table, rows, start)
    if np.all(intensity <= 0):
        raise ScalingError("Every intensity to be scaled is zero or negative: there is no signal "
                           "to scale. Check the integration (background, profile model) and the "
                           "resolution range.")
    _, part_all = _conversions(table)
    selection = select_for_minimisation(p, obs.group, obs.n_groups, exp_idx, len(experiments),
                                        intensity, variance, part_all[rows], d[rows])
    sub = np.flatnonzero(selection.mask)
    mini = _restrict(designs, blocks, exp_idx, obs, sub)  # what the minimisation sees
    g = _g(models, designs, blocks)
    dials = p.error_model_schedule == "dials"
    e0 = _DIALS_START if dials and p.error_model == "basic" else None
    if dials:  # each sweep's outliers on its own, judged and weighted with (1, 0.02), and
        # judged with the table's inverse scale factors (a previous scaling's, else 1)
        v0 = _with_error_model(variance, intensity, e0)
        keep = _inliers(p, _per_sweep(obs, exp_idx), intensity, v0, _table_scales(table, rows))
        v_first = v0 if p.minimisation_weights == "error_model" else variance
    else:
        keep = _inliers(p, obs, intensity, _judging_variances(p, obs, intensity, variance, g), g)
        v_first = variance
    first_round = _lbfgs_dials if dials else _lbfgs
    target = first_round(models, *mini, intensity[sub], v_first[sub], keep[sub],
                         p.max_iterations)
    g = _g(models, designs, blocks)
    # dials.scale's table of all observations across sweeps gets error-model weights only
    # with the intensity combination (one sweep's table has them from the start)
    weighted_table = len(experiments) == 1
    if dials:
        keep = _inliers(p, obs, intensity, _with_error_model(variance, intensity, e0)
                        if weighted_table else variance, g)

    choices = {}
    imid = start
    comparable = keep & _both_integrated(table, rows) if has_both else np.zeros(0, bool)
    if p.intensity_choice == "combine" and comparable.any():
        raw_sum = table["intensity.sum.value"][rows] / _conversions(table)[1][rows]
        for cand in imid_candidates(raw_sum[comparable]):
            ci, cv = combined_intensities(table, rows, cand)
            good = comparable & (ci / np.sqrt(np.maximum(cv, 1e-300)) > 1.0)
            choices[cand] = r_meas(obs.group[good], obs.n_groups, (ci / g)[good],
                                   (cv / g ** 2)[good])
        imid = min(choices, key=lambda k: choices[k] if np.isfinite(choices[k]) else np.inf)
        intensity, variance = combined_intensities(table, rows, imid)
    elif p.intensity_choice == "combine" and has_both and \
            not table.get_flags(Flags.integrated_prf)[rows].any():
        imid = 1.0  # nothing to compare: no profile-fitted intensity (all were summation)
    choice = {0.0: "profile", 1.0: "sum"}.get(imid, "combine")
    if not has_both:
        choice = "profile" if "intensity.prf.value" in table else "sum"
    variance = np.where(variance > 0, variance, np.inf)

    if dials:
        combined = p.intensity_choice == "combine" and has_both
        err, keep, target, cov = _dials_rounds(p, models, designs, blocks, mini, sub, obs, e0,
                                               intensity, variance, keep, combined,
                                               combined or weighted_table)
    else:
        err, keep, target, cov = _gonio_rounds(p, models, designs, blocks, mini, sub, obs,
                                               intensity, variance, keep)

    # apply to every reflection of each experiment
    new = table.copy()
    n = len(new)
    inv = np.zeros(n)
    inv_var = np.zeros(n)
    for i, (every, full) in enumerate(full_designs):
        if not len(every):
            continue
        inv[every] = models[i].evaluate(full)
        if cov is not None:
            lo = sum(mm.n_parameters for mm in models[:i])
            c = cov[lo:lo + models[i].n_parameters, lo:lo + models[i].n_parameters]
            inv_var[every] = models[i].g_variance(full, c)
    new["inverse_scale_factor"] = inv
    new["inverse_scale_factor_variance"] = inv_var
    ival, ivar = combined_intensities(new, np.arange(n), imid)
    ival = np.where(np.isfinite(ival), ival, 0.0)
    ivar = np.where(np.isfinite(ivar), ivar, 0.0)
    if err is not None:
        ivar = apply_error_model(ivar, ival, *err)
    if dials and cov is not None:  # dials.scale: variances times 1 + sigma_g / g
        ivar = ivar * (1.0 + np.sqrt(inv_var) / np.where(inv > 0, inv, np.inf))
    new["intensity.scale.value"] = ival
    new["intensity.scale.variance"] = ivar
    new.unset_flags(np.ones(n, bool), Flags.bad_for_scaling | Flags.scaled)
    new.set_flags(user, Flags.user_excluded_in_scaling)
    new.set_flags(excluded & ~user, Flags.excluded_for_scaling)
    outl = np.zeros(n, bool)
    outl[rows[~keep]] = True
    new.set_flags(outl, Flags.outlier_in_scaling)
    used = np.zeros(n, bool)
    used[rows[keep]] = True
    new.set_flags(used, Flags.scaled)

    out_exps = type(experiments)()
    for i, e in enumerate(experiments):
        out_exps.append(e.replace(scaling_model=models[i].to_dict(
            err, e.scan.image_range, imid, e.scan.oscillation[1])))
    result = ScalingResult(models, err, choice, imid, int(keep.sum()), int((~keep).sum()),
                           int((user | excluded).sum()), choices, float(target),
                           selection=selection, rounds=obs.rounds, continued=continued)
    return out_exps, new, result


#: dials.scale's error model before its first refinement (a, b)
_DIALS_START = (1.0, 0.02)
#: damping of dials.scale's last Levenberg-Marquardt step, in units of max diag N
_DIALS_MU = 1e-3 / 3


def _with_error_model(variance, intensity, err):
    return variance if err is None else apply_error_model(variance, intensity, *err)


def _per_sweep(obs: _Obs, exp_idx) -> _Obs:
    """The groups split by sweep (dials.scale's first outlier rejection, sweep by sweep)."""
    _, group = np.unique(exp_idx * obs.n_groups + obs.group, return_inverse=True)
    group = group.reshape(-1)
    return _Obs(group, int(group.max()) + 1 if len(group) else 0, rounds=obs.rounds,
                d_star_sq=obs.d_star_sq, sweep=exp_idx)


def _gonio_rounds(p, models, designs, blocks, mini, sub, obs, intensity, variance, keep):
    """gonio's rounds after the intensity choice (``error_model_schedule=gonio``): the error
    model is refined before every outlier rejection, so that each is judged by sigmas that
    fit the current scales; the full-matrix round comes last, after the final error model.
    Returns (a, b) or None, the inliers, the target and the parameter covariance."""
    g = _g(models, designs, blocks)
    err = None
    var_used = variance
    if p.error_model == "basic":  # on the first round's inliers, then again on its own
        err = _refine_error_model(p, obs, keep, intensity, variance, g)
        var_used = apply_error_model(variance, intensity, *err)
    keep = _inliers(p, obs, intensity, var_used, g)
    if p.error_model == "basic":
        err = _refine_error_model(p, obs, keep, intensity, variance, g, err)
        var_used = apply_error_model(variance, intensity, *err)
    var_fit = var_used if p.minimisation_weights == "error_model" else variance
    target = _lbfgs(models, *mini, intensity[sub], var_fit[sub], keep[sub], p.max_iterations)
    g = _g(models, designs, blocks)
    keep = _inliers(p, obs, intensity, var_used, g)
    if p.error_model == "basic":  # final error model, on the final scales and outliers
        err = _refine_error_model(p, obs, keep, intensity, variance, g, err)
        var_used = apply_error_model(variance, intensity, *err)
    var_fit = var_used if p.minimisation_weights == "error_model" else variance
    _normalise(models, designs, blocks, keep)
    cov = None
    if p.full_matrix:
        target, cov = _gauss_newton(models, *mini, intensity[sub], var_fit[sub], keep[sub])
    return err, keep, target, cov


def _dials_rounds(p, models, designs, blocks, mini, sub, obs, e0, intensity, variance, keep,
                  combined, weighted):
    """dials.scale 3.x's rounds after the intensity choice (``error_model_schedule=dials``,
    read from DIALS 3.12's MultiScaler and scaling_algorithm): the second L-BFGS round weighted
    with the starting error model ``e0`` (1, 0.02), on the inliers ``keep`` (after an
    intensity combination, ``combined``, judged again with ``e0``); outliers again and the
    error model refined on the survivors; the full-matrix round weighted with it; outliers
    judged with it; the final error model refined on those inliers (from the previous a, b),
    with no minimisation after it. Until the error model is first refined, dials.scale judges
    outliers by the integration variances, unless its table of all observations has the
    weights of ``e0`` (``weighted``: after an intensity combination, or with one sweep).
    Returns as :func:`_gonio_rounds`."""
    weights = p.minimisation_weights == "error_model"
    v0 = _with_error_model(variance, intensity, e0)
    v_judge = v0 if weighted else variance
    if combined:
        keep = _inliers(p, obs, intensity, v0, _g(models, designs, blocks))
    target = _lbfgs_dials(models, *mini, intensity[sub], (v0 if weights else variance)[sub],
                          keep[sub], p.max_iterations)
    g = _g(models, designs, blocks)
    keep = _inliers(p, obs, intensity, v_judge, g)
    err = _refine_error_model(p, obs, keep, intensity, variance, g, e0) if e0 else None
    v1 = _with_error_model(variance, intensity, err)
    v1_fit = (v1 if weights else variance)[sub]
    # dials.scale minimises this target by Levenberg-Marquardt to convergence; the
    # full-matrix rounds here hold I_h fixed and converge slowly from the (1, 0.02)-weighted
    # minimum (simulated strong sweep: 2.45 % rms from the truth after 2 rounds, 2.21 % at
    # the minimum), so L-BFGS takes the model to the new minimum first. Without the
    # full-matrix round dials.scale runs a third L-BFGS round, stopped as the others.
    third_round = _lbfgs if p.full_matrix else _lbfgs_dials
    target = third_round(models, *mini, intensity[sub], v1_fit, keep[sub], p.max_iterations)
    _normalise(models, designs, blocks, keep)
    cov = None
    if p.full_matrix:
        target, _ = _gauss_newton(models, *mini, intensity[sub], v1_fit, keep[sub])
        cov = _dials_covariance(models, *mini, intensity[sub], v1_fit, keep[sub])
    g = _g(models, designs, blocks)
    keep = _inliers(p, obs, intensity, v1, g)
    if err is not None:
        err = _refine_error_model(p, obs, keep, intensity, variance, g, err)
    return err, keep, target, cov


def _judging_variances(p: ScalingParams, obs: _Obs, intensity, variance, g):
    """The variances the first outlier rejection judges deviations by, before the error
    model is known: with error_model=basic, a provisional error model refined on all
    observations with the initial scale factors ``g`` applied. The integration variances
    alone miss any error proportional to the intensity, which dominates strong data: judged
    by them, 15 % of a simulated sweep with 10 % proportional error were rejected and the
    error model then refined on the survivors came out a = 3.2, b = 0.01 instead of 1,
    0.1 (scale factors 5.4 % rms from the truth instead of 0.7 %)."""
    if p.error_model != "basic" or p.outlier_rejection == "none":
        return variance
    v = np.where(variance > 0, variance, np.inf)
    err = _refine_error_model(p, obs, np.ones(len(obs.group), bool), intensity, v, g)
    return apply_error_model(v, intensity, *err)


def _refine_error_model(p: ScalingParams, obs: _Obs, keep, intensity, variance, g, start=None):
    """(a, b) from the observations ``keep``: gonio's leave-one-out fit on the merging groups;
    dials.scale's individual and regression minimisations, as dials.scale, on the groups with
    Friedel mates apart (its error model never sees anomalous differences) and starting
    from the previous (a, b) (``start``; (1, 0.02) at first)."""
    if p.error_model_minimisation == "leave_one_out":
        err = refine_error_model("leave_one_out", obs.group[keep], obs.n_groups,
                                 intensity[keep], variance[keep], g[keep])
    else:
        err = refine_error_model(p.error_model_minimisation, obs.anom_group[keep],
                                 obs.n_anom_groups, intensity[keep], variance[keep], g[keep],
                                 start=start)
    obs.rounds.append(("error model", err))
    return err


def _inliers(p: ScalingParams, obs: _Obs, intensity, variance, g) -> np.ndarray:
    """(N,) bool: the observations that ``outlier_rejection`` keeps (with
    ``error_model_schedule=dials``, pairs that disagree are kept, as dials.scale does)."""
    if p.outlier_rejection == "none":
        return np.ones(len(obs.group), bool)
    if p.outlier_rejection == "simple":
        out = reject_outliers_simple(obs.group, obs.n_groups, intensity, variance, g,
                                     p.outlier_zmax)
    else:
        out = reject_outliers(obs.group, obs.n_groups, intensity, variance, g, p.outlier_zmax,
                              reject_pairs=p.error_model_schedule != "dials")
    if p.emax > 0 and obs.d_star_sq is not None:
        out |= _e2_outliers(obs, intensity / g, p.emax)
    obs.rounds.append(("outliers", int(out.sum())))
    return ~out


def _e2_outliers(obs: _Obs, scaled_intensity, emax: float) -> np.ndarray:
    """(N,) bool: observations with E^2 = (I / g) / <I / g>(d*^2) > emax^2 (dials.scale's
    ``determine_Esq_outlier_index_arrays``, cctbx's quasi-normalisation over the
    observations judged together, sweep by sweep when they are judged so)."""
    from gonio.core.symmetry.normalise import quasi_normalise

    out = np.zeros(len(scaled_intensity), bool)
    parts = [np.arange(len(out))] if obs.sweep is None else \
        [np.flatnonzero(obs.sweep == k) for k in np.unique(obs.sweep)]
    for rows in parts:
        if len(rows) > 1:
            norm = quasi_normalise(scaled_intensity[rows], obs.d_star_sq[rows])
            out[rows] = scaled_intensity[rows] > emax * emax * norm
    return out


def _table_scales(table: ReflectionTable, rows) -> np.ndarray:
    """The inverse scale factors the table holds for ``rows`` (a previous scaling's; 1 where
    there are none): dials.scale judges its first outliers with them."""
    if "inverse_scale_factor" not in table:
        return np.ones(len(rows))
    g = table["inverse_scale_factor"][rows]
    return np.where(np.isfinite(g) & (g > 0), g, 1.0)


def _restrict(designs, blocks, exp_idx, obs: _Obs, sub: np.ndarray):
    """(designs, blocks, obs) of the rows ``sub`` (sorted positions in the scaled rows, which
    are sorted by experiment): what the minimisation sees of a reflection selection."""
    if len(sub) == len(obs.group):
        return designs, blocks, obs
    e = exp_idx[sub]
    out_designs, out_blocks = [], []
    for i, (des, b) in enumerate(zip(designs, blocks)):
        lo, hi = int(np.searchsorted(e, i)), int(np.searchsorted(e, i + 1))
        out_designs.append(des.subset(sub[lo:hi] - b.start))
        out_blocks.append(slice(lo, hi))
    return out_designs, out_blocks, _Obs(obs.group[sub], obs.n_groups)


def _g(models, designs, blocks) -> np.ndarray:
    n = blocks[-1].stop if blocks else 0
    g = np.ones(n)
    for mdl, des, b in zip(models, designs, blocks):
        if b.stop > b.start:
            g[b] = mdl.evaluate(des)
    return g


def _set_all(models, x):
    lo = 0
    for mdl in models:
        mdl.set_parameters(x[lo:lo + mdl.n_parameters])
        lo += mdl.n_parameters


def _target(models, designs, blocks, obs, intensity, w):
    """fg(x) -> (target, gradient) of all the models' parameters x: sum w (I - g I_h)^2
    plus the restraints, the gradient with I_h held at its optimum (its own derivative
    term vanishes there)."""
    offsets = np.cumsum([0] + [m.n_parameters for m in models])

    def fg(x):
        _set_all(models, x)
        g = _g(models, designs, blocks)
        ih, _ = best_means(obs.group, obs.n_groups, intensity, w, g)
        r = intensity - g * ih[obs.group]
        val = float(np.sum(w * r * r))
        v = -2.0 * w * r * ih[obs.group]
        grad = np.zeros(len(x))
        for mdl, des, b, lo in zip(models, designs, blocks, offsets[:-1]):
            rv, rg = mdl.restraint(jacobian=True)
            grad[lo:lo + mdl.n_parameters] = mdl.gradient(des, v[b])[1] + rg
            val += rv
        return val, grad
    return fg


def _lbfgs_dials(models, designs, blocks, obs, intensity, variance, keep, max_iter) -> float:
    """dials.scale's L-BFGS round (:mod:`gonio.core.scaling.lbfgs_dials`): on the raw
    parameters, stopped where the RMSD first changes by less than 1e-4 relative."""
    from gonio.core.scaling.lbfgs_dials import minimise

    w = np.where(keep, 1.0 / variance, 0.0)
    fg = _target(models, designs, blocks, obs, intensity, w)
    x, fun, _ = minimise(fg, np.concatenate([m.parameters for m in models]), int(keep.sum()),
                         max_iterations=max_iter)
    _set_all(models, x)
    return float(fun)


def _lbfgs(models, designs, blocks, obs, intensity, variance, keep, max_iter) -> float:
    """L-BFGS on the scaling target (gradient with I_h held at its optimum), on parameters
    whitened by the Gauss-Newton normal matrix (see :func:`_whitening`), renewed every
    ``_CHUNK`` iterations."""
    w = np.where(keep, 1.0 / variance, 0.0)
    x0 = np.concatenate([m.parameters for m in models])
    fg = _target(models, designs, blocks, obs, intensity, w)

    def f(y, transform):
        val, grad = fg(transform @ y)
        return val, transform.T @ grad

    # chunks of iterations, whitened afresh at the start of each (the model is not linear)
    done, x, fun = 0, x0, 0.0
    while done < max_iter:
        transform = _whitening(models, designs, blocks, obs, intensity, w)
        chunk = min(_CHUNK, max_iter - done)
        res = minimize(f, np.linalg.solve(transform, x), args=(transform,), jac=True,
                       method="L-BFGS-B", options={"maxiter": chunk, "ftol": 1e-9, "gtol": 1e-7})
        x, fun = transform @ res.x, float(res.fun)
        _set_all(models, x)
        done += max(res.nit, 1)
        if res.nit < chunk:
            break
    return fun


def _whitening(models, designs, blocks, obs, intensity, w) -> np.ndarray:
    """T with x = T y such that the Gauss-Newton normal matrix in y is the identity
    (T = L^-T, H = L L^T, block diagonal by sweep): absorption, scale and decay
    parameters are strongly correlated, and L-BFGS converges in a few tens of
    iterations in the whitened parameters instead of hundreds."""
    g = _g(models, designs, blocks)
    ih, _ = best_means(obs.group, obs.n_groups, intensity, w, g)
    ihr = ih[obs.group]
    n_par = sum(m.n_parameters for m in models)
    t = np.eye(n_par)
    lo = 0
    for mdl, des, b in zip(models, designs, blocks):
        h = mdl.normal_equations(des, ihr[b], w[b])[0] + np.diag(mdl.restraint_curvature())
        n = mdl.n_parameters
        h += np.eye(n) * 1e-9 * max(np.trace(h) / n, 1e-300)
        try:
            t[lo:lo + n, lo:lo + n] = np.linalg.inv(np.linalg.cholesky(h)).T
        except np.linalg.LinAlgError:
            d = np.diag(h)
            t[lo:lo + n, lo:lo + n] = np.diag(1 / np.sqrt(np.where(d > 0, d, 1.0)))
        lo += n
    return t


def _gauss_newton(models, designs, blocks, obs, intensity, variance, keep, cycles: int = 2):
    """Full-matrix rounds; returns (target, covariance of all parameters).

    With I_h held fixed every observation depends on its own sweep's parameters only, so
    the normal matrix is block diagonal: one small dense block per sweep.
    """
    w = np.where(keep, 1.0 / variance, 0.0)
    n_par = sum(m.n_parameters for m in models)
    cov = np.zeros((n_par, n_par))
    val = 0.0
    for _ in range(cycles):
        g = _g(models, designs, blocks)
        ih, _ = best_means(obs.group, obs.n_groups, intensity, w, g)
        r = intensity - g * ih[obs.group]
        val = float(np.sum(w * r * r)) + sum(m.restraint() for m in models)
        lo = 0
        for mdl, des, b in zip(models, designs, blocks):
            h, rhs = mdl.normal_equations(des, ih[obs.group][b], w[b], r[b])
            h = h + np.diag(mdl.restraint_curvature())
            rhs = rhs - mdl.restraint(jacobian=True)[1] / 2
            try:
                c = np.linalg.inv(h)
            except np.linalg.LinAlgError:
                c = np.linalg.pinv(h)
            mdl.set_parameters(mdl.parameters + c @ rhs)
            cov[lo:lo + mdl.n_parameters, lo:lo + mdl.n_parameters] = c
            lo += mdl.n_parameters
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    lo = 0
    for m in models:
        m.sd = sd[lo:lo + m.n_parameters]
        lo += m.n_parameters
    return val, cov


def _dials_covariance(models, designs, blocks, obs, intensity, variance, keep) -> np.ndarray:
    """The parameter covariance as dials.scale's final Levenberg-Marquardt round leaves it
    (DIALS's ``calculate_esds``): chi^2 (N + mu I)^-1 with N = J^T W J + the restraints,
    J the derivatives of the residuals I - g I_h with I_h's own dependence on the parameters
    (``calc_jacobian``), chi^2 = (sum w r^2 + restraints) / (observations + restrained
    parameters - free parameters), and the first scale parameter of the first sweep fixed
    (``fix_initial``; its row and column zero). mu is the damping that round ends with: it
    starts at tau max diag N (tau = 1e-3) and its first, successful step divides it by 3.
    The overall scale is only weakly held once one parameter is fixed, so mu matters: with
    it the parameter uncertainties equal DIALS 3.12's to 1 % on the L-cysteine sweeps (20 %
    lower with tau max diag N). N is formed from group sums without J itself."""
    from scipy import sparse

    g = _g(models, designs, blocks)
    w = np.where(keep, 1.0 / variance, 0.0)
    ih, sum_wg2 = best_means(obs.group, obs.n_groups, intensity, w, g)
    ihr = ih[obs.group]
    r = intensity - g * ihr
    jac = sparse.block_diag([sparse.csr_matrix(m.evaluate(des, jacobian=True)[1])
                             for m, des in zip(models, designs)], format="csr")
    n = len(g)
    expand = sparse.csr_matrix((np.ones(n), (np.arange(n), obs.group)),
                               shape=(n, obs.n_groups))
    inv_s = np.divide(1.0, sum_wg2, out=np.zeros_like(sum_wg2), where=sum_wg2 > 0)
    # dI_h/dp (groups x parameters) and J = -(I_h dg/dp + g E dI_h/dp)
    dih = sparse.diags(inv_s) @ (expand.T @ (sparse.diags((intensity - 2 * g * ihr) * w) @ jac))
    cross = ((expand.T @ (sparse.diags(w * g * ihr) @ jac)).T @ dih).toarray()
    normal = (jac.T @ (sparse.diags(w * ihr * ihr) @ jac)).toarray() + cross + cross.T \
        + (dih.T @ (sparse.diags(sum_wg2) @ dih)).toarray()
    restraint = np.concatenate([m.restraint_curvature() for m in models])
    normal += np.diag(restraint)
    free = np.ones(len(restraint), bool)
    if models and getattr(models[0], "kind", None) == "physical":
        free[0] = False
    dof = int(keep.sum()) + int((restraint > 0).sum()) - int(free.sum())
    chi2 = (float(np.sum(w * r * r)) + sum(m.restraint() for m in models)) / max(dof, 1)
    nf = normal[np.ix_(free, free)]
    nf += np.eye(len(nf)) * _DIALS_MU * np.max(np.diag(nf))
    cov = np.zeros_like(normal)
    cov[np.ix_(free, free)] = chi2 * np.linalg.inv(nf)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    lo = 0
    for m in models:
        m.sd = sd[lo:lo + m.n_parameters]
        lo += m.n_parameters
    return cov


def _normalise(models, designs, blocks, keep) -> None:
    """Fix the overall scale (free in the target): mean inverse scale factor of the used
    observations = 1, the same factor for every sweep."""
    g = _g(models, designs, blocks)
    f = float(np.mean(g[keep])) if keep.any() else 1.0
    for m in models:
        m.rescale(1.0 / f)
