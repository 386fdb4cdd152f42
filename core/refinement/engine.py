"""Static refinement: Levenberg-Marquardt on (X, Y, phi) centroid residuals.

The target is sum w (obs - calc)^2 over the three centroid coordinates of
each indexed reflection, weights w = 1 / variance (statistical weighting
as DIALS), the variances floored at the variance of a uniform distribution
over one pixel / one image (1/12 bin^2). The minimiser is Levenberg-
Marquardt with Marquardt's diagonal scaling and Nielsen's damping update
(Madsen, Nielsen & Tingleff 2004), which is what DIALS's ``LevMar`` engine
implements. It stops when every RMSD changes by less than
``rmsd_tolerance`` (relative) in a step, when the RMSDs fall below the
``bin_size_fraction`` target, or after ``max_iterations``.
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
from .outliers import mcd_inliers, tukey_inliers
from .params import RefinementParams
from .prediction import Perturbation, predict


@dataclass
class RefinementResult:
    """What refinement did: steps, final RMSDs, parameters and cell s.u."""

    steps: list[dict] = field(default_factory=list)  # Step, Nref, Residual, RMSD_X, RMSD_Y, RMSD_Phi
    rmsds_by_experiment: list[dict] = field(default_factory=list)
    parameter_names: list[str] = field(default_factory=list)
    parameter_values: list[float] = field(default_factory=list)
    parameter_esds: list[float] = field(default_factory=list)
    cell_esds: list[list[float]] = field(default_factory=list)  # per crystal: a b c al be ga
    n_reflections: int = 0
    n_outliers: int = 0
    converged: bool = False
    reason: str = ""

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


class _Block:
    def __init__(self, kind, param, fixed):
        self.kind, self.param, self.fixed = kind, param, fixed
        self.values = param.p0.astype(float).copy()
        self.free_index = None  # positions in the free vector


class _Setup:
    """Parameterised models of an experiment list and the reflections' experiment."""

    def __init__(self, experiments: ExperimentList, params: RefinementParams):
        self.experiments = experiments
        self.blocks: list[_Block] = []
        self.exp_blocks = []
        seen = {}

        def block(kind, model, make, fixed_fn):
            key = (kind, id(model))
            if key not in seen:
                p = make()
                seen[key] = len(self.blocks)
                self.blocks.append(_Block(kind, p, fixed_fn(p)))
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
                      lambda e=expt: CrystalParameterisation(e.crystal),
                      lambda p: p.fixed_mask(params.crystal_fix))
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

    def predict_experiment(self, i, h, phi_obs, panel, want_jac=True):
        """xyzcal.mm (N, 3), s1, and derivatives (N, 3, n_free) for experiment i."""
        expt = self.experiments[i]
        bb, db, gb, cb = (self.blocks[k] for k in self.exp_blocks[i])
        M = expt.goniometer.setting_rotation @ expt.goniometer.fixed_rotation
        s0, ds0 = bb.param.compose(bb.values)
        Ds, dDs = db.param.compose(db.values)
        e, de = gb.param.compose(gb.values)
        A, dA = cb.param.compose(cb.values)
        perts, cols = [], []
        if want_jac:
            for blk, make in ((bb, lambda k: Perturbation(ds0=ds0[k])),
                              (db, lambda k: Perturbation(dD=dDs[k])),
                              (gb, lambda k: Perturbation(de=de[k])),
                              (cb, lambda k: Perturbation(dA=M @ dA[k]))):
                for k, col in zip(*blk.free_index):
                    perts.append(make(k))
                    cols.append(col)
        xyz, s1, jac_local = predict(h, phi_obs, panel, s0, e, M @ A, Ds, perts)
        jac = None
        if want_jac:
            jac = np.zeros((len(h), 3, self.n_free))
            jac[:, :, cols] = jac_local
        return xyz, s1, jac, e, s0

    def models(self) -> ExperimentList:
        new = [blk.param.model(blk.values) for blk in self.blocks]
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


def _weights(refl, bins_per_refl):
    var = refl["xyzobs.mm.variance"].copy()
    floor = bins_per_refl**2 / 12.0
    return 1.0 / np.maximum(var, floor)


