"""Autoindexing of rotation sweeps: ``index(experiments, strong, IndexParams())``.

The workflow of dials.index (Gildea et al. 2014, Acta Cryst. D70, 2652):

1. strong-spot centroids to mm / radians and to rlps with the current
   geometry, per imageset (:mod:`gonio.core.geometry.spots`);
2. ``max_cell`` from nearest-neighbour spot separations (unless given);
3. candidate real-space vectors (``fft3d``, ``fft1d`` or
   ``real_space_grid_search``), the best basis, Niggli reduction, and with
   known symmetry the setting matching ``space_group`` / ``unit_cell``;
4. macro-cycles at increasing resolution: index assignment of the spots
   to d_min, static refinement of all models with outlier rejection, and
   new rlps from the refined geometry;
5. with ``max_lattices`` > 1 the unindexed spots are searched again.

Several sweeps are indexed jointly (one lattice search over all their spots, one
crystal model shared) or each on its own, by ``joint_indexing`` (see :func:`index`).

Returns the experiments with crystals (one experiment per lattice and
imageset), the strong spots with ``miller_index``, ``id`` (-1 when
unindexed), ``xyzcal.mm``, ``xyzcal.px``, ``s1``, ``rlp``, ``entering`` and
the ``indexed`` / ``used_in_refinement`` flags, and an :class:`IndexResult`.
"""

from __future__ import annotations

import time
import uuid

import gemmi
import numpy as np

from ..errors import GonioError
from ..geometry.spots import centroid_px_to_mm, map_to_reciprocal_space
from ..models.crystal import Crystal
from ..models.experiment import ExperimentList
from ..prediction.rotation import entering_flags
from ..refinement import refine, update_predictions
from ..reflection_table import Flags, ReflectionTable
from .assign import assign_local, assign_simple
from .basis import niggli_reduce, refine_vectors, select_basis, unique_vectors
from .fft3d import fft3d_peaks, grid_d_min
from .max_cell import nearest_neighbour_max_cell
from .params import IndexParams
from .result import IndexResult
from .symmetry import find_setting

MIN_SPOTS = 10


class IndexingError(GonioError):
    """Indexing could not proceed or found no lattice."""


class _Clock:
    """Adds the seconds since the previous call to ``timings[name]``."""

    def __init__(self, timings: dict):
        self.timings = timings
        self.t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def _log(log, msg):
    if log is not None:
        log(msg)


def _check_experiments(experiments: ExperimentList) -> None:
    if not len(experiments):
        raise IndexingError("There are no experiments to index: run import first.")
    for e in experiments:
        missing = [n for n in ("beam", "detector", "goniometer", "scan")
                   if getattr(e, n) is None]
        if missing or e.scan.oscillation[1] == 0:
            raise IndexingError(
                "gonio indexes rotation sweeps; an experiment here has "
                f"{'no ' + ', '.join(missing) if missing else 'a zero oscillation width'}. "
                "Import a sweep (with goniometer and scan) or set the oscillation on import.")


def _known_symmetry(params: IndexParams):
    sg = cell = None
    if isinstance(params.space_group, gemmi.SpaceGroup):
        sg = params.space_group
    elif params.space_group not in (None, "", "None"):
        sg = gemmi.find_spacegroup_by_name(str(params.space_group))
        if sg is None:
            raise IndexingError(f"space_group={params.space_group} is not a space group gonio "
                                "knows; give a Hermann-Mauguin symbol (e.g. P4212, C2) or "
                                "a number.")
    if params.unit_cell not in (None, "", "None"):
        uc = params.unit_cell
        if isinstance(uc, gemmi.UnitCell):
            uc = uc.parameters
        if isinstance(uc, str):
            uc = [float(x) for x in uc.replace(",", " ").split()]
        uc = [float(x) for x in uc]
        ok = len(uc) == 6 and all(x > 0 for x in uc[:3]) and all(0 < x < 180 for x in uc[3:])
        if ok:
            cell = gemmi.UnitCell(*uc)
            ok = np.isfinite(cell.volume) and cell.volume > 0
        if not ok:
            raise IndexingError(
                f"unit_cell={' '.join(str(x) for x in uc)} is not a possible unit cell: give "
                "six numbers a b c (A, > 0) alpha beta gamma (deg) that make a cell of "
                "positive volume.")
        if sg is None:
            sg = gemmi.SpaceGroup("P 1")
        if not cell.is_compatible_with_spacegroup(sg, 1e-3):
            raise IndexingError(
                f"unit_cell={' '.join(f'{x:g}' for x in uc)} does not fit space group "
                f"{sg.xhm()} (its {sg.crystal_system_str()} lattice constrains the lengths/"
                "angles). Give the cell in the group's conventional setting or drop "
                "space_group to index in P1 first.")
    return sg, cell


