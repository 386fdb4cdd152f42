"""The ``import`` command: images, DIALS files, XDS files, or new geometry for the current models."""

from __future__ import annotations

import glob
from pathlib import Path

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome


class ImportInputError(GonioError):
    pass


_GEOMETRY = {
    "geometry.detector.distance": "distance",
    "geometry.detector.fast_slow_beam_centre": "fast_slow_beam_centre",
    "geometry.detector.mosflm_beam_centre": "mosflm_beam_centre",
    "geometry.beam.wavelength": "wavelength",
    "geometry.goniometer.axis": "goniometer_axis",
    "geometry.scan.oscillation": "oscillation",
    "geometry.detector.panel.trusted_range": "trusted_range",
}


def _overrides(values: dict):
    kw = {field: values[name] for name, field in _GEOMETRY.items() if values.get(name) is not None}
    if not kw:
        return None, kw
    from gonio.core.importer import ImportOverrides

    return ImportOverrides(**kw), kw


def _expand(words: list[str], cwd: str) -> list[str]:
    """Absolute paths; shell-style globs expanded here (the REPL has no shell)."""
    import os

    out = []
    for w in words:
        w = os.path.expanduser(os.path.expandvars(w))
        p = w if Path(w).is_absolute() else str(Path(cwd) / w)
        if any(ch in w for ch in "*?[") and "#" not in w:
            found = sorted(glob.glob(p))
            if not found:
                raise ImportInputError(
                    f"No files match {w}. Check the folder and the pattern (e.g. "
                    "/data/th_8_2_0*.cbf), or give a template with # for the image number."
                )
            out.extend(found)
        else:
            out.append(p)
    return out


def _kind(path: str) -> str:
    name = Path(path).name
    low = name.lower()
    if low.endswith((".expt", ".json")):
        return "expt"
    if low.endswith(".refl"):
        return "refl"
    if name.upper().startswith("XDS") and name.upper().endswith(".INP"):
        return "xds_inp"
    if name.upper() in ("SPOT.XDS",) or low.endswith("spot.xds"):
        return "spot_xds"
    return "image"


def _table_name(table) -> str:
    from gonio.core.reflection_table import Flags

    if len(table) and table.get_flags(Flags.integrated, all_bits=False).any():
        return "integrated"
    if "miller_index" in table and len(table) and table.get_flags(Flags.indexed).any():
        return "indexed"
    return "strong"


def run(ctx: Context, parsed) -> Outcome:
    from gonio.store.state import State

    values = parsed.values
    words = list(parsed.positional)
    if values.get("input.template"):
        words.append(values["input.template"])
    overrides, given = _overrides(values)
    paths = _expand(words, ctx.cwd)
    for p in paths:
        if "#" not in Path(p).name and not Path(p).exists():
            raise ImportInputError(
                f"{p}: no such file or folder. Check the path (tab completes it in the shell)."
            )
    kinds = {p: _kind(p) for p in paths}
    images = [p for p in paths if kinds[p] == "image"]
    if images and any(k != "image" for k in kinds.values()):
        raise ImportInputError(
            "Give either image files or DIALS/XDS files to one import, not both: the geometry "
            "would be ambiguous. Import the images, or the .expt/.refl (or XDS.INP/SPOT.XDS) files."
        )
    notes = []
    if not paths:
        if not given:
            raise ImportInputError(
                "import needs files (images, a template like th_8_2_####.cbf, DIALS .expt/.refl, "
                "or XDS.INP/SPOT.XDS), or geometry overrides such as distance=2193 to apply to the "
                "current experiments."
            )
        if not ctx.state.experiments:
            raise ImportInputError(
                "There are no experiments to apply new geometry to: import images or an .expt "
                "file first, e.g. import /data/images_####.cbf distance=2193."
            )
        from gonio.core.importer import apply_overrides

        experiments = apply_overrides(ctx.state.experiments, overrides)
        state = ctx.state.evolve(experiments=experiments)
        notes.append("Applied to the current experiments: " +
                     ", ".join(f"{k}={v}" for k, v in given.items()))
        # spot positions in mm / reciprocal space depend on the geometry; pixel data do not
    elif images:
        from gonio.core.importer import import_images

        experiments = import_images(images, image_range=values.get("input.image_range"),
                                    overrides=overrides)
        state = State(experiments=experiments)
    else:
        state = _import_files(ctx, paths, kinds, overrides, given, notes)
    text = _summary(state, notes)
    metrics = {
        "experiments": len(state.experiments),
        "images": int(sum(e.scan.num_images for e in state.experiments if e.scan)),
    }
    for name, table in state.reflections.items():
        metrics[f"{name} reflections"] = len(table)
    return Outcome(state=state, text=text, metrics=metrics)