def refine(experiments: ExperimentList, reflections: ReflectionTable,
           params: RefinementParams | None = None, log=None):
    """Refine the models of ``experiments`` against the indexed ``reflections``.

    Uses the rows with ``id >= 0`` and a non-zero ``miller_index``. Returns
    (experiments, reflections, RefinementResult): new models, the table with
    ``xyzcal.mm``, ``xyzcal.px``, ``s1``, ``entering`` filled for indexed rows
    and the ``used_in_refinement`` / ``centroid_outlier`` flags set.
    """
    params = params or RefinementParams()
    refl = reflections.copy()
    if "xyzobs.mm.value" not in refl:
        centroid_px_to_mm(experiments, refl)
    hkl = refl["miller_index"].astype(float)
    ids = refl["id"].astype(np.int64)
    indexed = (ids >= 0) & np.any(hkl != 0, axis=1)
    panel = refl["panel"].astype(np.int64) if "panel" in refl else np.zeros(len(refl), np.int64)
    bins = _bin_sizes(experiments)
    setup = _Setup(experiments, params)
    result = RefinementResult(parameter_names=setup.names())
    if setup.n_free == 0:
        raise GonioError("Every refinement parameter is fixed, so there is nothing to refine. "
                         "Release some parameters (e.g. crystal.fix=None).")

    def evaluate(rows, want_jac=True):
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

    # outlier rejection with the starting model, per experiment
    rows = np.flatnonzero(indexed)
    xyz0, s1_0, _, _ = evaluate(rows, want_jac=False)
    ok = np.all(np.isfinite(xyz0), axis=1)
    # near the spindle (small |zeta|) phi is ill-determined (DIALS cutoff 0.02)
    zeta = np.zeros(len(rows))
    for i, expt in enumerate(experiments):
        sel = ids[rows] == i
        zeta[sel] = zeta_factor(s1_0[sel], expt.beam.s0, expt.goniometer.rotation_axis)
    near_spindle = np.abs(zeta) < params.close_to_spindle_cutoff
    rows, ok, xyz0 = rows[~near_spindle], ok[~near_spindle], xyz0[~near_spindle]
    resid0 = xyz0 - refl["xyzobs.mm.value"][rows]
    if params.outlier_algorithm in ("tukey", "mcd"):
        for i in range(len(experiments)):
            sel = ok & (ids[rows] == i)
            if params.outlier_algorithm == "tukey":
                ok[sel] = tukey_inliers(resid0[sel], params.tukey_iqr_multiplier)
            else:
                ok[sel] = mcd_inliers(resid0[sel], params.mcd_threshold_probability)
    result.n_outliers = int(np.count_nonzero(~ok))
    outlier_rows = rows[~ok]
    rows = rows[ok]

    # random subset: reflections_per_degree, never below minimum_sample_size
    rng = np.random.default_rng(params.random_seed)
    if params.reflections_per_degree:
        keep = []
        for i, expt in enumerate(experiments):
            r = rows[ids[rows] == i]
            width = abs(expt.scan.oscillation[1]) * expt.scan.num_images
            n = max(int(params.reflections_per_degree * width), params.minimum_sample_size)
            keep.append(np.sort(rng.choice(r, n, replace=False)) if len(r) > n else r)
        rows = np.concatenate(keep) if keep else rows
    if len(rows) < max(setup.n_free, 3):
        raise GonioError(f"Only {len(rows)} reflections are left for refinement of "
                         f"{setup.n_free} parameters. Fix more parameters or index more spots.")

    obs = refl["xyzobs.mm.value"][rows]
    bins_r = bins[ids[rows]]
    sqrt_w = np.sqrt(_weights(refl.select(rows), bins_r))

    def residuals(p, want_jac=True):
        setup.set(p)
        xyz, _, jac, _ = evaluate(rows, want_jac)
        res = xyz - obs
        bad = ~np.isfinite(res)
        res[bad] = 0.0
        if want_jac:
            jac[np.any(bad, axis=1)] = 0.0
        return res, jac

    def rmsds(res):
        return np.sqrt(np.mean(res**2, axis=0))

    def record(step, res):
        rm = rmsds(res)
        scale = np.array([bins_r[:, 0].mean(), bins_r[:, 1].mean(), 1.0])
        result.steps.append({"Step": step, "Nref": len(rows),
                             "Residual": float(np.sum((res * sqrt_w) ** 2)),
                             "RMSD_X": float(rm[0] / scale[0]), "RMSD_Y": float(rm[1] / scale[1]),
                             "RMSD_Phi": float(np.rad2deg(rm[2]))})
        if log:
            s = result.steps[-1]
            log(f"step {step}: nref {len(rows)}  rmsd X {s['RMSD_X']:.3f} px  "
                f"Y {s['RMSD_Y']:.3f} px  phi {s['RMSD_Phi']:.4f} deg")

    p = setup.get()
    res, jac = residuals(p)
    record(0, res)
    target = params.bin_size_fraction * bins_r.mean(axis=0)

    def normal_eq(res, jac):
        Jw = (jac * sqrt_w[:, :, None]).reshape(-1, setup.n_free)
        rw = (res * sqrt_w).ravel()
        # einsum, not BLAS: for these thin matrices a threaded BLAS mostly waits
        return np.einsum("ij,ik->jk", Jw, Jw), np.einsum("ij,i->j", Jw, rw), float(rw @ rw)

    JTJ, g, cost = normal_eq(res, jac)
    mu = 1e-3  # relative to diag(J^T W J) (Marquardt scaling)
    nu = 2.0
    result.reason = "maximum number of iterations reached"
    for it in range(1, params.max_iterations + 1):
        D = np.diag(np.maximum(np.diag(JTJ), 1e-30))
        try:
            dp = np.linalg.solve(JTJ + mu * D, -g)
        except np.linalg.LinAlgError:
            result.reason = "singular normal matrix"
            break
        pred = cost - (cost + 2 * g @ dp + dp @ JTJ @ dp)
        res_new, jac_new = residuals(p + dp)
        JTJ_n, g_n, cost_n = normal_eq(res_new, jac_new)
        rho = (cost - cost_n) / pred if pred > 0 else -1.0
        if rho > 0:
            old = rmsds(res)
            p, res, jac, JTJ, g, cost = p + dp, res_new, jac_new, JTJ_n, g_n, cost_n
            mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
            record(it, res)
            new = rmsds(res)
            if np.all(new <= target):
                result.converged, result.reason = True, "RMSD target achieved"
                break
            if np.all(np.abs(old - new) <= params.rmsd_tolerance * np.maximum(old, 1e-30)):
                result.converged, result.reason = True, "RMSD no longer decreasing"
                break
        else:
            setup.set(p)
            mu *= nu
            nu *= 2.0
            if mu > 1e30:
                result.converged, result.reason = True, "no further decrease of the target"
                break
    setup.set(p)

    # parameter and cell uncertainties
    dof = max(3 * len(rows) - setup.n_free, 1)
    try:
        cov = np.linalg.inv(JTJ) * cost / dof
    except np.linalg.LinAlgError:
        cov = np.full((setup.n_free, setup.n_free), np.nan)
    result.parameter_values = [float(x) for x in p]
    result.parameter_esds = [float(x) for x in np.sqrt(np.abs(np.diag(cov)))]
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
    return new_experiments, refl, result


def _cell_esds(setup: _Setup, cov: np.ndarray) -> list[list[float]]:
    """Standard uncertainties of a, b, c, alpha, beta, gamma for each crystal."""
    out = []
    for blk in setup.blocks:
        if blk.kind != "crystal":
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


def _cell_params(real_abc: np.ndarray):
    return cell_from_real_vectors(real_abc).parameters


def update_predictions(experiments: ExperimentList, reflections: ReflectionTable) -> ReflectionTable:
    """A copy of ``reflections`` with ``xyzcal.mm``, ``xyzcal.px``, ``s1`` and ``entering``
    predicted by ``experiments`` for the indexed rows (``id >= 0``, hkl != 0)."""
    refl = reflections.copy()
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
