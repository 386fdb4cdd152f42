"""History commands: history, undo, redo, goto, diff, forget."""

from __future__ import annotations

import json

from tabulate import tabulate

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import ParameterError


class StepArgumentError(GonioError):
    pass


def _metrics_text(metrics: dict, limit: int = 4) -> str:
    items = list(metrics.items())[:limit]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in items)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and v and all(isinstance(x, float) for x in v):
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
    return str(v)


def explicit_line(step) -> str:
    """The command line as typed (it holds every explicit parameter)."""
    return step.line


def run_history(ctx: Context, parsed) -> Outcome:
    session = ctx.session
    history = session.history
    unknown = [w for w in parsed.positional if w not in ("--script", "--all")]
    if unknown:
        raise ParameterError(f"history does not take {' '.join(unknown)!r}: it takes --all "
                             "(every branch in full) or --script (the branch as a script).")
    if parsed.values["script"] or "--script" in parsed.positional:
        return Outcome(text=script(session))
    from gonio.shell.history_graph import render

    head = history.head
    all_branches = bool(parsed.values.get("all")) or "--all" in parsed.positional
    damaged = any(s.status != "ok" for s in history.steps())
    from gonio.shell.commands.process import read_marker

    by_process = set((read_marker(session.folder) or {}).get("process_steps", []))

    def describe(step) -> str:
        return ("[process] " if step.id in by_process else "") + _step_figures(step)

    text = render(history, head, describe, all_branches)
    if not text:
        return Outcome(text="The history is empty: nothing has been run in this folder yet.")
    text += ("\n(* marks the current step, o the others; branches run in their own column"
             + ("" if all_branches else "; + is a folded side branch, `history --all` draws them")
             + ")")
    if by_process:
        text += "\n([process]: a step the process command ran, as if typed)"
    if damaged:
        text += "\n([damaged]: artifacts of the step are missing or altered; `gonio check` says which)"
    if history.read_only:
        text += f"\n(read-only session: {history.read_only_reason})"
    return Outcome(text=text)


def _step_figures(step) -> str:
    figures = _metrics_text(step.metrics)
    if step.status != "ok":
        figures = f"[{step.status}] " + figures
    return f"{step.duration_s:.2f} s  {figures}"


def script(session) -> str:
    lines = [f"# gonio script: the branch ending at step {session.history.head}",
             f"# folder: {session.folder}"]
    for step in session.history.path(session.history.head):
        lines.append(step.line)
    return "\n".join(lines) + "\n"


def run_undo(ctx: Context, parsed) -> Outcome:
    head = ctx.session.history.undo()
    return Outcome(text=f"Now at step {head or 0}" + _describe(ctx.session, head))


def run_redo(ctx: Context, parsed) -> Outcome:
    head = ctx.session.history.redo()
    return Outcome(text=f"Now at step {head}" + _describe(ctx.session, head))


def _step_number(word: str) -> int:
    try:
        n = int(word)
    except ValueError:
        raise StepArgumentError(f"'{word}' is not a step number; `history` lists the steps.") from None
    if n < 0:
        raise StepArgumentError(f"step numbers are 0 or more, not {n}; `history` lists the steps.")
    return n


def run_goto(ctx: Context, parsed) -> Outcome:
    if len(parsed.positional) != 1:
        raise StepArgumentError("goto takes one step number, e.g. goto 2; `history` lists the steps.")
    n = _step_number(parsed.positional[0])
    head = ctx.session.history.goto(n or None)
    return Outcome(text=f"Now at step {head or 0}" + _describe(ctx.session, head))


def run_forget(ctx: Context, parsed) -> Outcome:
    if len(parsed.positional) != 1:
        raise StepArgumentError("forget takes one step number, the first step of the branch to "
                                "drop, e.g. forget 5; `history` shows the tree.")
    n = _step_number(parsed.positional[0])
    dropped = ctx.session.history.forget(n)
    ctx.session.forget_states(dropped)
    steps = f"step {n}" if len(dropped) == 1 else f"steps {', '.join(map(str, dropped))}"
    return Outcome(text=f"Forgot {steps}. Their artifacts stay on disk until `gonio gc` removes "
                   "those no other step uses.")