def _imagesets(experiments: ExperimentList, keep_crystal: bool = False) -> ExperimentList:
    """One experiment per imageset (its first): without crystal, re-indexing an indexed
    state with several lattices on one sweep starts again from the sweep."""
    first: dict = {}
    for e, n in zip(experiments, ExperimentList(experiments).imageset_numbers()):
        first.setdefault(n, e)
    return ExperimentList(e if keep_crystal else e.replace(crystal=None) for e in first.values())


def _prepare(experiments, strong):
    if strong is None or not len(strong):
        raise IndexingError("There are no strong spots to index: run findspots first.")
    if "xyzobs.px.value" not in strong:
        raise IndexingError("The reflection table has no xyzobs.px.value column; index needs "
                            "strong spots from findspots.")
    refl = ReflectionTable({k: strong[k] for k in strong.keys() if k not in (
        "miller_index", "xyzcal.mm", "xyzcal.px", "s1", "rlp", "entering")},
        strong.experiment_identifiers)
    n = len(refl)
    ids = refl["id"].astype(np.int64) if "id" in refl else np.zeros(n, np.int64)
    if "imageset_id" in refl:
        ids = refl["imageset_id"].astype(np.int64)
    if ids.min() < 0 or ids.max() >= len(experiments):
        raise IndexingError(f"The strong spots refer to imageset {ids.max()}, but there are "
                            f"{len(experiments)} imagesets. Use the spots found on these images.")
    refl["imageset_id"] = ids.astype(np.int32)
    refl["id"] = ids.astype(np.int32)
    if "panel" not in refl:
        refl["panel"] = np.zeros(n, np.uint64)
    if "flags" not in refl:
        refl["flags"] = np.full(n, Flags.strong, np.uint64)
    return refl


def _geometry_to_rlp(imagesets: ExperimentList, refl: ReflectionTable) -> None:
    ids = refl["id"].copy()
    refl["id"] = refl["imageset_id"]
    centroid_px_to_mm(imagesets, refl)
    map_to_reciprocal_space(imagesets, refl)
    refl["id"] = ids
    refl["d"] = 1.0 / np.maximum(np.linalg.norm(refl["rlp"], axis=1), 1e-12)


def _candidates(rlp, params, max_cell, target_cell, sg, result, log):
    method = params.method
    d_all = 1.0 / np.linalg.norm(rlp, axis=1)
    if method == "fft3d":
        d_grid = params.fft3d_d_min or grid_d_min(max_cell, params.n_points, d_all.min())
        result.grid_d_min, result.n_points = d_grid, params.n_points
        _log(log, f"Setting d_min: {d_grid:.2f}; FFT gridding: ({params.n_points})^3")
        vectors, _ = fft3d_peaks(rlp, d_grid, params.n_points, params.rmsd_cutoff,
                                 params.peak_volume_cutoff)
    elif method == "fft1d":
        from .fft1d import fft1d_vectors

        vectors = fft1d_vectors(rlp, max_cell, d_all.min(), params.characteristic_grid)
    elif method == "real_space_grid_search":
        from .real_space_grid_search import grid_search_vectors

        vectors = grid_search_vectors(rlp, target_cell, params.characteristic_grid,
                                      sg if sg is not None and sg.number != 1 else None)
    else:
        raise IndexingError(f"indexing.method={method} is not one of fft3d, fft1d, "
                            "real_space_grid_search.")
    lengths = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    vectors = vectors[(lengths >= params.min_cell) & (lengths <= max_cell)]
    # vector refinement and de-duplication on at most 5000 rlps (plenty, and fast)
    sub = rlp if len(rlp) <= 5000 else rlp[np.random.default_rng(0).choice(len(rlp), 5000,
                                                                            replace=False)]
    vectors = refine_vectors(vectors, sub) if len(vectors) else vectors
    vectors = unique_vectors(vectors, sub)[: params.max_vectors] if len(vectors) else vectors
    return vectors


