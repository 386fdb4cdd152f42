"""Static refinement: Levenberg-Marquardt on (X, Y, phi) centroid residuals.

The target is sum w (obs - calc)^2 over the three centroid coordinates of
each indexed reflection, weights w = 1 / variance (statistical weighting
as DIALS), the variances floored at the variance of a uniform distribution
over one pixel / one image (1/12 bin^2). The minimiser is Levenberg-
Marquardt with Marquardt's diagonal scaling and Nielsen's damping update
(Madsen, Nielsen & Tingleff 2004), which is what DIALS's ``LevMar`` engine
implements. It stops when every RMSD changes by less than
``rmsd_tolerance`` (relative) in a step, when the RMSDs fall below the
``bin_size_fraction`` target, or after ``max_iterations``. ``engine=GaussNewton``
and ``engine=LBFGS`` (scipy's L-BFGS-B on the same target and gradient) are the
alternatives DIALS offers. BLAS runs single-threaded inside refinement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import GonioError
from ..geometry.spots import centroid_px_to_mm
from ..models.crystal import cell_from_real_vectors
from ..models.experiment import ExperimentList
from ..prediction.rotation import entering_flags, xyz_mm_to_px, zeta_factor
from ..reflection_table import Flags, ReflectionTable
from .models import (
    BeamParameterisation,
    CrystalParameterisation,
    DetectorParameterisation,
    GoniometerParameterisation,
)
from .outliers import mcd_inliers, sauter_poon_inliers, tukey_inliers
from .params import RefinementParams
from .prediction import Perturbation, predict
from .restraints import CellRestraints
from .scan_varying import ScanVaryingCrystalParameterisation
from .smoother import num_intervals


@dataclass
class RefinementResult:
    """What refinement did: steps, final RMSDs, parameters and cell s.u."""

    steps: list[dict] = field(default_factory=list)  # Step, Nref, Residual, RMSD_X, RMSD_Y, RMSD_Phi
    rmsds_by_experiment: list[dict] = field(default_factory=list)
    # multi-panel detectors only: Detector, Panel id, Nref, RMSD_X, RMSD_Y (px), RMSD_Z (images)
    rmsds_by_panel: list[dict] = field(default_factory=list)
    parameter_names: list[str] = field(default_factory=list)
    parameter_values: list[float] = field(default_factory=list)
    parameter_esds: list[float] = field(default_factory=list)
    cell_esds: list[list[float]] = field(default_factory=list)  # per crystal: a b c al be ga
    n_reflections: int = 0
    n_outliers: int = 0
    converged: bool = False
    reason: str = ""
    scan_varying: bool = False
    correlations: list[tuple] = field(default_factory=list)  # (name, name, r) with |r| > 0.9
    static: RefinementResult | None = None  # the static stage before a scan-varying one

    @property
    def rmsds(self) -> tuple[float, float, float]:
        """Overall RMSDs (X px, Y px, Z images) weighted by Nref over experiments."""
        rows = [r for r in self.rmsds_by_experiment if r["Nref"] > 0]
        if not rows:
            return (np.nan, np.nan, np.nan)
        n = np.array([r["Nref"] for r in rows], float)
        out = []
        for k in ("RMSD_X", "RMSD_Y", "RMSD_Z"):
            out.append(float(np.sqrt(np.sum(n * np.array([r[k] for r in rows]) ** 2) / n.sum())))
        return tuple(out)


OUTLIER_ALGORITHMS = ("mcd", "tukey", "sauter_poon", "null")
ENGINES = ("LevMar", "GaussNewton", "LBFGS")


class _TooFewReflections(GonioError):
    pass


class _Block:
    def __init__(self, kind, param, fixed, model):
        self.kind, self.param, self.fixed, self.model = kind, param, fixed, model
        self.values = param.p0.astype(float).copy() if param is not None else np.zeros(0)
        self.free_index = None  # positions in the free vector


def _crystal_parameterisation(expt, params: RefinementParams, scan_varying: bool):
    """Scan-varying or static crystal parameterisation; None for a fixed crystal that
    keeps its A at the scan points."""
    if scan_varying:
        scan = expt.scan
        width = abs(scan.oscillation[1]) * scan.num_images
        n = num_intervals(width, params.interval_width_degrees, params.absolute_num_intervals)
        return ScanVaryingCrystalParameterisation(
            expt.crystal, scan, n, params.orientation_force_static, params.unit_cell_force_static)
    if "all" in params.crystal_fix and expt.crystal.A_at_scan_points is not None:
        return None
    return CrystalParameterisation(expt.crystal)


def _image_of(scan, phi_obs) -> np.ndarray:
    """0-based image (within the scan) holding each observed angle phi_obs (rad)."""
    z = scan.frame_from_angle(np.rad2deg(phi_obs)) - scan.array_range[0]
    return np.clip(np.floor(z), 0, scan.num_images - 1).astype(np.int64)


def _scan_point_A(expt, phi_obs) -> np.ndarray:
    """A (N, 3, 3) at the centre of each observation's image from ``A_at_scan_points``
    (the mean of the image's two boundary matrices)."""
    A_sp = expt.crystal.A_at_scan_points
    img = _image_of(expt.scan, phi_obs)
    return 0.5 * (A_sp[img] + A_sp[img + 1])


class _Setup:
    """Parameterised models of an experiment list and the reflections' experiment."""

    def __init__(self, experiments: ExperimentList, params: RefinementParams,
                 scan_varying: bool = False):
        self.experiments = experiments
        self.blocks: list[_Block] = []
        self.exp_blocks = []
        seen = {}

        def block(kind, model, make, fixed_fn):
            key = (kind, id(model))
            if key not in seen:
                p = make()
                seen[key] = len(self.blocks)
                fixed = fixed_fn(p) if p is not None else np.zeros(0, bool)
                self.blocks.append(_Block(kind, p, fixed, model))
            return seen[key]

        for expt in experiments:
            spindle = expt.goniometer.rotation_axis
            b = block("beam", expt.beam, lambda e=expt, s=spindle: BeamParameterisation(e.beam, s),
                      lambda p: p.fixed_mask(params.beam_fix))
            d = block("detector", expt.detector,
                      lambda e=expt: DetectorParameterisation(e.detector),
                      lambda p: p.fixed_mask(params.detector_fix, params.detector_fix_list))
            g = block("goniometer", expt.goniometer,
                      lambda e=expt: GoniometerParameterisation(e.goniometer, e.beam.s0),
                      lambda p: p.fixed_mask(params.goniometer_fix))
            c = block("crystal", expt.crystal,
                      lambda e=expt: _crystal_parameterisation(e, params, scan_varying),
                      lambda p: p.fixed_mask(params.crystal_fix))
            cp = self.blocks[c].param
            if getattr(cp, "scan_varying", False) and cp.scan is not expt.scan:
                raise GonioError(
                    "One crystal model is shared by experiments with different scans; a "
                    "scan-varying crystal follows a single scan. Refine these experiments "
                    "with scan_varying=False.")
            self.exp_blocks.append((b, d, g, c))
        n = 0
        for blk in self.blocks:
            free = np.flatnonzero(~blk.fixed)
            blk.free_index = (free, np.arange(n, n + len(free)))
            n += len(free)
        self.n_free = n

    def names(self) -> list[str]:
        """DIALS-style names: Beam1Mu1, Detector1Dist, Crystal1Phi1, Goniometer1GAMMA1."""
        out, count = [], {}
        for blk in self.blocks:
            count[blk.kind] = count.get(blk.kind, 0) + 1
            for k in blk.free_index[0]:
                out.append(f"{blk.kind.capitalize()}{count[blk.kind]}{blk.param.names[k]}")
        return out

    def get(self) -> np.ndarray:
        p = np.zeros(self.n_free)
        for blk in self.blocks:
            p[blk.free_index[1]] = blk.values[blk.free_index[0]]
        return p

    def set(self, p) -> None:
        for blk in self.blocks:
            blk.values[blk.free_index[0]] = p[blk.free_index[1]]

    def predict_experiment(self, i, h, phi_obs, panel, want_jac=True, compact=False):
        """xyzcal.mm (N, 3), s1, and derivatives (N, 3, n_free) for experiment i.

        ``compact``: for a scan-varying crystal whose columns follow the static ones
        (one experiment), the derivatives as a :class:`_CompactJacobian` instead."""
        expt = self.experiments[i]
        bb, db, gb, cb = (self.blocks[k] for k in self.exp_blocks[i])
        M = expt.goniometer.setting_rotation @ expt.goniometer.fixed_rotation
        s0, ds0 = bb.param.compose(bb.values)
        Ds, dDs = db.param.compose(db.values)
        e, de = gb.param.compose(gb.values)
        perts, cols = [], []
        blocks = [(bb, lambda k: Perturbation(ds0=ds0[k])),
                  (db, lambda k: Perturbation(dD=dDs[k])),
                  (gb, lambda k: Perturbation(de=de[k]))]
        sv = getattr(cb.param, "scan_varying", False)
        if sv:
            # the model at the centre of each image, for the reflections on that image
            img = _image_of(expt.scan, phi_obs)
            A_img, dA_img, C_img = cb.param.compose_frames(
                cb.values, cb.param.image_centres(), want_jac)
            MA = (M @ A_img)[img]
        elif cb.param is None:  # fixed crystal given by A at the scan points
            MA = M @ _scan_point_A(expt, phi_obs)
        else:
            A, dA = cb.param.compose(cb.values)
            MA = M @ A
            blocks.append((cb, lambda k: Perturbation(dA=M @ dA[k])))
        if want_jac:
            for blk, make in blocks:
                for k, col in zip(*blk.free_index):
                    perts.append(make(k))
                    cols.append(col)
            sv_entries = None
            if sv:
                free, sv_cols = cb.free_index
                locals_used = np.unique(cb.param.local_of[free])
                for k in locals_used:
                    perts.append(Perturbation(dA=(M @ dA_img[k])[img]))
                sv_entries = (np.searchsorted(locals_used, cb.param.local_of[free]), free,
                              sv_cols)
        xyz, s1, jac_local = predict(h, phi_obs, panel, s0, e, MA, Ds, perts)
        jac = None
        if want_jac:
            nc = len(cols)
            if (compact and sv_entries is not None and np.array_equal(cols, np.arange(nc))
                    and np.array_equal(sv_entries[2], np.arange(nc, self.n_free))):
                pos, entries, _ = sv_entries
                return xyz, s1, _CompactJacobian(jac_local[:, :, :nc], jac_local[:, :, nc:], img,
                                                 C_img[:, entries], pos), e, s0
            jac = np.zeros((len(h), 3, self.n_free))
            if np.array_equal(cols, np.arange(nc)):  # one experiment: columns in order
                jac[:, :, :nc] = jac_local[:, :, :nc]
            else:
                jac[:, :, cols] = jac_local[:, :, :nc]
            if sv_entries is not None:  # d/d(sample) = d/d(local parameter) x smoother weight
                pos, entries, sv_cols = sv_entries
                part = jac_local[:, :, nc + pos] * C_img[img][:, entries][:, None, :]
                if np.array_equal(sv_cols, np.arange(nc, nc + len(sv_cols))):
                    jac[:, :, nc:nc + len(sv_cols)] = part
                else:
                    jac[:, :, sv_cols] = part
        return xyz, s1, jac, e, s0

    def models(self) -> ExperimentList:
        new = [blk.model if blk.param is None or blk.fixed.all() else blk.param.model(blk.values)
               for blk in self.blocks]
        out = ExperimentList()
        for expt, (b, d, g, c) in zip(self.experiments, self.exp_blocks):
            out.append(expt.replace(beam=new[b], detector=new[d], goniometer=new[g],
                                    crystal=new[c]))
        return out


def _bin_sizes(experiments):
    """(pixel size fast mm, pixel size slow mm, oscillation width rad) per experiment."""
    out = []
    for expt in experiments:
        px = expt.detector[0].pixel_size
        out.append((px[0], px[1], np.deg2rad(abs(expt.scan.oscillation[1]))))
    return np.array(out)


def _weights(var, bins_per_refl):
    """1 / variance of the observed centroids (mm, mm, rad), never above that of a uniform
    distribution over one bin (pixel, image)."""
    floor = bins_per_refl**2 / 12.0
    return 1.0 / np.maximum(var, floor)


def refine(experiments: ExperimentList, reflections: ReflectionTable,
           params: RefinementParams | None = None, log=None):
    """Refine the models of ``experiments`` against the indexed ``reflections``.

    Uses the rows with ``id >= 0`` and a non-zero ``miller_index``. Returns
    (experiments, reflections, RefinementResult): new models, the table with
    ``xyzcal.mm``, ``xyzcal.px``, ``s1``, ``entering`` filled for indexed rows
    and the ``used_in_refinement`` / ``centroid_outlier`` flags set.

    With :class:`~gonio.core.refinement.params.RefineParams` and
    ``scan_varying`` True (or Auto on a scan spanning at least one smoother
    interval) the static refinement is followed by a scan-varying one, as
    dials.refine does: the crystals then carry ``A_at_scan_points`` and the
    result's ``static`` holds the static stage.
    """
    params = params or RefinementParams()
    if params.outlier_algorithm not in OUTLIER_ALGORITHMS:
        raise GonioError(f"outlier.algorithm={params.outlier_algorithm} is not one gonio knows: "
                         f"use {', '.join(OUTLIER_ALGORITHMS)} (mcd is the default).")
    if params.engine not in ENGINES:
        raise GonioError(f"engine={params.engine} is not one gonio knows: use "
                         f"{', '.join(ENGINES)} (LevMar is the default).")
    px_sz = params.sauter_poon_px_sz
    if px_sz is not None and (len(px_sz) != 2 or min(px_sz) <= 0):
        raise GonioError(f"sauter_poon.px_sz={px_sz} is not a pixel size: give two positive "
                         "lengths (fast, slow) in mm, or None (Auto) for the detector's own.")
    from .blas import one_thread

    # the hot loop is thin (N, 3) x (3, 3) products and (N, n) x (n, n) normal equations,
    # where a threaded BLAS mostly synchronises: one thread is faster on every machine
    with one_thread("blas"):
        return _refine(experiments, reflections, params, log)


def _refine(experiments, reflections, params, log):
    """:func:`refine` after its checks: static, then (if wanted) scan-varying."""
    scan_varying = _want_scan_varying(experiments, params)
    new, refl, result, judged = _refine_stage(experiments, reflections, params, log, False)
    if not scan_varying:
        return new, refl, result
    if log:
        log("scan-varying refinement")
    try:
        # the static model's last outlier judgement starts the scan-varying stage
        new, refl, sv_result, _ = _refine_stage(new, refl, params, log, True, judged)
    except _TooFewReflections:
        if str(params.scan_varying).lower() == "auto":
            return new, refl, result
        raise
    sv_result.static = result
    sv_result.cell_esds = result.cell_esds
    return new, refl, sv_result


def _want_scan_varying(experiments: ExperimentList, params) -> bool:
    """Resolve ``scan_varying`` (True / False / Auto) and check that the scans allow it."""
    mode = getattr(params, "scan_varying", False)
    if mode is False or mode is None or str(mode).lower() == "false":
        return False
    auto = str(mode).lower() == "auto"
    for expt in experiments:
        if expt.crystal is None:
            continue
        scan = expt.scan
        if scan is None or scan.oscillation[1] == 0:
            if auto:
                return False
            raise GonioError("scan_varying=True needs rotation scans; these experiments are "
                             "stills. Refine with scan_varying=False.")
        width = abs(scan.oscillation[1]) * scan.num_images
        n = num_intervals(width, params.interval_width_degrees, params.absolute_num_intervals)
        n_values = {1: 2, 2: 3}.get(n, n + 2)
        if auto and (width < params.interval_width_degrees or scan.num_images < 2 * n_values):
            return False
        if scan.num_images < 2 * n_values:
            raise GonioError(
                f"The scan of {scan.num_images} images ({width:g} deg) is too short for a "
                f"scan-varying model with {n} smoother interval(s): each of its {n_values} "
                "samples needs at least two images of data. Use fewer intervals "
                "(absolute_num_intervals=1, or a larger interval_width_degrees) or "
                "scan_varying=False.")
    if params.orientation_force_static and params.unit_cell_force_static:
        if auto:
            return False
        raise GonioError("With both crystal.orientation.force_static and "
                         "crystal.unit_cell.force_static nothing varies over the scan. Allow one "
                         "of them to vary, or use scan_varying=False.")
    return True


def _refine_stage(experiments: ExperimentList, reflections: ReflectionTable,
                  params: RefinementParams, log, scan_varying: bool, judged=None):
    """One refinement (static, or scan-varying crystals with static other models).

    ``judged``: (candidate rows, inlier mask) already judged with these models, if known.
    Returns (experiments, reflections, result, the last (rows, inlier mask) judgement)."""
    refl = _shallow_copy(reflections)
    if "xyzobs.mm.value" not in refl:
        centroid_px_to_mm(experiments, refl)
    hkl = refl["miller_index"].astype(float)
    ids = refl["id"].astype(np.int64)
    indexed = (ids >= 0) & np.any(hkl != 0, axis=1)
    panel = refl["panel"].astype(np.int64) if "panel" in refl else np.zeros(len(refl), np.int64)
    bins = _bin_sizes(experiments)
    setup = _Setup(experiments, params, scan_varying)
    result = RefinementResult(parameter_names=setup.names(), scan_varying=scan_varying)
    if setup.n_free == 0:
        raise GonioError("Every refinement parameter is fixed, so there is nothing to refine. "
                         "Release some parameters (e.g. crystal.fix=None).")
    # restraints act on the static cells (the scan-varying stage starts from their result)
    restraints = None if scan_varying else CellRestraints(setup, params)

    def evaluate(rows, want_jac=True):
        if len(experiments) == 1:  # no per-experiment gathering to do
            x, s, j, e, s0 = setup.predict_experiment(0, hkl[rows], refl["xyzobs.mm.value"][rows, 2],
                                                      panel[rows], want_jac, compact=True)
            return x, s, j, entering_flags(s, s0, e)
        xyz = np.full((len(rows), 3), np.nan)
        s1 = np.zeros((len(rows), 3))
        jac = np.zeros((len(rows), 3, setup.n_free)) if want_jac else None
        entering = np.zeros(len(rows), bool)
        for i in range(len(experiments)):
            sel = np.flatnonzero(ids[rows] == i)
            if not len(sel):
                continue
            r = rows[sel]
            x, s, j, e, s0 = setup.predict_experiment(i, hkl[r], refl["xyzobs.mm.value"][r, 2],
                                                      panel[r], want_jac)
            xyz[sel], s1[sel] = x, s
            entering[sel] = entering_flags(s, s0, e)
            if want_jac:
                jac[sel] = j
        return xyz, s1, jac, entering

    # Outliers are judged with the starting model; once refined, the model judges them
    # again and refinement repeats if that changes the set (a model far from the truth,
    # e.g. a static one for a drifting crystal, would otherwise bias what is kept).
    outlier_rows = rows = None
    for cycle in range(2):
        if cycle == 0 and judged is not None:
            cand, ok = judged
        else:
            cand, ok = _inliers(experiments, refl, ids, np.flatnonzero(indexed), evaluate,
                                params)
        result.n_outliers = int(np.count_nonzero(~ok))
        if cycle and np.array_equal(cand[~ok], outlier_rows):
            break  # the refined model rejects the same reflections: done
        outlier_rows = cand[~ok]
        rows = _subset(experiments, ids, cand[ok], params)
        if scan_varying and len(rows) < params.min_nref_per_parameter * setup.n_free:
            raise _TooFewReflections(
                f"Only {len(rows)} reflections for {setup.n_free} scan-varying refinement "
                f"parameters (at least {params.min_nref_per_parameter} per parameter are needed). "
                "Use fewer smoother intervals (a larger interval_width_degrees), "
                "use_all_reflections=True, or scan_varying=False.")
        if len(rows) < max(setup.n_free, 3):
            raise GonioError(f"Only {len(rows)} reflections are left for refinement of "
                             f"{setup.n_free} parameters. Fix more parameters or index more spots.")
        bins_r = bins[ids[rows]]
        problem = _Problem(setup, evaluate, rows, refl["xyzobs.mm.value"][rows],
                           np.sqrt(_weights(refl["xyzobs.mm.variance"][rows], bins_r)), bins_r,
                           restraints)
        p, JTJ, cost = _minimise(problem, params, result, log)
    setup.set(p)

    # parameter and cell uncertainties
    dof = max(3 * len(rows) - setup.n_free, 1)
    try:
        cov = np.linalg.inv(JTJ) * cost / dof
    except np.linalg.LinAlgError:
        cov = np.full((setup.n_free, setup.n_free), np.nan)
    result.parameter_values = [float(x) for x in p]
    result.parameter_esds = [float(x) for x in np.sqrt(np.abs(np.diag(cov)))]
    result.correlations = _high_correlations(cov, result.parameter_names)
    result.cell_esds = _cell_esds(setup, cov)

    new_experiments = setup.models()
    refl = update_predictions(new_experiments, refl)
    all_rows = np.flatnonzero(indexed)
    xyz = refl["xyzcal.mm"][all_rows]
    refl.unset_flags(np.ones(len(refl), bool), Flags.used_in_refinement)
    used = np.zeros(len(refl), bool)
    used[rows] = True
    refl.set_flags(used, Flags.used_in_refinement)
    out = np.zeros(len(refl), bool)
    out[outlier_rows] = True
    refl.set_flags(out, Flags.centroid_outlier)

    result.n_reflections = len(rows)
    res_final = xyz - refl["xyzobs.mm.value"][all_rows]
    used_all = used[all_rows]
    for i in range(len(new_experiments)):
        sel = (ids[all_rows] == i) & used_all & np.all(np.isfinite(res_final), axis=1)
        rm = np.sqrt(np.mean(res_final[sel] ** 2, axis=0)) if sel.any() else np.full(3, np.nan)
        b = bins[i]
        result.rmsds_by_experiment.append({
            "Exp id": i, "Nref": int(sel.sum()), "RMSD_X": float(rm[0] / b[0]),
            "RMSD_Y": float(rm[1] / b[1]), "RMSD_Z": float(rm[2] / b[2]) if b[2] else np.nan})
    result.rmsds_by_panel = _rmsds_by_panel(new_experiments, ids[all_rows], panel[all_rows],
                                            res_final, used_all)
    return new_experiments, refl, result, (cand, ok)


def _rmsds_by_panel(experiments, ids, panel, res, used) -> list[dict]:
    """RMSDs of the used reflections on each panel of every multi-panel detector (as
    DIALS's "RMSDs by panel" table): X, Y in that panel's pixels, Z in images."""
    rows, detectors = [], []
    for expt in experiments:
        if all(expt.detector is not d for d in detectors):
            detectors.append(expt.detector)
    ok = used & np.all(np.isfinite(res), axis=1)
    for d_id, det in enumerate(detectors):
        if len(det) < 2:
            continue
        on = np.array([e.detector is det for e in experiments])[ids]
        osc = np.array([np.deg2rad(abs(e.scan.oscillation[1])) for e in experiments])[ids]
        for k, pan in enumerate(det):
            sel = ok & on & (panel == k)
            n = int(sel.sum())
            rm = np.sqrt(np.mean(res[sel] ** 2, axis=0)) if n else np.full(3, np.nan)
            rz = np.sqrt(np.mean((res[sel, 2] / osc[sel]) ** 2)) if n else np.nan
            rows.append({"Detector": d_id, "Panel id": k, "Nref": n,
                         "RMSD_X": float(rm[0] / pan.pixel_size[0]),
                         "RMSD_Y": float(rm[1] / pan.pixel_size[1]), "RMSD_Z": float(rz)})
    return rows


def _inliers(experiments, refl, ids, rows, evaluate, params):
    """Candidate rows (not close to the spindle) and their inlier mask under the current
    model: outlier rejection on the (X, Y, phi) residuals, per experiment."""
    xyz0, s1_0, _, _ = evaluate(rows, want_jac=False)
    ok = np.all(np.isfinite(xyz0), axis=1)
    # near the spindle (small |zeta|) phi is ill-determined (DIALS cutoff 0.02)
    zeta = np.zeros(len(rows))
    for i, expt in enumerate(experiments):
        sel = ids[rows] == i
        zeta[sel] = zeta_factor(s1_0[sel], expt.beam.s0, expt.goniometer.rotation_axis)
    far = np.abs(zeta) >= params.close_to_spindle_cutoff
    rows, ok, xyz0 = rows[far], ok[far], xyz0[far]
    resid = xyz0 - refl["xyzobs.mm.value"][rows]
    if params.outlier_algorithm == "null":
        return rows, ok
    # groups judged separately: experiment x panel x block of the scan (DIALS defaults)
    key = np.zeros(len(rows), np.int64)
    if params.outlier_separate_experiments:
        key = ids[rows].copy()
    if params.outlier_separate_panels and "panel" in refl:
        key = key * 1000 + refl["panel"][rows].astype(np.int64)
    if params.outlier_separate_blocks:
        phi0 = np.array([np.deg2rad(e.scan.oscillation[0]) for e in experiments])[ids[rows]]
        width = np.deg2rad(params.outlier_block_width)
        key = key * 100000 + np.floor((refl["xyzobs.mm.value"][rows, 2] - phi0)
                                      / width).astype(np.int64)
    if params.outlier_algorithm == "sauter_poon":
        # radial deviations in px x px_sz (DIALS: px_sz Auto is the pixel size, i.e. mm)
        px = _bin_sizes(experiments)[ids[rows], :2]
        px_sz = params.sauter_poon_px_sz
        dxy = resid[:, :2] if px_sz is None else resid[:, :2] / px * np.asarray(px_sz, float)
    for k in np.unique(key):
        sel = ok & (key == k)
        if params.outlier_algorithm == "sauter_poon":
            ok[sel] = sauter_poon_inliers(dxy[sel, 0], dxy[sel, 1])
        elif params.outlier_algorithm == "tukey":
            ok[sel] = tukey_inliers(resid[sel], params.tukey_iqr_multiplier)
        else:
            ok[sel] = mcd_inliers(resid[sel], params.mcd_threshold_probability)
    return rows, ok


def _subset(experiments, ids, rows, params):
    """Random subset of ``reflections_per_degree`` per degree of each experiment's scan,
    never below ``minimum_sample_size`` (DIALS's reflection manager)."""
    if not params.reflections_per_degree or params.use_all_reflections:
        return rows
    rng = np.random.default_rng(params.random_seed)
    keep = []
    for i, expt in enumerate(experiments):
        r = rows[ids[rows] == i]
        width = abs(expt.scan.oscillation[1]) * expt.scan.num_images
        n = max(int(params.reflections_per_degree * width), params.minimum_sample_size)
        keep.append(np.sort(rng.choice(r, n, replace=False)) if len(r) > n else r)
    return np.concatenate(keep) if keep else rows


class _CompactJacobian:
    """Derivatives of a scan-varying refinement without the dense (N, 3, n_free) array.

    ``static`` (N, 3, a): the static parameters' columns; ``local`` (N, 3, b): the
    derivatives with respect to the crystal's local parameters at each reflection's
    image ``img``; the column of smoother sample e is local[:, :, pos[e]] times its
    weight ``weights[img, e]`` (n_images, E). Since the weights depend on the image
    only, J^T W J is accumulated per image first (n_images x E^2 work, not N x E^2).
    """

    def __init__(self, static, local, img, weights, pos):
        self.static, self.local, self.img = static, local, img
        self.weights, self.pos = weights, pos

    def zero_rows(self, rows) -> None:
        self.static[rows] = 0.0
        self.local[rows] = 0.0

    def dense(self) -> np.ndarray:
        """The full (N, 3, a + E) Jacobian (for checks)."""
        sv = self.local[:, :, self.pos] * self.weights[self.img][:, None, :]
        return np.concatenate([self.static, sv], axis=2)

    def normal_equations(self, res, sqrt_w):
        a, b, E = self.static.shape[2], self.local.shape[2], len(self.pos)
        n_img = self.weights.shape[0]
        # rows sorted by image, each reflection's 3 residuals as 3 rows: the per-image
        # blocks are then contiguous and their products are small BLAS calls
        order = np.argsort(self.img, kind="stable")
        start = 3 * np.searchsorted(self.img[order], np.arange(n_img + 1))
        Js = (self.static * sqrt_w[:, :, None])[order].reshape(-1, a)
        Jl = (self.local * sqrt_w[:, :, None])[order].reshape(-1, b)
        rw = (res * sqrt_w)[order].ravel()
        X, L, gl = np.zeros((n_img, a, b)), np.zeros((n_img, b, b)), np.zeros((n_img, b))
        for i in np.flatnonzero(np.diff(start)):
            rows = slice(start[i], start[i + 1])
            X[i], L[i], gl[i] = Js[rows].T @ Jl[rows], Jl[rows].T @ Jl[rows], Jl[rows].T @ rw[rows]
        W, pos = self.weights, self.pos
        JTJ = np.zeros((a + E, a + E))
        JTJ[:a, :a] = Js.T @ Js
        JTJ[:a, a:] = np.einsum("iae,ie->ae", X[:, :, pos], W)
        JTJ[a:, :a] = JTJ[:a, a:].T
        JTJ[a:, a:] = np.einsum("ief,ie,if->ef", L[:, pos][:, :, pos], W, W)
        g = np.concatenate([Js.T @ rw, np.einsum("ie,ie->e", gl[:, pos], W)])
        return JTJ, g, float(rw @ rw)


class _Problem:
    """Weighted least squares of the centroid residuals of ``rows``."""

    def __init__(self, setup, evaluate, rows, obs, sqrt_w, bins_r, restraints=None):
        self.setup, self.evaluate, self.rows = setup, evaluate, rows
        self.obs, self.sqrt_w, self.bins_r = obs, sqrt_w, bins_r
        self.restraints = restraints or None

    def residuals(self, p, want_jac=True):
        self.setup.set(p)
        xyz, _, jac, _ = self.evaluate(self.rows, want_jac)
        res = xyz - self.obs
        bad = ~np.isfinite(res)
        res[bad] = 0.0
        if want_jac and isinstance(jac, _CompactJacobian):
            jac.zero_rows(np.any(bad, axis=1))
        elif want_jac:
            jac[np.any(bad, axis=1)] = 0.0
        return res, jac

    def normal_equations(self, res, jac):
        """J^T W J, J^T W r and r^T W r."""
        n_free = self.setup.n_free
        if isinstance(jac, _CompactJacobian):
            JTJ, g, cost = jac.normal_equations(res, self.sqrt_w)
            if self.restraints is not None:
                r, Jr = self.restraints.evaluate()
                JTJ, g, cost = JTJ + Jr.T @ Jr, g + Jr.T @ r, cost + float(r @ r)
            return JTJ, g, cost
        Jw = (jac * self.sqrt_w[:, :, None]).reshape(-1, n_free)
        rw = (res * self.sqrt_w).ravel()
        JTJ, g, cost = Jw.T @ Jw, Jw.T @ rw, float(rw @ rw)  # BLAS (one thread: refine)
        if self.restraints is not None:  # weighted restraint residuals, appended
            r, Jr = self.restraints.evaluate()
            JTJ, g, cost = JTJ + Jr.T @ Jr, g + Jr.T @ r, cost + float(r @ r)
        return JTJ, g, cost

    def step_row(self, step, res) -> dict:
        rm = np.sqrt(np.mean(res**2, axis=0))
        return {"Step": step, "Nref": len(self.rows),
                "Residual": float(np.sum((res * self.sqrt_w) ** 2)),
                "RMSD_X": float(rm[0] / self.bins_r[:, 0].mean()),
                "RMSD_Y": float(rm[1] / self.bins_r[:, 1].mean()),
                "RMSD_Phi": float(np.rad2deg(rm[2]))}


def _minimise(problem: _Problem, params, result: RefinementResult, log):
    """Levenberg-Marquardt (``engine=LevMar``) or Gauss-Newton (``GaussNewton``, no damping
    unless a step fails) from the current parameters; appends to ``result.steps``.
    Returns (p, J^T W J, cost)."""
    setup = problem.setup

    def record(res):
        result.steps.append(problem.step_row(len(result.steps), res))
        if log:
            s = result.steps[-1]
            log(f"step {s['Step']}: nref {s['Nref']}  rmsd X {s['RMSD_X']:.3f} px  "
                f"Y {s['RMSD_Y']:.3f} px  phi {s['RMSD_Phi']:.4f} deg")

    def rmsds(res):
        return np.sqrt(np.mean(res**2, axis=0))

    p = setup.get()
    res, jac = problem.residuals(p)
    record(res)
    target = params.bin_size_fraction * problem.bins_r.mean(axis=0)
    JTJ, g, cost = problem.normal_equations(res, jac)
    if params.engine == "LBFGS":
        return _minimise_lbfgs(problem, params, result, record, p, JTJ, target)
    gauss_newton = params.engine == "GaussNewton"
    mu = 0.0 if gauss_newton else 1e-3  # relative to diag(J^T W J) (Marquardt scaling)
    nu = 2.0
    result.reason = "maximum number of iterations reached"
    for _ in range(params.max_iterations):
        D = np.diag(np.maximum(np.diag(JTJ), 1e-30))
        try:
            dp = np.linalg.solve(JTJ + mu * D, -g)
        except np.linalg.LinAlgError:
            result.reason = "singular normal matrix"
            break
        pred = cost - (cost + 2 * g @ dp + dp @ JTJ @ dp)
        res_new, jac_new = problem.residuals(p + dp)
        JTJ_n, g_n, cost_n = problem.normal_equations(res_new, jac_new)
        rho = (cost - cost_n) / pred if pred > 0 else -1.0
        if rho > 0:
            old = rmsds(res)
            p, res, jac, JTJ, g, cost = p + dp, res_new, jac_new, JTJ_n, g_n, cost_n
            mu = 0.0 if gauss_newton else mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
            record(res)
            new = rmsds(res)
            if np.all(new <= target):
                result.converged, result.reason = True, "RMSD target achieved"
                break
            if np.all(np.abs(old - new) <= params.rmsd_tolerance * np.maximum(old, 1e-30)):
                result.converged, result.reason = True, "RMSD no longer decreasing"
                break
        else:
            setup.set(p)
            mu = max(mu, 1e-3) * nu
            nu *= 2.0
            if mu > 1e30:
                result.converged, result.reason = True, "no further decrease of the target"
                break
    return p, JTJ, cost


def _minimise_lbfgs(problem: _Problem, params, result: RefinementResult, record, p0, JTJ0,
                    target):
    """``engine=LBFGS``: limited-memory BFGS with bounds (L-BFGS-B; Byrd, Lu, Nocedal & Zhu
    1995, SIAM J. Sci. Comput. 16, 1190; scipy) on the weighted least-squares target
    r^T W r with its analytic gradient 2 J^T W r, as DIALS's ``LBFGS`` refinery. The
    parameters are scaled by sqrt(diag(J^T W J)) at the start (mm, mrad, cell metric and
    wavelength become comparable). Stops at scipy's convergence tests, the RMSD target of
    ``bin_size_fraction`` or ``max_iterations``. Returns (p, J^T W J, cost)."""
    from scipy.optimize import minimize

    scale = np.sqrt(np.maximum(np.diag(JTJ0), 1e-30))
    last = {}

    def target_and_gradient(x):
        p = x / scale
        res, jac = problem.residuals(p)
        _, g, cost = problem.normal_equations(res, jac)
        last.update(x=x.copy(), res=res)
        return cost, 2.0 * g / scale

    def callback(intermediate_result):
        x = intermediate_result.x
        if not np.array_equal(x, last.get("x")):
            target_and_gradient(x)
        record(last["res"])
        if np.all(np.sqrt(np.mean(last["res"] ** 2, axis=0)) <= target):
            raise StopIteration

    out = minimize(target_and_gradient, p0 * scale, jac=True, method="L-BFGS-B",
                   callback=callback,
                   options={"maxiter": params.max_iterations, "maxfun": 20 * params.max_iterations,
                            "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20})
    p = out.x / scale
    res, jac = problem.residuals(p)
    JTJ, _, cost = problem.normal_equations(res, jac)
    if np.all(np.sqrt(np.mean(res**2, axis=0)) <= target):
        result.converged, result.reason = True, "RMSD target achieved"
    else:
        # status 1: out of iterations; 0 or 2 (the line search finds no lower target at
        # machine precision) is the minimum
        result.converged = out.status != 1
        result.reason = ("no further decrease of the target" if result.converged
                         else "maximum number of iterations reached")
    return p, JTJ, cost


def _high_correlations(cov: np.ndarray, names: list[str], threshold: float = 0.9):
    """Pairs of parameters whose estimated correlation exceeds ``threshold`` in size (as
    DIALS warns of): (name, name, r), strongest first."""
    sd = np.sqrt(np.abs(np.diag(cov)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.outer(sd, sd)
    i, j = np.nonzero(np.triu(np.abs(np.nan_to_num(r)) > threshold, 1))
    order = np.argsort(-np.abs(r[i, j]))
    return [(names[i[k]], names[j[k]], float(r[i[k], j[k]])) for k in order]


def _cell_esds(setup: _Setup, cov: np.ndarray) -> list[list[float]]:
    """Standard uncertainties of a, b, c, alpha, beta, gamma for each crystal."""
    out = []
    for blk in setup.blocks:
        if blk.kind != "crystal":
            continue
        if not isinstance(blk.param, CrystalParameterisation):  # scan-varying or fixed
            out.append([np.nan] * 6)
            continue
        cell_par = blk.param.cell
        free_local, cols = blk.free_index
        cell_sel = free_local >= 3
        if not cell_sel.any():
            out.append([0.0] * 6)
            continue
        t0 = blk.values[3:].copy()

        def cell_of(t, cell_par=cell_par):
            B = cell_par.compose(t)[0]
            c = _cell_params(np.linalg.inv(B))
            return np.array(c)

        Jc = np.zeros((6, len(free_local)))
        for j, (k, _) in enumerate(zip(free_local, cols)):
            if k < 3:
                continue
            dt = np.zeros_like(t0)
            dt[k - 3] = 1e-3
            Jc[:, j] = (cell_of(t0 + dt) - cell_of(t0 - dt)) / 2e-3
        sub = cov[np.ix_(cols, cols)]
        out.append([float(x) for x in np.sqrt(np.abs(np.diag(Jc @ sub @ Jc.T)))])
    return out


def _shallow_copy(reflections: ReflectionTable) -> ReflectionTable:
    """A new table sharing the columns of ``reflections`` (refinement replaces columns and
    never writes into them), except ``flags``, copied: flags are set in place."""
    refl = ReflectionTable(dict(reflections.items()), reflections.experiment_identifiers)
    if "flags" in refl:
        refl["flags"] = refl["flags"].copy()
    return refl


def _cell_params(real_abc: np.ndarray):
    return cell_from_real_vectors(real_abc).parameters


def update_predictions(experiments: ExperimentList, reflections: ReflectionTable) -> ReflectionTable:
    """A copy of ``reflections`` with ``xyzcal.mm``, ``xyzcal.px``, ``s1`` and ``entering``
    predicted by ``experiments`` for the indexed rows (``id >= 0``, hkl != 0). The other
    columns are shared with ``reflections`` (except ``flags``, which a caller may change
    in place)."""
    refl = _shallow_copy(reflections)
    if "xyzobs.mm.value" not in refl:
        centroid_px_to_mm(experiments, refl)
    n = len(refl)
    hkl = refl["miller_index"].astype(float)
    ids = refl["id"].astype(np.int64)
    panel = refl["panel"].astype(np.int64) if "panel" in refl else np.zeros(n, np.int64)
    setup = _Setup(experiments, RefinementParams(beam_fix=["all"], crystal_fix=["all"],
                                                 detector_fix=["all"], goniometer_fix=["all"]))
    xyzcal_mm = np.zeros((n, 3))
    xyzcal_px = np.zeros((n, 3))
    s1_all = refl["s1"].copy() if "s1" in refl else np.zeros((n, 3))
    ent_all = refl["entering"].copy() if "entering" in refl else np.zeros(n, bool)
    indexed = (ids >= 0) & np.any(hkl != 0, axis=1)
    for i, expt in enumerate(experiments):
        rows = np.flatnonzero(indexed & (ids == i))
        if not len(rows):
            continue
        xyz, s1, _, e, s0 = setup.predict_experiment(
            i, hkl[rows], refl["xyzobs.mm.value"][rows, 2], panel[rows], want_jac=False)
        xyzcal_mm[rows], s1_all[rows] = xyz, s1
        ent_all[rows] = entering_flags(s1, s0, e)
        xyzcal_px[rows] = xyz_mm_to_px(expt, panel[rows], xyz)
    refl["xyzcal.mm"], refl["xyzcal.px"] = xyzcal_mm, xyzcal_px
    refl["s1"], refl["entering"] = s1_all, ent_all
    return refl