def _describe(session, head) -> str:
    if not head:
        return " (the empty start)"
    return f": {session.history.step(head).line}"


def run_diff(ctx: Context, parsed) -> Outcome:
    if len(parsed.positional) != 2:
        raise StepArgumentError("diff takes two step numbers, e.g. diff 2 3.")
    a, b = (_step_number(w) for w in parsed.positional)
    session = ctx.session
    sa, sb = session.state_at(a or None), session.state_at(b or None)
    ia = session.history.step(a) if a else None
    ib = session.history.step(b) if b else None
    out = [f"diff step {a} -> step {b}"]
    if ia and ib:
        out.append(f"  {a}: {ia.line}\n  {b}: {ib.line}")
        pa, pb = ia.params, ib.params
        if ia.command == ib.command:
            changed = [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
            if changed:
                out.append("Parameters:\n" + tabulate(changed, headers=["parameter", str(a), str(b)],
                                                      disable_numparse=True))
        ma, mb = ia.metrics, ib.metrics
        keys = [k for k in list(ma) + [k for k in mb if k not in ma]]
        rows = [(k, _fmt(ma.get(k, "-")), _fmt(mb.get(k, "-"))) for k in keys if ma.get(k) != mb.get(k)]
        if rows:
            out.append("Key figures:\n" + tabulate(rows, headers=["figure", str(a), str(b)],
                                                   disable_numparse=True))
    out.append(model_diff(sa, sb, a, b))
    return Outcome(text="\n".join(out))


def model_diff(sa, sb, a, b) -> str:
    """Changed model quantities between two states, as a table."""
    from gonio.shell.render import max_resolution  # noqa: F401  (kept for symmetry of imports)

    def figures(state) -> dict:
        f = {}
        for i, e in enumerate(state.experiments):
            p = f"expt {i} "
            if e.beam is not None:
                f[p + "wavelength (A)"] = f"{e.beam.wavelength:.6f}"
                f[p + "beam direction"] = _vec(e.beam.direction)
            if e.detector is not None and e.beam is not None:
                for j, panel in enumerate(e.detector):
                    if j > 3:
                        break
                    bc = panel.beam_centre_mm(e.beam.s0)
                    f[p + f"panel {j} distance (mm)"] = f"{panel.distance:.3f}"
                    f[p + f"panel {j} beam centre (mm)"] = f"{bc[0]:.3f}, {bc[1]:.3f}"
                    f[p + f"panel {j} normal"] = _vec(panel.normal)
            if e.goniometer is not None:
                f[p + "rotation axis"] = _vec(e.goniometer.rotation_axis)
            if e.scan is not None:
                f[p + "images"] = f"{e.scan.image_range[0]}-{e.scan.image_range[1]}"
                f[p + "oscillation (deg)"] = f"{e.scan.oscillation[0]:.3f}, {e.scan.oscillation[1]:.4f}"
            if e.crystal is not None:
                c = e.crystal.unit_cell
                f[p + "unit cell"] = f"{c.a:.3f} {c.b:.3f} {c.c:.3f} {c.alpha:.2f} {c.beta:.2f} {c.gamma:.2f}"
                f[p + "space group"] = e.crystal.space_group.hm
        for name, t in state.reflections.items():
            f[f"table {name}"] = f"{len(t)} rows"
        return f

    fa, fb = figures(sa), figures(sb)
    rows = [(k, fa.get(k, "-"), fb.get(k, "-")) for k in list(fa) + [k for k in fb if k not in fa]
            if fa.get(k) != fb.get(k)]
    if not rows:
        return "Models: no change"
    return "Models:\n" + tabulate(rows, headers=["quantity", str(a), str(b)], disable_numparse=True)


def _vec(v) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"


__all__ = ["run_history", "run_undo", "run_redo", "run_goto", "run_diff", "run_forget", "script",
           "json"]