#: A rotation wedge narrower than this (deg) seldom holds three lattice directions.
NARROW_WEDGE_DEG = 3.0


def _wedge_hint(imagesets) -> str:
    """A sentence on a wedge too narrow to index ("" when it is wide enough)."""
    scans = [e.scan for e in imagesets if e.scan is not None]
    n = sum(s.num_images for s in scans)
    deg = sum(s.num_images * abs(s.oscillation[1]) for s in scans)
    if not scans or deg >= NARROW_WEDGE_DEG:
        return ""
    return (f" The spots come from {n} image{'s' if n != 1 else ''} covering {deg:.2g} deg of "
            "rotation, too little of reciprocal space to find three lattice directions: import "
            "a wedge of a few degrees at least (more images), or give the known unit_cell= "
            "(and space_group=) with method=real_space_grid_search. Other possible causes:")


def _fail(why: str, params: IndexParams, max_cell: float, imagesets=()) -> IndexingError:
    return IndexingError(
        f"Indexing failed: {why}.{_wedge_hint(imagesets) or ' Likely causes:'} the geometry "
        "is wrong (beam centre, detector distance, wavelength, rotation axis or its sense: "
        "check them in the image viewer and try e.g. the opposite rotation axis), max_cell is too small or too large "
        f"(it was {max_cell:.1f} A: try max_cell= about 1.5 times the longest expected cell "
        "edge), or high-resolution spots are too poorly predicted (try "
        "fft3d.reciprocal_space_grid.d_min= a lower resolution, e.g. 4). Other methods: "
        "method=fft1d, or method=real_space_grid_search with unit_cell=.")


def _crystal_models(real, sg, target_cell, params):
    if sg is not None and sg.number != 1 or target_cell is not None:
        sg = sg or gemmi.SpaceGroup("P 1")
        conv = find_setting(real, sg, target_cell, params.relative_length_tolerance,
                            params.absolute_angle_tolerance)
        if conv is None:
            cell = Crystal.from_real_vectors(*real).unit_cell
            what = (f"unit_cell={' '.join(f'{x:g}' for x in target_cell.parameters)}"
                    if target_cell is not None else f"the lattice of {sg.xhm()}")
            raise IndexingError(
                f"The lattice found (reduced cell {' '.join(f'{x:.2f}' for x in cell.parameters)}"
                f") has no setting matching {what} within the tolerances "
                f"({params.relative_length_tolerance:g} relative on lengths, "
                f"{params.absolute_angle_tolerance:g} deg on angles). Check the known symmetry, "
                "index without it first (P1) and compare, or widen the tolerances "
                "(known_symmetry.relative_length_tolerance / absolute_angle_tolerance).")
        return Crystal.from_real_vectors(*conv, space_group=sg)
    return Crystal.from_real_vectors(*real)


def _d_min_from_spot_density(d: np.ndarray) -> float:
    """First macro-cycle resolution: the half of the spots at lowest resolution.

    Low-resolution spots are indexed reliably by a rough model; each later
    cycle adds higher-resolution spots once refinement has improved it.
    """
    return float(np.median(d))


def _schedule(d_spots, d_start_default, params):
    d_final = params.d_min_final or float(d_spots.min())
    d_start = params.d_min_start or max(d_start_default, d_final)
    n = max(params.n_macro_cycles, 1)
    step = params.d_min_step or ((d_start - d_final) / (n - 1) if n > 1 else 0.0)
    out = []
    for k in range(n):
        d = max(d_start - k * step, d_final)
        out.append(d)
        if d <= d_final:
            break
    out[-1] = d_final if params.d_min_final is None and len(out) == n else out[-1]
    return out


def _joint(value) -> bool | None:
    """joint_indexing as True, False or None (Auto)."""
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return None
    if isinstance(value, str):
        return value.lower() in ("true", "yes", "1")
    return bool(value)


