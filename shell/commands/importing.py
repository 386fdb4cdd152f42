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

    if "inverse_scale_factor" in table or (len(table) and table.get_flags(Flags.scaled).any()):
        return "scaled"
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

        base, where = _override_base(ctx, values.get("geometry.from", "imported"))
        experiments = apply_overrides(base.experiments, overrides)
        state = ctx.state.evolve(experiments=experiments,
                                 drop=() if base is ctx.state else DOWNSTREAM)
        notes.append(f"Applied to the models {where}: " +
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


DOWNSTREAM = ("indexed", "refined", "integrated", "scaled")  # tables made with old models


#: steps whose models are "as imported": overrides start from the newest of them
IMPORTING = ("import", "find_rotation_axis")


def _override_base(ctx: Context, start: str):
    """(state whose experiments the overrides start from, where that is in words).

    ``imported``: the models of the last step that set the geometry on the current branch
    (``import``: the header or an earlier override; ``find_rotation_axis``, which applies its
    axis as an import does), so that an override after a failed index does not inherit its
    refined detector; ``current``: the models at the head.
    """
    session = getattr(ctx, "session", None)
    head = session.head if session is not None else None
    if start == "current" or head is None:
        return ctx.state, f"of the current step {head or 0} (from=current)"
    last = next((s for s in reversed(session.history.path(head)) if s.command in IMPORTING),
                None)
    if last is None or last.id == head:
        return ctx.state, f"of the current step {head} (its last import)"
    return (session.state_at(last.id), f"as imported at step {last.id} ({last.line[:60]}); "
            "from=current starts from the current ones")


def _import_files(ctx, paths, kinds, overrides, given, notes):
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl
    from gonio.core.models.experiment import ExperimentList
    from gonio.store.state import State

    experiments = None
    tables = {}
    expt_files = []  # (first experiment index, identifiers) of each .expt, for pairing .refl files
    xds_inp = [p for p in paths if kinds[p] == "xds_inp"]
    for p in paths:
        if kinds[p] == "expt":
            el = read_expt(p)
            expt_files.append((0 if experiments is None else len(experiments),
                               [e.identifier for e in el]))
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
    refl_paths = [p for p in paths if kinds[p] == "refl"]
    by_kind: dict[str, list] = {}
    for p in paths:
        if kinds[p] == "refl":
            t = read_refl(p)
            if len(expt_files) > 1:
                t = _offset_ids(t, expt_files, refl_paths.index(p), p)
            _check_ids(t, experiments, p)
            by_kind.setdefault(_table_name(t), []).append(t)
        elif kinds[p] == "spot_xds":
            from gonio.core.io.xds import read_spot_xds

            if not xds_inp and not ctx.state.experiments:
                raise ImportInputError("SPOT.XDS needs the geometry of XDS.INP: import both, e.g. "
                                       "import XDS.INP SPOT.XDS.")
            tables["strong"] = read_spot_xds(p, experiments)
    if by_kind:
        from gonio.core.reflection_table import ReflectionTable

        for name, parts in by_kind.items():
            tables[name] = parts[0] if len(parts) == 1 else ReflectionTable.concatenate(parts)
    for t in tables.values():
        _fill_mm(t, experiments)
    return State(experiments=experiments, reflections=tables)


def _offset_ids(table, expt_files, position: int, path):
    """Renumber the ``id`` column of a table read beside several .expt files.

    The table belongs to the .expt file holding all of its experiment identifiers (the
    first such file); without identifiers, or when none holds them all, to the .expt at
    the same position among the .expt files as the table among the .refl files.
    """
    import numpy as np

    idents = table.experiment_identifiers
    owner = None
    if idents:
        owner = next((k for k, (_, ids) in enumerate(expt_files)
                      if set(idents.values()) <= set(ids)), None)
    if owner is None:
        if position >= len(expt_files):
            raise ImportInputError(
                f"{path} cannot be paired with an .expt file: its experiment identifiers are in "
                "none of the imported .expt files and there are more .refl than .expt files. "
                "Import each .refl with the .expt it was written with.")
        owner = position
    offset, ids = expt_files[owner]
    t = table.copy()
    if "id" in t and len(t):
        old = t["id"]
        new = old + offset
        for k, ident in idents.items():
            if ident in ids:
                new = np.where(old == k, offset + ids.index(ident), new)
        t["id"] = np.where(old < 0, old, new)
    t.experiment_identifiers = {offset + ids.index(v): v for v in idents.values() if v in ids} \
        if idents else {}
    return t


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
