"""refine_bravais_settings: every compatible Bravais lattice, refined in its own setting.

As DIALS ``dials.refine_bravais_settings`` (after LABELIT; Sauter et al., J. Appl.
Cryst. 37, 399-409 (2004)): from the indexed P1 solution,

1. the Le Page search (:mod:`gonio.core.lattice.bravais`) lists the lattices whose
   metric fits within ``max_delta``;
2. for each, the crystal is transformed to the reference setting (``A' = A P^-T``),
   its metric symmetrised (orientation kept), given the lattice's lowest-symmetry
   space group (P4 for tP, C2 for mC, C2221 for oC, as DIALS) and refined with the
   lattice constraints, the reflections reindexed ``h' = h P``;
3. "rmsd" is sqrt(rmsd_x^2 + rmsd_y^2) (mm) of the refined positional residuals,
   "#spots" the number of reflections used (each candidate is refined on the same
   random subset of at most ``max_refine_reflections`` indexed reflections, for
   speed on large sweeps), "min/max cc" the correlation of
   I/sigma(I) of reflections related by the space group's operators
   (:mod:`gonio.core.lattice.symmetry_cc`);
4. a solution is recommended (``*``) by the DIALS heuristic against the P1 rmsd:
   with metric fit < 0.5 deg it is rejected only if (min cc is missing or < 0.5)
   and rmsd > 1.5 x P1; otherwise rejected if (min cc missing or < 0.7) and
   rmsd > 2 x P1, or if rmsd > 3 x P1.

The refinement is a callable ``refine_fn(experiments, reflections) -> (experiments,
reflections, anything)`` returning a table with ``xyzcal.mm``, ``xyzobs.mm.value``
and the ``used_in_refinement`` flag; by default gonio's refinement engine with
``RbsParams.refinement``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import gemmi
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.lattice.bravais import BravaisSetting, find_bravais_settings
from gonio.core.lattice.change_of_basis import transform_miller_indices
from gonio.core.lattice.symmetry_cc import SymmetryCC, symmetry_correlation
from gonio.core.models.crystal import Crystal, b_matrix
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable


class RbsError(GonioError):
    """refine_bravais_settings cannot run on this input."""


RefineFn = Callable[[ExperimentList, ReflectionTable], tuple]


@dataclass
class RbsParams:
    """Parameters of refine_bravais_settings (names as in DIALS)."""

    max_delta: float = 5.0  # lepage_max_delta, deg
    best_monoclinic_beta: bool = True
    experiment_id: int | None = None
    refinement: object | None = None  # RefinementParams; None: defaults, 100 reflections/deg
    max_refine_reflections: int | None = 5000  # random subset refined per candidate (speed)
    random_seed: int = 0


@dataclass(eq=False)
class RbsSolution:
    """One refined Bravais setting (a row of the rbs table)."""

    number: int
    setting: BravaisSetting
    experiments: ExperimentList | None  # refined, crystal in the reference setting
    reflections: ReflectionTable | None  # the input table reindexed with cb_op (as DIALS)
    rmsd_mm: float | None
    n_spots: int | None
    cc: SymmetryCC | None
    recommended: bool = False
    error: str = ""

    @property
    def lattice(self) -> str:
        return self.setting.lattice

    @property
    def metric_fit_deg(self) -> float:
        return self.setting.metric_fit_deg

    @property
    def cb_op(self) -> str:
        return self.setting.cb_op

    @property
    def min_cc(self) -> float | None:
        return self.cc.min_cc if self.cc is not None else None

    @property
    def max_cc(self) -> float | None:
        return self.cc.max_cc if self.cc is not None else None

    @property
    def crystal(self) -> Crystal | None:
        return self.experiments[0].crystal if self.experiments else None

    @property
    def unit_cell(self) -> gemmi.UnitCell:
        c = self.crystal
        return c.unit_cell if c is not None else self.setting.ideal_cell

    @property
    def volume(self) -> float:
        return self.unit_cell.volume

    @property
    def chiral_space_groups(self) -> list[str]:
        return self.setting.chiral_space_groups


@dataclass
class RbsResult:
    """All solutions, highest-numbered (most symmetric) first, as DIALS prints them."""

    solutions: list[RbsSolution]
    input_cell: gemmi.UnitCell
    experiment_id: int | None = None
    max_delta: float = 5.0
    headers: list[str] = field(default_factory=lambda: [
        "Solution", "Metric fit", "rmsd", "min/max cc", "#spots", "lattice", "unit_cell",
        "volume", "cb_op"])

    def table(self) -> list[list[str]]:
        """Rows formatted as DIALS formats them (``*`` marks recommended solutions)."""
        rows = []
        for s in self.solutions:
            cc = "-/-" if s.min_cc is None or s.max_cc is None else f"{s.min_cc:.3f}/{s.max_cc:.3f}"
            rows.append([
                f"{'*' if s.recommended else '':1s}{s.number:7d}",
                f"{s.metric_fit_deg:6.4f}",
                "-" if s.rmsd_mm is None else f"{s.rmsd_mm:5.3f}",
                cc,
                "-" if s.n_spots is None else f"{s.n_spots:d}",
                s.lattice,
                " ".join(f"{x:6.2f}" for x in s.unit_cell.parameters),
                f"{s.volume:.0f}",
                s.cb_op,
            ])
        return rows

    def as_dict(self) -> dict:
        """Plain summary per solution (the fields of DIALS's bravais_summary.json)."""
        return {str(s.number): {
            "max_angular_difference": s.metric_fit_deg, "rmsd": s.rmsd_mm, "nspots": s.n_spots,
            "bravais": s.lattice, "unit_cell": list(s.unit_cell.parameters), "cb_op": s.cb_op,
            "min_cc": s.min_cc, "max_cc": s.max_cc, "recommended": s.recommended,
            "correlation_coefficients": [] if s.cc is None else [float(x) for x in s.cc.cc],
            "cc_nrefs": [] if s.cc is None else [int(x) for x in s.cc.n_pairs],
            "chiral_space_groups": s.chiral_space_groups} for s in self.solutions}

    @property
    def recommended(self) -> list[RbsSolution]:
        return [s for s in self.solutions if s.recommended]


def select_solution(result: RbsResult, number: int) -> RbsSolution:
    """Solution ``number`` of an rbs result (the numbers in its table)."""
    for s in result.solutions:
        if s.number == number:
            if s.experiments is None:
                raise RbsError(
                    f"Solution {number} ({s.lattice}) could not be refined ({s.error}), so "
                    "there are no models to take. Pick another solution from the rbs table.")
            return s
    numbers = sorted(s.number for s in result.solutions)
    raise RbsError(
        f"There is no solution {number}: the last rbs run found solutions "
        f"{numbers[0]}..{numbers[-1]}. Pick one of those numbers (the recommended ones are "
        "marked with *), or rerun rbs with a larger max_delta.")


def identify_likely_solutions(solutions: list[RbsSolution]) -> None:
    """Set ``recommended`` with the DIALS heuristic (rmsd vs the P1 solution, metric fit,
    min cc); the P1 solution is the one numbered 1."""
    p1 = next(s for s in solutions if s.number == 1)
    rmsd_p1 = p1.rmsd_mm
    for s in solutions:
        s.recommended = False
        if s.rmsd_mm is None or rmsd_p1 is None:
            continue
        weak_cc = s.min_cc is None
        if s.metric_fit_deg < 0.5:
            if (weak_cc or s.min_cc < 0.5) and s.rmsd_mm > 1.5 * rmsd_p1:
                continue
        elif (weak_cc or s.min_cc < 0.7) and s.rmsd_mm > 2.0 * rmsd_p1:
            continue
        elif s.rmsd_mm > 3 * rmsd_p1:
            continue
        s.recommended = True


def crystal_in_setting(crystal: Crystal, setting: BravaisSetting) -> Crystal:
    """The crystal in the setting's reference basis (``A' = A P^-T``), with the lattice
    symmetry imposed on its metric (``setting.ideal_cell``) and the nearest orientation,
    and the lattice's lowest-symmetry space group."""
    A = crystal.A @ np.linalg.inv(setting.P).T
    B = b_matrix(setting.ideal_cell)
    u, _, vt = np.linalg.svd(A @ np.linalg.inv(B))
    U = u @ vt
    return Crystal(A=U @ B, space_group=setting.space_group)


def _default_refine_fn(params: RbsParams) -> RefineFn:
    from gonio.core.refinement import RefinementParams, refine

    rp = params.refinement
    if rp is None:
        rp = RefinementParams(reflections_per_degree=100.0)

    def run(experiments, reflections):
        return refine(experiments, reflections, rp)

    return run


def _rmsd_and_count(table: ReflectionTable) -> tuple[float, int]:
    used = table.get_flags(Flags.used_in_refinement)
    if not used.any():
        raise RbsError("the refinement used no reflections")
    d = table["xyzcal.mm"][used, :2] - table["xyzobs.mm.value"][used, :2]
    rx, ry = np.sqrt(np.mean(d ** 2, axis=0))
    return float(np.hypot(rx, ry)), int(used.sum())


def _select_input(experiments: ExperimentList, indexed: ReflectionTable, experiment_id):
    if not len(experiments) or all(e.crystal is None for e in experiments):
        raise RbsError(
            "There is no crystal model yet: refine_bravais_settings needs an indexed P1 "
            "solution. Run index first, then rbs.")
    if "miller_index" not in indexed or "id" not in indexed:
        raise RbsError("The reflections carry no Miller indices: run index first, then rbs.")
    if experiment_id is None:
        crystals = {id(e.crystal) for e in experiments if e.crystal is not None}
        if len(crystals) > 1:
            raise RbsError(
                f"The index found {len(crystals)} lattices; rbs works on one at a time. "
                f"Choose one with experiment_id=0..{len(experiments) - 1}.")
        keep = [i for i, e in enumerate(experiments) if e.crystal is not None]
    else:
        if not 0 <= experiment_id < len(experiments) or experiments[experiment_id].crystal is None:
            raise RbsError(
                f"experiment_id={experiment_id} does not name an indexed experiment: valid "
                f"values are {[i for i, e in enumerate(experiments) if e.crystal is not None]}.")
        keep = [experiment_id]
    crystal = experiments[keep[0]].crystal
    if crystal.space_group.number != 1:
        raise RbsError(
            f"The crystal is in space group {crystal.space_group.xhm()}, but rbs starts from "
            "the P1 solution. Reindex to P 1 first (reindex space_group=P1) or re-run index "
            "without a space group.")
    ids = indexed["id"].astype(np.int64)
    hkl = np.asarray(indexed["miller_index"])
    rows = np.isin(ids, keep) & np.any(hkl != 0, axis=1)
    if rows.sum() < 10:
        raise RbsError(
            f"Only {int(rows.sum())} indexed reflections belong to the chosen lattice; rbs "
            "needs an indexed reflection table. Run index first.")
    table = indexed.select(rows)
    remap = {old: new for new, old in enumerate(keep)}
    table["id"] = np.array([remap[int(i)] for i in table["id"]], dtype=np.int32) if len(keep) > 1 \
        else np.zeros(len(table), dtype=np.int32)
    table.experiment_identifiers = {remap[k]: v for k, v in indexed.experiment_identifiers.items()
                                    if k in remap}
    sub = ExperimentList(copy.deepcopy([experiments[i] for i in keep]))
    return sub, table, crystal


def _i_over_sigma(table: ReflectionTable):
    if "intensity.sum.value" not in table or "intensity.sum.variance" not in table:
        return None
    var = np.asarray(table["intensity.sum.variance"], dtype=float)
    ok = var > 0
    return ok, np.asarray(table["intensity.sum.value"], dtype=float)[ok] / np.sqrt(var[ok])


def refine_bravais_settings(experiments: ExperimentList, indexed: ReflectionTable,
                            params: RbsParams | None = None,
                            refine_fn: RefineFn | None = None) -> RbsResult:
    """Refine the indexed P1 solution in every Bravais setting within ``max_delta``.

    Returns an :class:`RbsResult` whose solutions (highest number first) each keep
    their refined experiments and the reflections reindexed with their cb_op.
    """
    params = params or RbsParams()
    sub, table, crystal = _select_input(experiments, indexed, params.experiment_id)
    refine_fn = refine_fn or _default_refine_fn(params)
    cell = crystal.unit_cell
    settings = find_bravais_settings(cell, params.max_delta, params.best_monoclinic_beta)
    isig = _i_over_sigma(table)
    subset = np.arange(len(table))
    if params.max_refine_reflections and len(table) > params.max_refine_reflections:
        rng = np.random.default_rng(params.random_seed)
        subset = np.sort(rng.choice(len(table), params.max_refine_reflections, replace=False))
    sub_table = table.select(subset)  # the reflections each candidate is refined on
    solutions = []
    n = len(settings)
    for j, setting in enumerate(settings):
        number = n - j
        expts = ExperimentList(copy.deepcopy(list(sub)))
        new_crystal = crystal_in_setting(crystal, setting)
        for e in expts:
            e.crystal = new_crystal
        # unchanged columns are shared with the input tables, not copied
        refl = ReflectionTable(dict(table.items()), table.experiment_identifiers)
        refl["miller_index"] = transform_miller_indices(refl["miller_index"], setting.P)
        work = ReflectionTable(dict(sub_table.items()), table.experiment_identifiers)
        work["miller_index"] = refl["miller_index"][subset]
        cc = None
        if isig is not None and isig[0].sum() > 0:
            cc = symmetry_correlation(refl["miller_index"][isig[0]], isig[1], setting.space_group)
        try:
            r_expts, r_refl, _ = refine_fn(expts, work)
            rmsd, nspots = _rmsd_and_count(r_refl)
        except (GonioError, np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
            solutions.append(RbsSolution(number, setting, None, None, None, None, cc,
                                         error=str(exc)))
            continue
        for e in r_expts:
            if e.crystal is not None:
                e.crystal = e.crystal.replace(space_group=setting.space_group)
        solutions.append(RbsSolution(number, setting, r_expts, refl, rmsd, nspots, cc))
    identify_likely_solutions(solutions)
    return RbsResult(solutions, cell, params.experiment_id, params.max_delta)
