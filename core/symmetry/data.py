"""The intensities symmetry analysis works on, taken from integrated or scaled tables.

As dials.symmetry (``filtered_arrays_from_experiments_reflections``): profile-fitted
intensities where the table has them (``intensity.prf.*`` with the ``integrated_prf``
flag), else summation (``integrated_sum``); never the scaled column, so the
analysis is the same before and after scaling. Rows flagged bad for scaling
(user-excluded, outliers, excluded), with partiality below ``partiality_threshold``
or with I/sigma below -5 are left out, and the Lorentz-polarisation and detector-efficiency corrections
(``lp``, ``qe`` or ``dqe``) are applied: ``I = I_raw lp / qe``. Summation intensities
measure only the recorded part of a reflection and are divided by its ``partiality`` too
(DIALS's ``SumIntensityReducer``); profile fitting already estimates the whole reflection.
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable

MIN_I_OVER_SIGMA = -5.0  # DIALS's min_isigi for symmetry analysis


class SymmetryInputError(GonioError):
    """The data cannot be analysed for symmetry as given."""


@dataclass
class Observations:
    """Unmerged observations in the input indexing: ``miller_index`` (N, 3), ``intensity``,
    ``sigma`` (same units), ``dataset`` (experiment number), ``d`` (A)."""

    miller_index: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    dataset: np.ndarray
    d: np.ndarray
    column: str  # "prf" or "sum"

    def select(self, sel) -> Observations:
        return Observations(self.miller_index[sel], self.intensity[sel], self.sigma[sel],
                            self.dataset[sel], self.d[sel], self.column)

    def __len__(self) -> int:
        return len(self.intensity)


def median_cell(experiments: ExperimentList) -> gemmi.UnitCell:
    """Median of each cell parameter over the crystals (as DIALS's median_unit_cell)."""
    params = np.array([e.crystal.unit_cell.parameters for e in experiments
                       if e.crystal is not None])
    return gemmi.UnitCell(*np.median(params, axis=0))


def check_cells(experiments: ExperimentList, median: gemmi.UnitCell, rel_length: float,
                abs_angle: float) -> None:
    for i, e in enumerate(experiments):
        if e.crystal is None:
            continue
        c = e.crystal.unit_cell
        if not c.is_similar(median, rel_length, abs_angle):
            raise SymmetryInputError(
                f"Experiment {i} has the cell {' '.join(f'{x:.3f}' for x in c.parameters)}, "
                f"unlike the median cell {' '.join(f'{x:.3f}' for x in median.parameters)} "
                f"(relative_length_tolerance={rel_length}, absolute_angle_tolerance="
                f"{abs_angle}): symmetry analyses one crystal form at a time. Leave that "
                "experiment out, or raise the tolerances if the cells really are one form.")


def _intensity_choice(table: ReflectionTable) -> str:
    if "intensity.prf.value" in table and table.get_flags(Flags.integrated_prf).any():
        return "prf"
    if "intensity.sum.value" in table and table.get_flags(Flags.integrated_sum).any():
        return "sum"
    raise SymmetryInputError(
        "The reflections carry no integrated intensities (no intensity.prf or intensity.sum "
        "values flagged as integrated): run integrate first.")


def observations(experiments: ExperimentList, table: ReflectionTable,
                 partiality_threshold: float = 0.4) -> Observations:
    """The corrected intensities of the usable integrated reflections."""
    column = _intensity_choice(table)
    flag = Flags.integrated_prf if column == "prf" else Flags.integrated_sum
    hkl = np.asarray(table["miller_index"], dtype=np.int64)
    ids = np.asarray(table["id"], dtype=np.int64) if "id" in table else np.zeros(len(table), int)
    I = np.asarray(table[f"intensity.{column}.value"], dtype=float)
    var = np.asarray(table[f"intensity.{column}.variance"], dtype=float)
    sel = (table.get_flags(flag) & ~table.get_flags(Flags.bad_for_scaling, all_bits=False)
           & (ids >= 0) & (ids < len(experiments)) & np.any(hkl != 0, axis=1)
           & (var > 0) & np.isfinite(I))
    sel[sel] &= I[sel] / np.sqrt(var[sel]) >= MIN_I_OVER_SIGMA
    conv = np.asarray(table["lp"], dtype=float) if "lp" in table else np.ones(len(table))
    if "partiality" in table:
        part = np.asarray(table["partiality"], dtype=float)
        sel &= (part >= partiality_threshold) & (part > 0)
        if column == "sum":
            conv = conv / np.where(part > 0, part, 1.0)
    qe = table.get("qe", table.get("dqe"))
    if qe is not None:
        qe = np.asarray(qe, dtype=float)
        sel &= qe > 0
        conv = conv / np.where(qe > 0, qe, 1.0)
    hkl, ids, I, var, conv = hkl[sel], ids[sel], I[sel], var[sel], conv[sel]
    if "d" in table:
        d = np.asarray(table["d"], dtype=float)[sel]
    else:
        d = np.zeros(len(hkl))
        for i, e in enumerate(experiments):
            m = ids == i
            if m.any() and e.crystal is not None:
                s = hkl[m] @ e.crystal.B.T
                d[m] = 1.0 / np.sqrt(np.einsum("ij,ij->i", s, s))
    return Observations(hkl, I * conv, np.sqrt(var) * conv, ids, d, column)


def remove_centring_absences(obs: Observations, space_group: gemmi.SpaceGroup) -> Observations:
    """Leave out reflections forbidden by the lattice centring of ``space_group``
    (DIALS: ``sys_absent_flags(integral_only=True)``)."""
    cen = np.array(space_group.operations().cen_ops, dtype=float) / gemmi.Op.DEN
    if len(cen) <= 1:
        return obs
    phase = (obs.miller_index.astype(float) @ cen.T) % 1.0
    absent = np.any((phase > 1e-6) & (phase < 1 - 1e-6), axis=1)
    return obs.select(~absent)
