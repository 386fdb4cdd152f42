"""The ``export`` command: files for other programs (dials.export).

MTZ (unmerged, the default), XDS_ASCII, SHELX HKLF 4 + .ins, unmerged mmCIF
and reciprocal-lattice-point JSON, from the newest of the ``scaled``,
``symmetrized`` and ``integrated`` tables (json: the newest table of all).
Files go to the session folder under dials.export's names unless a name is
given, and are written atomically. The step records the files and figures
(``data/export``); models and tables do not change.
"""

from __future__ import annotations

from pathlib import Path

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

INTENSITY_TABLES = ("scaled", "symmetrized", "integrated")


class ExportInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.export.params import ExportParams
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(ExportParams)


def newest_table(state, names=INTENSITY_TABLES) -> str | None:
    """The most recently made of the tables ``names`` (state order: newest last)."""
    present = [n for n in state.reflections if n in names]
    return present[-1] if present else None


def output_path(ctx: Context, name: str) -> Path:
    """``name`` in the session folder (or as given, if absolute); its folder must exist."""
    path = Path(name).expanduser()
    path = path if path.is_absolute() else Path(ctx.cwd) / path
    if not path.parent.is_dir():
        raise ExportInputError(f"The folder {path.parent} does not exist; create it first or "
                               "give a file name in an existing folder.")
    return path


def write_files(files: list[tuple[Path, bytes]]) -> None:
    """Write each file atomically; a failure becomes a clear error (the step is not recorded)."""
    from gonio.core.io.atomic import write_atomic
    from gonio.core.io.file_kinds import HEAD_BYTES, check_replaceable, kind_of

    for path, data in files:  # all checked before any is written
        check_replaceable(path, kind_of(data[:HEAD_BYTES]))
    for path, data in files:
        try:
            write_atomic(path, data)
        except OSError as e:
            raise ExportInputError(f"Could not write {path} ({e.strerror or e}); the file is as it "
                                   "was and nothing was recorded. Check the disk space and "
                                   "permissions, or choose another name.") from None


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.export.files import export_files
    from gonio.core.export.params import FORMATS, ExportParams
    from gonio.shell.dataclass_params import dataclass_from_values

    p = dataclass_from_values(ExportParams, parsed.values)
    words = list(parsed.positional)
    if len(words) == 1 and words[0] in FORMATS and "format" not in parsed.explicit:
        p.format = words[0]  # "export mmcif" as "export format=mmcif"
    elif words:
        raise ExportInputError(f"export does not take {' '.join(words)!r}: give the format as "
                               f"format=NAME (one of {', '.join(FORMATS)}) and file names as "
                               "mtz.hklout=, xds_ascii.hklout=, shelx.hklout=, mmcif.hklout=.")
    state = ctx.state
    if not state.experiments:
        raise ExportInputError("Nothing to export: the session has no experiments yet. Run "
                               "import (and integrate) first.")
    if p.format == "json":
        name = state.newest_table
        if name is None:
            raise ExportInputError("format=json needs reflections: run findspots first.")
    else:
        name = newest_table(state)
        if name is None:
            raise ExportInputError(
                f"There are no integrated reflections to export (the session has "
                f"{', '.join(state.reflections) or 'no tables'}): run integrate first "
                "(then symmetry and scale for scaled data). save writes the DIALS .expt/.refl "
                "files of any step.")
    result = export_files(state.experiments, state.reflections[name], p)
    paths = [(output_path(ctx, fname), data) for fname, data in result.files]
    write_files(paths)
    lines = [f"Exported {result.n_reflections} reflections from the '{name}' table"
             + (f" ({result.intensity} intensities)" if result.intensity else "") + ":"]
    lines += [f"  {path} ({len(data) / 1e6:.2f} MB)" for path, data in paths]
    if p.format == "mtz" and len(result.batches) > 1:
        lines.append("Batches: " + ", ".join(f"{a}-{b}" for a, b in result.batches))
    metrics = {"format": p.format, "files": [str(q) for q, _ in paths],
               "reflections": result.n_reflections, "table": name}
    data = {"export": {"format": p.format, "files": [str(q) for q, _ in paths],
                       "reflections": result.n_reflections}}
    return Outcome(state=state.evolve(data=data), text="\n".join(lines), metrics=metrics)
