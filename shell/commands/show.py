"""The ``show`` command (as dials.show)."""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome


class NothingToShowError(GonioError):
    pass


def run(ctx: Context, parsed) -> Outcome:
    from gonio.shell.render import show_experiment, table_summary

    state = ctx.state
    if not state.experiments:
        raise NothingToShowError(
            "There is nothing to show yet: the session has no experiments. Start with import, "
            "e.g. import /data/th_8_2_####.cbf, or import imported.expt strong.refl."
        )
    parts = [show_experiment(i, e, parsed.values["show_all"]) for i, e in enumerate(state.experiments)]
    parts += [table_summary(name, t) for name, t in state.reflections.items()]
    return Outcome(text="\n\n".join(parts))