def index(experiments: ExperimentList, strong: ReflectionTable,
          params: IndexParams | None = None, log=None):
    """Index the strong spots of rotation sweeps; see the module docstring.

    Several imagesets (sweeps) are indexed as dials.index does with ``joint_indexing``:
    True searches one lattice in the spots of all sweeps together (each sweep's spots
    mapped to reciprocal space with its own beam, detector, goniometer and scan, so
    the sweeps must be one crystal in one goniometer frame) and refines one crystal
    model shared by every sweep; False indexes each sweep on its own, one crystal model
    per sweep. Auto (where dials.index stops and asks for True or False) tries the
    joint indexing and keeps it when its one lattice indexes every sweep (at least
    JOINT_MIN_PERCENT, or JOINT_MIN_RATIO of the best sweep's percentage), else indexes
    each sweep on its own; the result says which and why.
    """
    params = params or IndexParams()
    _check_experiments(experiments)
    _check_params(params)
    imagesets = _imagesets(experiments)
    joint = _joint(params.joint_indexing)
    if len(imagesets) == 1:
        return _index_together(experiments, strong, params, log)
    if joint:
        return _index_jointly(experiments, strong, params, log)
    if joint is False:
        out = _index_separately(imagesets, strong, params, log)
        out[2].messages.extend(_one_crystal_note(out[0]))
        return out
    try:
        out = _index_jointly(experiments, strong, params, log)
    except JointIndexingError as err:
        _log(log, f"Joint indexing does not fit ({err.reason}): indexing each sweep alone")
        out = _index_separately(imagesets, strong, params, log)
        out[2].messages.append(
            f"joint_indexing=Auto: one lattice does not index every sweep ({err.reason}), "
            f"so each of the {len(imagesets)} sweeps was indexed on its own (one crystal "
            "model per sweep). joint_indexing=False skips the joint attempt.")
        return out
    out[2].messages.append(
        f"joint_indexing=Auto: one lattice indexes all {len(imagesets)} sweeps, so they were "
        "indexed jointly as one crystal (one crystal model shared by every sweep); "
        "joint_indexing=False indexes each sweep on its own.")
    return out


def _check_params(params: IndexParams) -> None:
    """Errors in the parameters themselves, before any sweep is indexed."""
    if params.method == "real_space_grid_search" and params.unit_cell in (None, "", "None"):
        raise IndexingError("indexing.method=real_space_grid_search searches orientations of "
                            "a known cell: give unit_cell=a,b,c,alpha,beta,gamma (and "
                            "space_group=), or use method=fft3d.")
    _known_symmetry(params)
    if params.index_assignment not in ("simple", "local"):
        raise IndexingError(f"index_assignment.method={params.index_assignment} is not simple "
                            "or local.")


