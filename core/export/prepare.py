"""The reflections and models every export format starts from.

:func:`prepare` checks the experiments (one space group), computes ``d``
from the best cell, applies the DIALS export filter
(:mod:`gonio.core.export.filtering`), and adds the ``batch`` (image number +
batch offset, :mod:`gonio.core.export.batches`) and ``ROT`` (phi at the
calculated centroid, deg) columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np

from gonio.core.export.batches import batch_of_reflections, batch_offsets, image_ranges
from gonio.core.export.crystal_info import (
    ExperimentsError,
    WavelengthGroup,
    best_unit_cell,
    common_space_group,
    wavelength_groups,
)
from gonio.core.export.filtering import (
    KIND_COLUMN,
    default_intensity_choice,
    filter_for_export,
)
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable


@dataclass
class Prepared:
    experiments: ExperimentList
    table: ReflectionTable  # filtered; columns d, batch, ROT, fractioncalc, expt (index)
    space_group: gemmi.SpaceGroup
    cell: gemmi.UnitCell
    wavelengths: list[WavelengthGroup]
    offsets: list[int]  # batch offset of each experiment
    image_ranges: list[tuple[int, int]]
    intensity_choice: list[str]

    @property
    def scaled(self) -> bool:
        return "scale" in self.intensity_choice

    def main_intensity(self) -> tuple[np.ndarray, np.ndarray]:
        """(I, sigma) of the preferred kind: scaled, else profile-fitted, else summed."""
        for prefix in ("intensity.scale", "intensity.prf", "intensity.sum"):
            if prefix + ".value" in self.table:
                return (self.table[prefix + ".value"],
                        np.sqrt(self.table[prefix + ".variance"]))
        raise ExperimentsError("The reflections have no intensities: integrate first.")


def experiment_index(table: ReflectionTable, experiments: ExperimentList) -> np.ndarray:
    """Index into ``experiments`` of each row, via the identifiers when the table has them."""
    ids = table["id"].astype(np.int64)
    ident = table.experiment_identifiers
    known = {e.identifier: i for i, e in enumerate(experiments)}
    if ident and all(v in known for v in ident.values()):
        lut = np.full(max(ident) + 1, -1, dtype=np.int64)
        for k, v in ident.items():
            lut[k] = known[v]
        out = np.where((ids >= 0) & (ids < len(lut)), lut[np.clip(ids, 0, len(lut) - 1)], -1)
    else:
        out = np.where(ids < len(experiments), ids, -1)
    return out


def prepare(experiments: ExperimentList, table: ReflectionTable,
            intensity_choice: list[str] | None = None, partiality_threshold: float = 0.99,
            combine_partials: bool = True, min_isigi: float | None = None,
            d_min: float | None = None, d_max: float | None = None,
            filter_ice_rings: bool = False, best_cell: tuple | None = None,
            wavelength_tolerance: float = 1e-4) -> Prepared:
    """Filtered, corrected reflections with batches, ready for any export format."""
    sg = common_space_group(experiments)
    cell = gemmi.UnitCell(*best_cell) if best_cell else best_unit_cell(experiments)
    choice = list(intensity_choice) if intensity_choice else default_intensity_choice(table)
    if not choice:
        raise ExperimentsError("The reflections have no intensities (no intensity.sum, "
                               "intensity.prf or intensity.scale columns): integrate first.")
    t = table.copy()
    t["expt"] = experiment_index(t, experiments)
    t = t.select(t["expt"] >= 0)
    t["d"] = cell.calculate_d_array(t["miller_index"])
    t = filter_for_export(t, choice, partiality_threshold=partiality_threshold,
                          combine_partials=combine_partials, min_isigi=min_isigi,
                          d_min=d_min, d_max=d_max, filter_ice_rings=filter_ice_rings)
    offsets = batch_offsets(experiments)
    expt = t["expt"]
    xyz = [t[c][:, 2] for c in ("xyzobs.px.value", "xyzcal.px") if c in t]
    if not xyz:
        raise ExperimentsError("The reflections have no positions (xyzobs.px.value or "
                               "xyzcal.px), so they have no image numbers: integrate first.")
    z_obs, z_cal = xyz[0], xyz[-1]
    batch = np.zeros(len(t), dtype=np.int64)
    rot = np.array(z_cal, dtype=float)
    for i, e in enumerate(experiments):
        sel = expt == i
        if not sel.any():
            continue
        batch[sel] = batch_of_reflections(z_obs[sel], offsets[i])
        if e.scan is not None and e.scan.oscillation[1] != 0:
            rot[sel] = e.scan.angle_from_frame(z_cal[sel])
    t["batch"] = batch
    t["ROT"] = rot
    kept = [c for c in choice if f"{KIND_COLUMN[c]}.value" in t]  # profile may have been dropped
    return Prepared(experiments, t, sg, cell,
                    wavelength_groups(experiments, table, wavelength_tolerance),
                    offsets, image_ranges(experiments), kept)
