"""What every exported file needs from the experiments: space group, cell, wavelengths."""

from __future__ import annotations

from dataclasses import dataclass, field

import gemmi
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable


class ExperimentsError(GonioError):
    pass


def common_space_group(experiments: ExperimentList) -> gemmi.SpaceGroup:
    """The space group shared by all crystals (an error when they differ)."""
    groups = {e.crystal.space_group.hall for e in experiments if e.crystal is not None}
    if not groups:
        raise ExperimentsError("The experiments have no crystal model: index and integrate first.")
    if len(groups) > 1:
        names = sorted({e.crystal.space_group.xhm() for e in experiments if e.crystal})
        raise ExperimentsError(
            f"The crystals are in different space groups ({', '.join(names)}); one file needs "
            "one space group. Run symmetry (or reindex) so that all experiments agree.")
    return next(e.crystal.space_group for e in experiments if e.crystal is not None)


def best_unit_cell(experiments: ExperimentList) -> gemmi.UnitCell:
    """The cell averaged over the experiments' crystals (DIALS determine_best_unit_cell).

    A ``recalculated_unit_cell`` (dials.two_theta_refine) takes precedence.
    """
    params = []
    for e in experiments:
        if e.crystal is None:
            continue
        rc = e.crystal.extra.get("recalculated_unit_cell")
        params.append(list(rc) if rc else list(e.crystal.unit_cell.parameters))
    if not params:
        raise ExperimentsError("The experiments have no crystal model: index and integrate first.")
    return gemmi.UnitCell(*np.mean(np.array(params, dtype=float), axis=0))


@dataclass
class WavelengthGroup:
    """Experiments whose wavelengths agree within the tolerance (one MTZ dataset)."""

    experiments: list[int] = field(default_factory=list)
    wavelengths: list[float] = field(default_factory=list)
    weighted_mean: float = 0.0


def wavelength_groups(experiments: ExperimentList, table: ReflectionTable | None = None,
                      tolerance: float = 1e-4) -> list[WavelengthGroup]:
    """Group experiments by wavelength (DIALS match_wavelengths; tolerance in A).

    The group's wavelength is the mean weighted by each experiment's number of
    integrated reflections (the plain mean without a table).
    """
    groups: list[WavelengthGroup] = []
    for i, e in enumerate(experiments):
        w = e.beam.wavelength
        for g in groups:
            if abs(g.wavelengths[0] - w) <= tolerance:
                break
        else:
            g = WavelengthGroup()
            groups.append(g)
        g.experiments.append(i)
        g.wavelengths.append(w)
    counts = np.ones(len(experiments))
    if table is not None and "id" in table:
        integ = table.get_flags(Flags.integrated, all_bits=False) if "flags" in table \
            else np.ones(len(table), bool)
        ids = table["id"][integ]
        counts = np.bincount(ids[ids >= 0], minlength=len(experiments))[:len(experiments)].astype(float)
    for g in groups:
        n = counts[g.experiments]
        g.weighted_mean = float(np.average(g.wavelengths, weights=n) if n.sum() > 0
                                else np.mean(g.wavelengths))
    return groups
