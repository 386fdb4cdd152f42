"""Symmetry determination: Laue group, space group from absences, reindexing (dials.symmetry).

``determine_symmetry(experiments, reflections, params)`` takes integrated (or scaled)
reflections of one crystal form (one or several experiments), scores every Laue group
the lattice allows (:mod:`.laue_group`), picks the space group from screw-axis absences
(:mod:`.absences`) and returns the experiments and reflections reindexed into the best
setting with that space group, plus a :class:`SymmetryResult` with DIALS's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np

from gonio.core.symmetry.data import SymmetryInputError
from gonio.core.symmetry.params import SymmetryParams

__all__ = ["SymmetryInputError", "SymmetryParams", "SymmetryResult", "determine_symmetry"]

MIN_REFLECTIONS = 20


@dataclass
class SymmetryResult:
    laue: object  # LaueGroupResult
    absences: object | None  # AbsencesResult
    resolution_lines: list[str]
    d_min: float | None
    input_space_group: gemmi.SpaceGroup
    median_cell: gemmi.UnitCell
    P: np.ndarray  # input basis -> best setting (h' = h P)
    cb_op: str
    space_group: gemmi.SpaceGroup
    n_observations: int
    intensity_column: str

    @property
    def laue_group(self) -> gemmi.SpaceGroup:
        return self.laue.best.subgroup.patterson_group


def _check_params(p: SymmetryParams) -> None:
    if p.lattice_symmetry_max_delta is None or not (0 <= p.lattice_symmetry_max_delta < 90):
        raise SymmetryInputError(
            f"lattice_symmetry_max_delta={p.lattice_symmetry_max_delta} deg is not possible: it "
            "is the largest Le Page angle of a lattice twofold, between 0 and 90 deg (DIALS's "
            "default 2.0; a poorly refined cell may need 3-5).")
    if p.d_min is not None and p.d_min != "Auto" and not p.d_min > 0:
        raise SymmetryInputError(f"d_min={p.d_min} A is not a resolution: give a positive "
                                 "value in A, Auto to estimate it or None for all data.")


def determine_symmetry(experiments, reflections, params: SymmetryParams | None = None):
    """Laue group, space group and the reindexed (experiments, reflections, result)."""
    from gonio.core.lattice.change_of_basis import (
        ChangeOfBasisError,
        change_of_basis_string,
        transform_miller_indices,
    )
    from gonio.core.lattice.reindex import reindex
    from gonio.core.symmetry.absences import check_absences
    from gonio.core.symmetry.data import (
        check_cells,
        median_cell,
        observations,
        remove_centring_absences,
    )
    from gonio.core.symmetry.laue_group import score_laue_groups
    from gonio.core.symmetry.prepare import normalised_unique, resolution_limit
    from gonio.core.symmetry.subgroups import lattice_symmetry

    p = params or SymmetryParams()
    _check_params(p)
    if not any(e.crystal is not None for e in experiments):
        raise SymmetryInputError("There is no crystal model: index and integrate first.")
    rng = np.random.default_rng(p.seed)
    obs = observations(experiments, reflections, p.partiality_threshold)
    cell = median_cell(experiments)
    check_cells(experiments, cell, p.relative_length_tolerance, p.absolute_angle_tolerance)
    sg_in = next(e.crystal.space_group for e in experiments if e.crystal is not None)
    obs = remove_centring_absences(obs, sg_in)
    if len(obs) < MIN_REFLECTIONS:
        raise SymmetryInputError(
            f"Only {len(obs)} usable integrated reflections (integrated, variance > 0, "
            f"partiality >= {p.partiality_threshold}): too few to compare symmetry-related "
            f"intensities (at least {MIN_REFLECTIONS} needed). Integrate more of the sweep, "
            "or lower partiality_threshold.")

    d_min, res_lines = resolution_limit(obs, p, sg_in, rng)
    lat = lattice_symmetry(cell, sg_in.centring_type(), p.lattice_symmetry_max_delta,
                           p.best_monoclinic_beta)
    try:
        h_min = transform_miller_indices(obs.miller_index, lat.P_min).astype(np.int64)
    except ChangeOfBasisError as exc:
        raise SymmetryInputError(f"The Miller indices do not fit the {sg_in.xhm()} lattice of "
                                 f"the crystal model: {exc}") from None
    hu, e2u, seu, du = normalised_unique(obs, h_min, lat.lattice_rotations, d_min,
                                         lat.minimum_cell, p.normalisation)
    if len(hu) < MIN_REFLECTIONS:
        raise SymmetryInputError(
            f"Only {len(hu)} unique reflections are left for the Laue group analysis"
            + (f" at d_min={d_min:.2f} A" if d_min else "") + f" (at least {MIN_REFLECTIONS} "
            "needed). Use a lower d_min (higher resolution) or more data.")
    laue = score_laue_groups(lat, hu, e2u, seu, 1.0 / du ** 2, rng)

    best = laue.best.subgroup
    P = best.P
    h_best = np.rint(obs.miller_index @ P).astype(np.int64)
    space_group = best.space_group
    absences = None
    if p.check_absences:
        absences = check_absences(h_best, obs.intensity, obs.sigma, best.patterson_group,
                                  best.space_group, p.significance_level)
        space_group = absences.best
    new_expts, new_refl = reindex(experiments, reflections, P, space_group)
    return new_expts, new_refl, SymmetryResult(
        laue=laue, absences=absences, resolution_lines=res_lines, d_min=d_min,
        input_space_group=sg_in, median_cell=cell, P=P, cb_op=change_of_basis_string(P),
        space_group=space_group, n_observations=len(obs), intensity_column=obs.column)
