"""The ``try`` command: what-if branches, one per value of a parameter, compared.

``try index goniometer.axis=-107,-122,0|107,122,0`` runs ``index`` once per value as
sibling branches of the current step (every other word on the line goes to every
branch), prints one table of their key figures and marks the best; ``then`` chains
further commands on each branch (``try import distance=1762|1900|2193 then index``).
Each branch is made of ordinary steps, run by :meth:`Session.run_line` exactly as if
typed after a ``goto`` of the starting step, so ``goto``, ``diff``, ``report compare=``
and ``undo`` work on them. The head goes back to the starting step at the end.
"""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import ParamSet, Parsed

USAGE = "STEP param=v1|v2|... [other params] [then STEP2 ...]"
EXAMPLE = "try index goniometer.axis=-107,-122,0|107,122,0"


class TryInputError(GonioError):
    pass


class TryWords(ParamSet):
    """try's words are command lines for other commands: kept as they are, checked by
    :func:`run` against the parameters of the commands they name."""

    def parse(self, tokens, cwd=None) -> Parsed:
        return Parsed(values={}, explicit=set(), positional=list(tokens), param_files=[], sources={},
                      paramset=self)


def _segments(words: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for w in words:
        if w == "then":
            out.append([])
        else:
            out[-1].append(w)
    if any(not seg for seg in out):
        raise TryInputError(f"try needs a command before and after every 'then': try {USAGE}, "
                            f"e.g. try import distance=1762|1900|2193 then index.")
    return out


def _varied(segments) -> tuple[int, int, str, list[str]]:
    """(segment, word index, parameter name, values) of the one word with | values."""
    found = [(i, j, w) for i, seg in enumerate(segments) for j, w in enumerate(seg[1:], 1)
             if "|" in w]
    if len(found) != 1:
        what = "no parameter" if not found else f"{len(found)} parameters"
        raise TryInputError(f"try compares the values of one parameter, separated by |, and "
                            f"this line varies {what}: e.g. {EXAMPLE} (the other parameters on "
                            f"the line go to every branch). Nothing was run.")
    i, j, w = found[0]
    name, eq, value = w.partition("=")
    values = value.split("|")
    if not eq or not name or len(values) < 2 or any(not v.strip() for v in values):
        raise TryInputError(f"'{w}': give the parameter and at least two non-empty values, "
                            f"e.g. {EXAMPLE}. Nothing was run.")
    return i, j, name, values


def _geometry_first(segments, i, j, name):
    """A geometry override the step does not take (``try index goniometer.axis=a|b``) goes
    to an ``import`` (from the imported models) before the step, on each branch."""
    from gonio.shell.commands import lookup

    step = lookup(segments[i][0])
    if step.name == "import" or _takes(step, name) or not _takes(lookup("import"), name):
        return segments, i, j
    seg = segments[i][:j] + segments[i][j + 1:]
    return segments[:i] + [["import", segments[i][j]], seg] + segments[i + 1:], i, 1


def _takes(command, name) -> bool:
    try:
        command.paramset.resolve(name)
    except GonioError:
        return False
    return True


def _lines(segments, i, j, name, value) -> list[str]:
    import shlex

    out = []
    for k, seg in enumerate(segments):
        words = list(seg)
        if k == i:
            words[j] = f"{name}={value}"
        out.append(" ".join(shlex.quote(w) for w in words))
    return out


def _check(session, segments, i, j, name, values) -> None:
    """Every branch's lines name step commands and parse, before anything runs."""
    from gonio.shell.commands import lookup
    from gonio.shell.params import split_line

    for seg in segments:
        command = lookup(seg[0])
        if not command.step or command.name == "try":
            raise TryInputError(f"try runs commands that make steps (import, index, refine, ...); "
                                f"'{seg[0]}' does not. Nothing was run.")
    for value in values:
        for line in _lines(segments, i, j, name, value):
            words = split_line(line)
            try:
                lookup(words[0]).paramset.parse(words[1:], cwd=session.folder)
            except GonioError as e:
                reason = " ".join(str(e).split()).rstrip(".")
                raise TryInputError(f"try: the branch {name}={value} would fail before running: "
                                    f"{reason}. Nothing was run.") from None


# key figures of a branch's last step: (metric, column heading, format)
FIGURES = (("percent_indexed", "% indexed", "{:.1f}"), ("rmsd_x_px", "RMSD_X px", "{:.3f}"),
           ("rmsd_y_px", "RMSD_Y px", "{:.3f}"), ("rmsd_z_images", "RMSD_Z images", "{:.3f}"))
CRITERION = ("the highest % indexed; within 1% of it, the lowest RMSD_Z (images), the "
             "rotation-direction error a wrong axis, sense or distance shows first")


def _volume(cell) -> float | None:
    import gemmi

    try:
        return gemmi.UnitCell(*cell).volume
    except (TypeError, ValueError, RuntimeError):
        return None


def _best(rows) -> int | None:
    ok = [r for r in rows if r["metrics"].get("percent_indexed") is not None]
    if not ok:
        return None
    top = max(r["metrics"]["percent_indexed"] for r in ok)
    near = [r for r in ok if r["metrics"]["percent_indexed"] >= top - 1.0]
    return min(near, key=lambda r: r["metrics"].get("rmsd_z_images", float("inf")))["n"]


def _table(rows, name, best) -> str:
    from tabulate import tabulate

    out = []
    for r in rows:
        m = r["metrics"]
        line = [("* " if r["n"] == best else "  ") + r["value"], r["step"] or "-"]
        line += [fmt.format(m[key]) if m.get(key) is not None else "" for key, _, fmt in FIGURES]
        cell = m.get("cell_1")
        line.append(", ".join(f"{c:.2f}" for c in cell) if cell else "")
        vol = _volume(cell) if cell else None
        line.append(f"{vol:.0f}" if vol else "")
        line.append(r["error"])
        out.append(line)
    headers = [name, "step", *[h for _, h, _ in FIGURES], "cell", "volume A^3", "failed"]
    if not any(r["error"] for r in rows):
        headers, out = headers[:-1], [o[:-1] for o in out]
    return tabulate(out, headers=headers)


def run(ctx: Context, parsed) -> Outcome:
    session = ctx.session
    words = list(parsed.positional)
    if not words:
        raise TryInputError(f"try needs a command and one parameter with values separated by |: "
                            f"try {USAGE}, e.g. {EXAMPLE}.")
    segments = _segments(words)
    i, j, name, values = _varied(segments)
    segments, i, j = _geometry_first(segments, i, j, name)
    _check(session, segments, i, j, name, values)
    session.history.require_writable("try")
    start = session.head
    rows = []
    try:
        for n, value in enumerate(values):
            if session.head != start:
                session.history.goto(start)
            step, error = None, ""
            for line in _lines(segments, i, j, name, value):
                result = session.run_line(line)
                if not result.ok:
                    error = result.text.removeprefix("Error: ")[:70]
                    break
                step = result.step
            metrics = dict(session.history.step(step).metrics) if step else {}
            rows.append({"n": n, "value": value, "step": step, "metrics": metrics,
                         "error": error})
    finally:
        if session.head != start:
            session.history.goto(start)
    best = _best(rows)
    text = [_table(rows, name, best), ""]
    if best is not None:
        text.append(f"* best by {CRITERION}: {name}={rows[best]['value']} (step "
                    f"{rows[best]['step']}).")
    text.append(f"The session is back at step {start or 0}; `goto N` keeps a branch, "
                f"`diff A B` compares two.")
    return Outcome(text="\n".join(text))
