"""The ``save`` command: write DIALS files of the current state."""

from __future__ import annotations

from pathlib import Path

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome

_DEFAULT_PREFIX = {"strong": "strong", "indexed": "indexed", "integrated": "integrated",
                   "symmetrized": "symmetrized", "scaled": "scaled"}


class SaveError(GonioError):
    pass


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.io.dials_expt import write_expt
    from gonio.core.io.dials_refl import write_refl
    from gonio.core.io.file_kinds import JSON, REFL, check_replaceable

    state = ctx.state
    if not state.experiments:
        raise SaveError("Nothing to save: the session has no experiments yet. Run import first.")
    table_name = parsed.values["output.table"] or state.newest_table
    if table_name is not None and table_name not in state.reflections:
        raise SaveError(f"There is no reflection table '{table_name}'; the state has "
                        f"{', '.join(state.reflections) or 'none'}.")
    prefix = parsed.values["output.prefix"] or _DEFAULT_PREFIX.get(table_name or "", "imported")
    base = Path(prefix) if Path(prefix).is_absolute() else Path(ctx.cwd) / prefix
    if not base.parent.is_dir():
        raise SaveError(f"The folder {base.parent} does not exist; create it or choose another prefix.")
    written = [str(base) + ".expt"]
    check_replaceable(written[0], JSON)  # both checked before either is written
    if table_name is not None:
        check_replaceable(str(base) + ".refl", REFL)
    write_expt(state.experiments, written[0])
    if table_name is not None:
        written.append(str(base) + ".refl")
        write_refl(state.reflections[table_name], written[1])
    return Outcome(text="Wrote " + " and ".join(written))