class JointIndexingError(IndexingError):
    """Joint indexing found no lattice that fits every sweep; ``reason`` in a few words."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _imageset_ids(strong: ReflectionTable) -> np.ndarray:
    """The imageset of each strong spot (``imageset_id``, else ``id``)."""
    col = "imageset_id" if "imageset_id" in strong else "id"
    if col not in strong:
        return np.zeros(len(strong), np.int64)
    return np.asarray(strong[col], np.int64)


#: joint indexing is refused when a sweep indexes less than this fraction of the
#: best-indexed sweep's percentage (and under JOINT_MIN_PERCENT): one lattice does not fit all
JOINT_MIN_RATIO = 0.5
JOINT_MIN_PERCENT = 50.0


def _index_jointly(experiments, strong, params, log):
    """One lattice for the spots of every sweep, one crystal model shared by them."""
    advice = ("joint_indexing=True assumes the sweeps are one crystal in one goniometer "
              "frame (the same sample, measured with different start angles or goniometer "
              "settings). If they are different crystals, index them separately "
              "(joint_indexing=False); if they are one crystal, check the goniometer "
              "(axes, angles) of each sweep.")
    try:
        out = _index_together(experiments, strong, params, log)
    except IndexingError as err:
        raise JointIndexingError(f"Joint indexing of {len(_imagesets(experiments))} sweeps "
                                 f"failed: {err} {advice}",
                                 "the joint lattice search failed") from err
    result = out[2]
    pct = [r["% indexed"] for r in result.indexed_table]
    worst = int(np.argmin(pct))
    if pct[worst] < JOINT_MIN_PERCENT and pct[worst] < JOINT_MIN_RATIO * max(pct):
        best = int(np.argmax(pct))
        raise JointIndexingError(
            f"Joint indexing found a lattice that indexes {pct[best]:.1f}% of the spots of "
            f"sweep {best} but only {pct[worst]:.1f}% of those of sweep {worst}: one crystal "
            f"model does not fit both. {advice}",
            f"{pct[best]:.0f}% of sweep {best} indexed, {pct[worst]:.0f}% of sweep {worst}")
    return out


def _index_separately(imagesets, strong, params, log):
    """Each imageset indexed on its own; experiments and tables concatenated."""
    iset_of = _imageset_ids(strong)
    experiments, tables, results = ExperimentList(), [], []
    for i, e in enumerate(imagesets):
        sub = strong.select(iset_of == i)
        if "imageset_id" in sub:
            sub["imageset_id"] = np.zeros(len(sub), np.int32)
        sub["id"] = np.zeros(len(sub), np.int32)
        sub.experiment_identifiers = {0: e.identifier}
        _log(log, f"Indexing imageset {i} ({i + 1}/{len(imagesets)})")
        try:
            el, table, res = _index_together(ExperimentList([e]), sub, params, log)
        except IndexingError as err:
            raise IndexingError(
                f"Sweep {i} ({_name(e)}) could not be indexed on its own: {err} The "
                "sweeps are indexed separately; to index the "
                "others, select them with experiments= (e.g. experiments="
                f"{','.join(str(k) for k in range(len(imagesets)) if k != i)}), or index "
                "jointly (joint_indexing=True) if the sweeps are one crystal.") from err
        offset = len(experiments)
        ids = table["id"]
        table["id"] = np.where(ids >= 0, ids + offset, ids).astype(np.int32)
        table["imageset_id"] = np.full(len(table), i, np.int32)
        table.experiment_identifiers = {k + offset: x.identifier for k, x in enumerate(el)}
        experiments.extend(el)
        tables.append(table)
        results.append(res)
    result = _combine_results(results)
    table = ReflectionTable.concatenate(tables)
    table.experiment_identifiers = {k: e.identifier for k, e in enumerate(experiments)}
    return experiments, table, result


def _name(e) -> str:
    ref = e.imageset
    return (ref.template or (ref.paths[0] if ref.paths else "")) if ref is not None else ""


def _combine_results(results: list[IndexResult]) -> IndexResult:
    """One result for sweeps indexed separately: per-sweep tables concatenated."""
    out = IndexResult(method=results[0].method, max_cell=max(r.max_cell for r in results),
                      max_cell_estimated=results[0].max_cell_estimated)
    n_exp = n_indexed = n_spots = 0
    weights, rmsds = [], []
    for i, r in enumerate(results):
        for cyc in r.macro_cycles:
            out.macro_cycles.append({**cyc, "cycle": f"{cyc['cycle']} (sweep {i})"})
        for row in r.rmsds_by_experiment:
            out.rmsds_by_experiment.append({**row, "Exp id": row["Exp id"] + n_exp})
        for row in r.indexed_table:
            out.indexed_table.append({**row, "Imageset": i})
            n_indexed += row["# indexed"]
            n_spots += row["# indexed"] + row["# unindexed"]
        out.crystals.extend(r.crystals)
        out.refined_parameters.extend(r.refined_parameters)
        for k, v in r.timings.items():
            out.timings[k] = out.timings.get(k, 0.0) + v
        out.messages.append(
            f"Sweep {i}: max_cell {r.max_cell:.1f} A, {r.percent_indexed:.1f}% indexed, cell "
            + ", ".join(f"{x:.3f}" for x in r.crystals[0]["unit_cell"]))
        n_exp += max(len(r.rmsds_by_experiment), 1)
        weights.append(sum(row["# indexed"] for row in r.indexed_table))
        rmsds.append(r.rmsds)
    out.percent_indexed = 100.0 * n_indexed / max(n_spots, 1)
    w = np.asarray(weights, float)[:, None]
    out.rmsds = tuple(np.sqrt((w * np.asarray(rmsds, float) ** 2).sum(0) / max(w.sum(), 1)))
    return out


def same_crystal(a: Crystal, b: Crystal, tolerance: float = 0.1):
    """(True, angle deg) when ``b`` is the lattice of ``a`` in the same orientation (in the
    goniometer's datum frame, where A = UB is defined), in any basis; (False, nan) else.

    The basis of ``b`` written in that of ``a`` is then an integer matrix of determinant
    +-1 (within ``tolerance`` per element); the angle is the largest between the
    corresponding basis vectors.
    """
    real_a, real_b = a.real_space_vectors, b.real_space_vectors
    M = real_b @ np.linalg.inv(real_a)  # rows: b's vectors in a's basis
    Mi = np.rint(M)
    if np.abs(M - Mi).max() > tolerance or abs(round(np.linalg.det(Mi))) != 1:
        return False, float("nan")
    ideal = Mi @ real_a
    cos = np.sum(ideal * real_b, axis=1) / (np.linalg.norm(ideal, axis=1)
                                             * np.linalg.norm(real_b, axis=1))
    return True, float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max())


def _one_crystal_note(experiments: ExperimentList) -> list[str]:
    """joint_indexing=False: a note when every sweep's (first) crystal is the first one's."""
    firsts = [e.crystal for e in _imagesets(experiments, keep_crystal=True)]
    angles = []
    for c in firsts[1:]:
        same, angle = same_crystal(firsts[0], c)
        if not same:
            return []
        angles.append(angle)
    return [f"The {len(firsts)} sweeps were indexed separately (joint_indexing=False) and "
            "their crystals are one lattice in one orientation (largest difference "
            f"{max(angles):.2f} deg): they look like one crystal. index joint_indexing=True "
            "refines one crystal model across them."]


def _index_together(experiments: ExperimentList, strong: ReflectionTable,
                    params: IndexParams, log=None):
    """Index all imagesets with one lattice search (one imageset, or joint indexing)."""
    sg, target_cell = _known_symmetry(params)
    refl = _prepare(_imagesets(experiments), strong)
    if len(refl) < MIN_SPOTS:
        raise IndexingError(f"Only {len(refl)} strong spots: indexing needs at least "
                            f"{MIN_SPOTS} (in practice a hundred or more). Find more spots "
                            "(lower findspots thresholds, more images).")
    result = IndexResult(method=params.method)
    clock = _Clock(result.timings)
    imagesets = _imagesets(experiments)
    _geometry_to_rlp(imagesets, refl)
    clock("rlp")
    if params.max_cell:
        max_cell = float(params.max_cell)
        result.max_cell_estimated = False
    else:
        s0 = np.array([e.beam.s0 for e in imagesets])[refl["imageset_id"]]
        axis = np.array([e.goniometer.rotation_axis for e in imagesets])[refl["imageset_id"]]
        entering = entering_flags(refl["s1"], s0, axis)
        max_cell = params.max_cell_multiplier * nearest_neighbour_max_cell(
            refl["rlp"], np.rad2deg(refl["xyzobs.mm.value"][:, 2]), refl["imageset_id"],
            entering, params.step_size, params.max_height_fraction,
            params.nearest_neighbor_percentile)
        if not np.isfinite(max_cell):
            raise IndexingError("max_cell could not be estimated from so few separated spots: "
                                "give max_cell= (about 1.5 times the longest cell edge, A).")
        if target_cell is not None:
            max_cell = max(max_cell, 1.5 * max(target_cell.parameters[:3]))
    result.max_cell = max_cell
    clock("max_cell")
    _log(log, f"Found max_cell: {max_cell:.1f} Angstrom")

    n_iset = len(imagesets)
    crystals: list[Crystal] = []
    models = imagesets  # geometry per imageset, updated by refinement
    lattice = np.full(len(refl), -1, np.int64)
    hkl = np.zeros((len(refl), 3), np.int32)
    out_experiments = ExperimentList()
    refined = refl
    for i_lat in range(max(params.max_lattices, 1)):
        free = lattice < 0
        rlp = refl["rlp"][free]
        if np.count_nonzero(free) < MIN_SPOTS:
            break
        vectors = _candidates(rlp, params, max_cell, target_cell, sg, result, log)
        clock("search")
        if i_lat == 0:
            result.candidate_vectors = [
                {"#": k, "length": float(np.linalg.norm(v)), "vector": [float(x) for x in v]}
                for k, v in enumerate(vectors)]
        target_volume = None
        if target_cell is not None:
            target_volume = target_cell.volume / len((sg or gemmi.SpaceGroup("P 1"))
                                                     .operations().cen_ops)
        real, table = select_basis(vectors, rlp, params.hkl_tolerance, params.min_cell_volume,
                                   target_volume=target_volume)
        if i_lat == 0:
            result.candidate_bases = table
        if real is None and target_volume and i_lat == 0 and len(vectors) >= 3:
            raise IndexingError(
                "The lattice found has no setting matching unit_cell="
                f"{' '.join(f'{x:g}' for x in target_cell.parameters)}: no three of its "
                f"vectors make a cell of that volume ({target_volume:.0f} A^3 per lattice "
                "point). Check the known cell, or index without it (P1) and compare.")
        if real is None or table[0]["fraction_indexed"] < 0.1 or table[0]["n_indexed"] < MIN_SPOTS:
            if i_lat == 0:
                why = ("no three non-coplanar lattice vectors were found" if real is None
                       else f"the best basis indexes only {table[0]['n_indexed']} of "
                            f"{len(rlp)} spots")
                raise _fail(why, params, max_cell, imagesets)
            _log(log, f"No further lattice found among {len(rlp)} unindexed spots.")
            break
        crystal = _crystal_models(real, sg, target_cell, params)
        clock("basis")
        _log(log, "Candidate lattice {}: {}".format(
            i_lat + 1, " ".join(f"{x:.2f}" for x in crystal.unit_cell.parameters)))
        crystals.append(crystal)
        experiments_all = ExperimentList()
        for k, c in enumerate(crystals):
            for e in models:
                ident = e.identifier if k == 0 else str(uuid.uuid4())
                experiments_all.append(e.replace(crystal=c, identifier=ident))
        # macro-cycles of assignment and refinement over all lattices found so far
        d_start = max(result.grid_d_min, _d_min_from_spot_density(refl["d"]))
        for cyc, d_min in enumerate(_schedule(refl["d"], d_start, params)):
            A_list = [experiments_all[k * n_iset].crystal.A for k in range(len(crystals))]
            hkl, lattice = _assign(refl["rlp"], A_list, params)
            lattice[refl["d"] < d_min] = -1
            clock("assignment")
            work = _indexed_table(refl, hkl, lattice, n_iset)
            if np.count_nonzero(lattice >= 0) < MIN_SPOTS:
                raise _fail(f"only {np.count_nonzero(lattice >= 0)} spots index at "
                            f"d_min {d_min:.2f}", params, max_cell, imagesets)
            try:
                experiments_all, refined, rres = refine(experiments_all, work, params.refinement)
            except GonioError as err:
                raise _fail(f"refinement failed ({err})", params, max_cell, imagesets) from err
            clock("refinement")
            models = ExperimentList(experiments_all[:n_iset])
            _geometry_to_rlp(ExperimentList(e.replace(crystal=None) for e in models), refl)
            clock("rlp")
            result.macro_cycles.append({
                "cycle": cyc + 1, "lattices": len(crystals), "d_min": d_min,
                "n_indexed": int(np.count_nonzero(lattice >= 0)), "steps": rres.steps,
                "reason": rres.reason, "rmsds_by_experiment": rres.rmsds_by_experiment})
            _log(log, f"macro-cycle {cyc + 1}: d_min {d_min:.2f}, "
                 f"{np.count_nonzero(lattice >= 0)} indexed, RMSDs (px, px, images) "
                 + ", ".join(f"{x:.3f}" for x in rres.rmsds))
        crystals = [experiments_all[k * n_iset].crystal for k in range(len(crystals))]
        out_experiments = experiments_all
        result.rmsds_by_experiment = rres.rmsds_by_experiment
        result.rmsds = rres.rmsds
        result.refined_parameters = rres.parameter_names
        result.crystals = [_crystal_summary(c, e) for c, e in zip(crystals, rres.cell_esds)]
    # refinement may have sheared a P1 basis away from the reduced one: report the
    # Niggli-reduced cell (as dials.index does), the same lattice
    reduced = [niggli_crystal(c) for c in crystals]
    cycle_hkl, cycle_lattice = hkl.copy(), lattice
    for k, (old, new) in enumerate(zip(crystals, reduced)):
        M = np.rint(new.real_space_vectors @ np.linalg.inv(old.real_space_vectors))
        sel = cycle_lattice == k
        cycle_hkl[sel] = np.rint(cycle_hkl[sel] @ M.T).astype(cycle_hkl.dtype)  # h' = M h
        if crystals and not np.allclose(M, np.eye(3)) and k < len(result.crystals):
            esd = _permuted_esds(result.crystals[k]["unit_cell_esd"], M)
            result.crystals[k] = _crystal_summary(new, esd)
    crystals = reduced
    out_experiments = ExperimentList(
        e.replace(crystal=crystals[k // n_iset]) for k, e in enumerate(out_experiments))
    # final assignment and predictions with the refined models
    hkl, lattice = _assign(refl["rlp"], [c.A for c in crystals], params)
    clock("assignment")
    final = update_predictions(out_experiments, _indexed_table(refl, hkl, lattice, n_iset))
    clock("prediction")
    final.set_flags(lattice >= 0, Flags.indexed)
    same = (lattice == cycle_lattice) & np.all(hkl == cycle_hkl, axis=1)
    keep = same & (lattice >= 0)
    final.unset_flags(np.ones(len(final), bool), Flags.used_in_refinement | Flags.centroid_outlier)
    for flag in (Flags.used_in_refinement, Flags.centroid_outlier):
        final.set_flags(refined.get_flags(flag) & keep, flag)
    final.experiment_identifiers = {i: e.identifier for i, e in enumerate(out_experiments)}
    _summarise(result, refl, lattice, n_iset, crystals)
    return out_experiments, final, result


def niggli_crystal(crystal: Crystal) -> Crystal:
    """A P1 crystal in its Niggli-reduced basis (same lattice, same orientation); crystals
    with a known space group keep their setting."""
    if crystal.space_group.number != 1:
        return crystal
    reduced = niggli_reduce(crystal.real_space_vectors)
    return crystal.replace(A=np.linalg.inv(reduced), A_at_scan_points=None)


def _permuted_esds(esd, M) -> list[float]:
    """Cell s.u. in a new basis a' = M a: carried over when M only permutes (and flips) the
    axes, unknown (NaN) otherwise."""
    A = np.abs(M)
    if not (np.allclose(A.sum(axis=0), 1) and np.allclose(A.sum(axis=1), 1)):
        return [float("nan")] * 6
    perm = np.argmax(A, axis=1)  # a'_i = +-a_perm[i]
    angle_of = {frozenset((1, 2)): 3, frozenset((0, 2)): 4, frozenset((0, 1)): 5}
    lengths = [esd[perm[i]] for i in range(3)]
    angles = [esd[angle_of[frozenset((perm[j], perm[k]))]] for j, k in ((1, 2), (0, 2), (0, 1))]
    return [float(x) for x in lengths + angles]


def _assign(rlp, A_list, params):
    if params.index_assignment == "local":
        return assign_local(rlp, A_list, params.hkl_tolerance)
    return assign_simple(rlp, A_list, params.hkl_tolerance)


def _indexed_table(refl, hkl, lattice, n_iset) -> ReflectionTable:
    """``refl`` with the assigned Miller indices and experiment ids (new columns; the
    others, the shoeboxes among them, shared with ``refl``)."""
    t = ReflectionTable(dict(refl.items()), refl.experiment_identifiers)
    t["miller_index"] = hkl
    ids = np.where(lattice >= 0, lattice * n_iset + refl["imageset_id"], -1)
    t["id"] = ids.astype(np.int32)
    t["miller_index"][lattice < 0] = 0
    return t


def _crystal_summary(crystal: Crystal, esd) -> dict:
    return {"unit_cell": list(crystal.unit_cell.parameters), "unit_cell_esd": list(esd),
            "space_group": crystal.space_group.xhm(), "U": crystal.U.tolist(),
            "B": crystal.B.tolist(), "A": crystal.A.tolist(),
            "volume": float(crystal.unit_cell.volume)}


def _summarise(result, refl, lattice, n_iset, crystals):
    rows = []
    for i in range(n_iset):
        sel = refl["imageset_id"] == i
        n_idx = int(np.count_nonzero(lattice[sel] >= 0))
        n = int(np.count_nonzero(sel))
        rows.append({"Imageset": i, "# indexed": n_idx, "# unindexed": n - n_idx,
                     "% indexed": 100.0 * n_idx / max(n, 1)})
    result.indexed_table = rows
    result.percent_indexed = 100.0 * np.count_nonzero(lattice >= 0) / max(len(refl), 1)
    for k in range(1, len(crystals)):
        R = crystals[k].U @ crystals[0].U.T
        angle = float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
        w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
        axis = w / np.linalg.norm(w) if np.linalg.norm(w) > 1e-12 else np.array([0, 0, 1.0])
        result.lattice_rotations.append({"from": 0, "to": k, "angle_deg": angle,
                                         "axis": axis.tolist()})
