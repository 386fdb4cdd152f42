"""The ``report`` command (dials.report, for the whole session): one self-contained HTML file.

Sections appear only for what the session holds: the history tree with every
branch, the models of the current step, spot finding (``strong``), indexing
and refinement (``indexed``), integration (``integrated``), symmetry (the log
of the symmetry step), scaling (``scaled``). ``compare=A,B`` draws two steps'
figures on the same axes. Nothing is recorded in the history.
"""

from __future__ import annotations

import os
from pathlib import Path

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

DEFAULT_NAME = "gonio_report.html"


class ReportError(GonioError):
    pass


def params() -> list[Param]:
    return [
        Param("output", "path", DEFAULT_NAME, "the HTML file to write (relative to the session "
              "folder)"),
        Param("compare", "ints", None, "two step numbers whose figures are drawn side by side on "
              "the same axes, e.g. compare=4,7", length=2, allow_none=True, min=0),
    ]


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.report.html import page

    session = ctx.session
    out = Path(parsed.values["output"])
    out = out if out.is_absolute() else Path(ctx.cwd) / out
    _check_writable(out)
    compare = parsed.values.get("compare")
    if compare:
        a, b = compare
        sections = compare_sections(session, a, b)
        title = f"gonio report: step {a} against step {b}"
    else:
        sections = report_sections(session, ctx.state)
        title = "gonio report"
    if not sections:
        raise ReportError("There is nothing to report yet: the session has no steps. Run import "
                          "first, e.g. import /data/th_8_2_####.cbf.")
    text = page(title, sections, subtitle=f"session {session.folder}")
    try:
        from gonio.core.io.atomic import write_atomic

        write_atomic(out, text.encode())
    except OSError as e:
        raise _unwritable(out, e) from None
    size = os.path.getsize(out) / 1e6
    names = ", ".join(s.title for s in sections)
    return Outcome(text=f"Wrote {out} ({size:.1f} MB; sections: {names}). Open it in a browser.")


def _unwritable(out: Path, e: OSError) -> ReportError:
    return ReportError(f"Cannot write the report to {out}: {e.strerror or e}. Give a path in a "
                       "folder you can write to, e.g. report output=/tmp/report.html.")


def _check_writable(out: Path) -> None:
    folder = out.parent
    if out.is_dir():
        raise ReportError(f"{out} is a folder; give a file name, e.g. "
                          f"report output={out / DEFAULT_NAME}.")
    if not folder.is_dir():
        raise _unwritable(out, FileNotFoundError(2, "the folder does not exist"))
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise _unwritable(out, PermissionError(13, "permission denied"))
    from gonio.core.io.file_kinds import HTML, check_replaceable

    check_replaceable(out, HTML)  # before the report is gathered, which can take a while


# ---------------------------------------------------------------------------- gathering

def _step_of(session, command: str):
    """The newest step running ``command`` on the branch to the head (None if there is none)."""
    for step in reversed(session.history.path(session.head)):
        if step.command == command:
            return step
    return None


def _pre(text: str) -> str:
    import html

    return f"<pre>{html.escape(text)}</pre>"


def history_section(session):
    from gonio.core.report.html import Section
    from gonio.shell.commands.history import _step_figures
    from gonio.shell.history_graph import render

    text = render(session.history, session.head, _step_figures, all_branches=True)
    if not text:
        return None
    return Section("History", "<p>Every step and branch of the session (* the current step)."
                   "</p>" + _pre(text))


def models_section(state, title: str = "Models"):
    from gonio.core.report.html import Section
    from gonio.shell.render import show_experiment

    if not state.experiments:
        return None
    return Section(title, _pre("\n\n".join(show_experiment(i, e)
                                           for i, e in enumerate(state.experiments))))


#: tables that carry the predictions and, from integrate on, the intensities (oldest first)
PREDICTED = ("indexed", "integrated", "symmetrized", "scaled")


def _newest(state, names, accept):
    for name in reversed([n for n in state.reflections if n in names]):
        t = state.reflections[name]
        if len(t) and accept(t):
            return t
    return None


def _refinement_table(state):
    from gonio.core.report.refinement import has_residuals

    return _newest(state, PREDICTED[:2], has_residuals) or _newest(state, PREDICTED, has_residuals)


def _integrated_table(state):
    from gonio.core.report.integration import has_integrated

    return _newest(state, PREDICTED[1:], has_integrated)


def _reference_profiles(states):
    """The integrate step's reference-profile summary, for a report (not a comparison) of a
    state whose ``integrated`` table is the one that step made (not one imported later)."""
    if len(states) != 1:
        return None
    state = states[0][1]
    summary = state.data.get("integrate", {}).get("reference_profiles")
    table = state.reflections.get("integrated")
    if not summary or table is None or summary.get("n_integrated") != len(table):
        return None
    return summary


def _scaled_stats(state):
    from gonio.core.report.scaling import statistics

    t = state.reflections.get("scaled")
    if t is None or not len(t) or "inverse_scale_factor" not in t:
        return None
    if not state.experiments or state.experiments[0].crystal is None:
        return None
    try:
        return statistics(state.experiments, t)
    except ValueError:  # nothing left to merge: the section is left out
        return None


def data_sections(states: list[tuple[str, object]]) -> list:
    """The data sections for one state (a report) or two (a comparison), each drawn when every
    state has its data."""
    from gonio.core.report import integration, refinement, scaling, spots

    out = []

    def tables(name):
        ts = [(label, s.experiments, s.reflections.get(name)) for label, s in states]
        return ts if all(t is not None and len(t) for _, _, t in ts) else None

    series = tables("strong")
    if series:
        out.append(spots.section(series))
    series = [(label, s.experiments, _refinement_table(s)) for label, s in states]
    if all(t is not None for _, _, t in series):
        out.append(refinement.section(series))
    series = [(label, s.experiments, _integrated_table(s)) for label, s in states]
    if all(t is not None for _, _, t in series):
        out.append(integration.section(series, _reference_profiles(states)))
    stats = [_scaled_stats(s) for _, s in states]
    if all(x is not None for x in stats):
        out.append(scaling.section([scaling.ScaledSeries(label, s.experiments,
                                                         s.reflections["scaled"], st)
                                    for (label, s), st in zip(states, stats)]))
    return out


def report_sections(session, state) -> list:
    from gonio.core.report.html import Section

    data = data_sections([("", state)])
    step = _step_of(session, "symmetry")
    if step is not None and "symmetrized" in state.reflections:
        # the tables dials.symmetry prints, as the step printed them; before scaling
        at = len(data) - (1 if data and data[-1].title == "Scaling" else 0)
        data.insert(at, Section("Symmetry", _pre(step.log)))
    sections = [history_section(session), models_section(state)] + data
    return [s for s in sections if s is not None]


def compare_sections(session, a: int, b: int) -> list:
    from gonio.core.report.html import Section

    states = []
    for n in (a, b):
        if n:
            session.history.step(n)  # an unknown step number raises a clear error
        states.append((f"step {n}", session.state_at(n or None)))
    models = [models_section(s, label) for label, s in states]
    sections = [history_section(session)]
    if all(models):
        sections.append(Section("Models", '<div class="compare">' + "".join(
            f"<div><h3>{m.title}</h3>{m.html}</div>" for m in models) + "</div>"))
    sections += data_sections(states)
    return [s for s in sections if s is not None]