def _import_files(ctx, paths, kinds, overrides, given, notes):
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl
    from gonio.core.models.experiment import ExperimentList
    from gonio.store.state import State

    experiments = None
    tables = {}
    xds_inp = [p for p in paths if kinds[p] == "xds_inp"]
    for p in paths:
        if kinds[p] == "expt":
            el = read_expt(p)
            experiments = el if experiments is None else ExperimentList([*experiments, *el])
        elif kinds[p] == "xds_inp":
            from gonio.core.io.xds import read_xds_inp

            xin = read_xds_inp(p)
            el = xin.experiments
            experiments = el if experiments is None else ExperimentList([*experiments, *el])
            if getattr(xin, "unit_cell", None) is not None and xin.space_group is not None:
                c = xin.unit_cell
                cell = ",".join(f"{x:g}" for x in (c.a, c.b, c.c, c.alpha, c.beta, c.gamma))
                notes.append(f"XDS.INP gives unit cell {cell} and space group "
                             f"{xin.space_group.hm}: to use them, index unit_cell={cell} "
                             f"space_group=\"{xin.space_group.hm}\".")
    if experiments is None:
        experiments = ctx.state.experiments
        if not experiments:
            raise ImportInputError(
                "Reflection files need experiments to go with them: import the .expt (or XDS.INP) "
                "in the same command, e.g. import imported.expt strong.refl."
            )
    if given:
        from gonio.core.importer import apply_overrides

        experiments = apply_overrides(experiments, overrides)
    for p in paths:
        if kinds[p] == "refl":
            t = read_refl(p)
            _check_ids(t, experiments, p)
            tables[_table_name(t)] = t
        elif kinds[p] == "spot_xds":
            from gonio.core.io.xds import read_spot_xds

            if not xds_inp and not ctx.state.experiments:
                raise ImportInputError("SPOT.XDS needs the geometry of XDS.INP: import both, e.g. "
                                       "import XDS.INP SPOT.XDS.")
            tables["strong"] = read_spot_xds(p, experiments)
    for t in tables.values():
        _fill_mm(t, experiments)
    return State(experiments=experiments, reflections=tables)


def _check_ids(table, experiments, path) -> None:
    import numpy as np

    if "id" in table and len(table):
        ids = table["id"]
        bad = ids[(ids >= len(experiments))]
        if len(bad):
            raise ImportInputError(
                f"{path} refers to experiment {int(np.max(bad))} but only {len(experiments)} "
                "experiment(s) are imported: import the matching .expt file with it."
            )


def _fill_mm(table, experiments) -> None:
    """Add mm / reciprocal-space columns from the px centroids where missing."""
    if "xyzobs.px.value" in table and "xyzobs.mm.value" not in table and len(table):
        from gonio.core.geometry.spots import centroid_px_to_mm

        if "id" in table and (table["id"] >= 0).all():
            centroid_px_to_mm(experiments, table)


def _summary(state, notes) -> str:
    from gonio.shell.render import experiments_overview

    lines = [experiments_overview(state)]
    lines.extend(notes)
    return "\n".join(lines)
