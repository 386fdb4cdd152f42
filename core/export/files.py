"""The files of one export: format -> [(file name, bytes)] (dials.export's names)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from gonio.core.export.crystal_info import ExperimentsError
from gonio.core.export.filtering import is_scaled
from gonio.core.export.params import ExportParams
from gonio.core.export.prepare import Prepared, prepare
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable


@dataclass
class ExportResult:
    files: list[tuple[str, bytes]] = field(default_factory=list)
    n_reflections: int = 0
    intensity: str = ""  # which intensities were written
    batches: list[tuple[int, int]] = field(default_factory=list)  # per experiment (mtz)


def default_name(p: ExportParams, scaled: bool) -> str:
    if p.format == "mtz":
        return p.mtz_hklout or ("scaled.mtz" if scaled else "integrated.mtz")
    if p.format == "mmcif":
        return p.mmcif_hklout or ("scaled.cif" if scaled else "integrated.cif")
    return {"xds_ascii": p.xds_ascii_hklout, "shelx": p.shelx_hklout,
            "json": p.json_filename}[p.format]


def split_name(name: str, i: int) -> str:
    root, ext = os.path.splitext(name)
    return f"{root}_{i}{ext}"


def _prepare(experiments, table, p: ExportParams) -> Prepared:
    return prepare(experiments, table, list(p.intensity) or None,
                   partiality_threshold=p.partiality_threshold,
                   combine_partials=p.combine_partials, min_isigi=p.min_isigi, d_min=p.d_min,
                   filter_ice_rings=p.filter_ice_rings, best_cell=p.best_unit_cell,
                   wavelength_tolerance=p.wavelength_tolerance)


def _per_experiment(prep: Prepared, split: bool):
    """[(index or None, row selection or None)]: one part, or one per experiment with data."""
    if not split:
        return [(None, None)]
    return [(i, prep.table["expt"] == i) for i in range(len(prep.experiments))
            if (prep.table["expt"] == i).any()]


def export_files(experiments: ExperimentList, table: ReflectionTable,
                 p: ExportParams) -> ExportResult:
    """Build the file contents for ``p.format`` (nothing is written here)."""
    from gonio.core.export import mmcif, mtz, rlp_json, shelx, xds_ascii
    from gonio.core.export.crystal_info import wavelength_groups

    name = default_name(p, is_scaled(table) and "scale" in (p.intensity or ["scale"]))
    out = ExportResult()
    if p.format == "json":
        if "xyzobs.px.value" not in table:
            raise ExperimentsError("The reflections have no observed centroids "
                                   "(xyzobs.px.value): run findspots first.")
        text = rlp_json.rlp_json(experiments, table, p.json_compact, p.json_n_digits)
        out.files.append((name, text.encode()))
        out.n_reflections = int((table["id"] >= 0).sum())
        return out
    prep = _prepare(experiments, table, p)
    out.n_reflections = len(prep.table)
    out.intensity = "+".join(prep.intensity_choice)
    I, sigI = prep.main_intensity()
    if p.format == "xds_ascii":
        parts = _per_experiment(prep, len(experiments) > 1 or p.split_experiments)
    else:
        parts = _per_experiment(prep, p.split_experiments)
    for i, rows in parts:
        fname = name if i is None else split_name(name, i)
        if p.format == "mtz":
            part = prep if rows is None else _subset(prep, i, rows)
            m = mtz.unmerged_mtz(part, p.crystal_name, p.project_name, p.force_static_model)
            out.files.append((fname, bytes(m.write_to_bytes())))
        elif p.format == "mmcif":
            out.files.append((fname, mmcif.unmerged_mmcif(prep, rows).encode()))
        elif p.format == "xds_ascii":
            e = prep.experiments[i if i is not None else 0]
            sel = rows if rows is not None else np.ones(len(prep.table), bool)
            text = xds_ascii.xds_ascii_text(e, prep.table.select(sel), I[sel], sigI[sel])
            out.files.append((fname, text.encode()))
        elif p.format == "shelx":
            sel = rows if rows is not None else np.ones(len(prep.table), bool)
            scale = shelx.shelx_scale(I[sel], sigI[sel], p.shelx_scale_range) \
                if p.shelx_scale else 1.0
            out.files.append((fname, shelx.hklf4_text(prep.table["miller_index"][sel], I[sel],
                                                      sigI[sel], scale).encode()))
            expts = ExperimentList([prep.experiments[i]]) if i is not None else prep.experiments
            groups = wavelength_groups(expts, None, p.wavelength_tolerance)
            if len(groups) > 1:
                raise ExperimentsError(
                    "SHELX takes one wavelength, but the experiments have "
                    f"{', '.join(f'{g.weighted_mean:.5f}' for g in groups)} A: export them "
                    "separately (split_experiments=True) or with format=mtz.")
            ins = shelx.ins_text(prep.space_group, prep.cell, groups[0].weighted_mean,
                                 _cell_esd(expts), p.shelx_composition)
            ins_name = p.shelx_ins if i is None else split_name(p.shelx_ins, i)
            out.files.append((ins_name, ins.encode()))
    out.batches = [(r[0] + o, r[1] + o) for r, o in zip(prep.image_ranges, prep.offsets)]
    return out


def _cell_esd(experiments: ExperimentList):
    if len(experiments) != 1:
        return None
    extra = experiments[0].crystal.extra
    return extra.get("recalculated_cell_parameter_sd") or extra.get("cell_parameter_sd")


def _subset(prep: Prepared, i: int, rows) -> Prepared:
    from dataclasses import replace

    from gonio.core.export.crystal_info import WavelengthGroup

    g = next(g for g in prep.wavelengths if i in g.experiments)
    return replace(prep, table=prep.table.select(rows),
                   wavelengths=[WavelengthGroup([i], [g.weighted_mean], g.weighted_mean)])
