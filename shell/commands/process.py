"""``process``: the whole pipeline in one command (as dials.process and xia2's DIALS pipeline).

import -> findspots -> index -> rbs -> reindex (the highest-symmetry recommended
Bravais setting, as xia2 chooses) -> refine (its default: static, then
scan-varying) -> integrate -> symmetry -> scale -> merge -> export. When the
CC1/2 fit of the merging statistics falls to 0.3 before the data end
(dials.estimate_resolution's cc_half criterion), scale is run again with that
d_min, as xia2 does, unless the line gives scale.d_min.

Every step is run through the session exactly as if typed (``Session.run_line``),
so the result is an ordinary session: ``history``, ``undo``, ``goto`` and
``replay`` work on it as on steps typed by hand. Each step is recorded in the
background while the next one computes (``run_line(defer=True)``); its
``[step N: ...]`` line is echoed once it is committed, before the next step's
output (``quiet``: only those lines, with the step's key figures, and the summary). The parameters of the steps are
the process command's own, scoped by step (``index.max_lattices=2``); an
unscoped name is accepted when exactly one step has it and is otherwise an error
naming the candidates (the usual rule for shortened names). Without images on
the line, ``process`` continues after the last pipeline step of the current
branch (after a failure, fix the cause and type ``process`` again).

A marker (:data:`MARKER`, JSON) in the session folder records which steps the
process runs made and, at the end of a successful run, ``finished`` and the
summary; ``gonio process --many`` skips the finished sessions.
"""

from __future__ import annotations

import difflib
import json
import shlex
import time
from pathlib import Path

from gonio.core.errors import GonioError
from gonio.shell.command import Command, Context, Outcome
from gonio.shell.params import Param, ParameterError, ParamSet, format_value, scope

#: The steps in order; each is also the scope of its parameters on the process line.
PIPELINE = ("import", "findspots", "index", "rbs", "reindex", "refine", "integrate",
            "symmetry", "scale", "merge", "export")

#: Modules that later steps import, loaded in a thread while the step named here runs:
#: findspots and integrate spend their time in kernels that release the GIL. Indexing
#: (with refinement, scipy.fft, .sparse and .spatial) takes ~0.4 s of CPU to import, and
#: scipy.optimize (scale's minimisers, the resolution fit) ~0.4 s.
PRELOAD = {"findspots": ("gonio.core.indexing", "gonio.core.lattice.rbs"),
           "integrate": ("scipy.optimize", "gonio.core.symmetry", "gonio.core.scaling",
                         "gonio.core.merging", "gonio.core.merge")}

#: In the session folder: the steps made by process runs (``process_steps``), and at the
#: end of a successful run ``finished`` with the summary.
MARKER = "gonio_process.json"

#: What to try when a step fails (parameters named here are checked by the tests).
HINTS = {
    "import": "check the image template (# for the image number) and that the files are readable",
    "findspots": "look at an image (view image=1); try findspots.sigma_strong or "
                 "findspots.min_spot_size",
    "index": "check the beam centre (search_beam_position after findspots) and the header "
             "geometry; index.known_symmetry.space_group and index.known_symmetry.unit_cell "
             "help when the lattice is known",
    "rbs": "rbs.lepage_max_delta widens the metric tolerance; stop_after=index and inspect the "
           "indexing",
    "reindex": "choose another solution of the rbs table by hand (reindex solution=N)",
    "refine": "refine.scan_varying=False keeps a static model; check the indexing RMSDs",
    "integrate": "integrate.d_min limits the resolution; check the profile model (sigma_b, "
                 "sigma_m) of the refined models",
    "symmetry": "symmetry.d_min limits the resolution used to score the Laue groups",
    "scale": "scale.d_min cuts the data where it is weak",
    "merge": "merge.d_min cuts the data where it is weak",
    "export": "check that the output folder is writable",
}


class ProcessError(GonioError):
    pass


class ProcessStepError(ProcessError):
    """A pipeline step failed; the session stays at the last good step."""


#: Scopes accepted on the process line (the steps' aliases too) -> the step.
SCOPES = {**{s: s for s in PIPELINE}, "refine_bravais_settings": "rbs", "find_spots": "findspots"}


def params() -> list[Param]:
    """Process's own parameters; the steps' are resolved by :class:`ProcessParamSet`."""
    return [Param("stop_after", "choice", "export", "the last step to run", choices=PIPELINE),
            Param("quiet", "bool", False, "print one line per step (its number, time and key "
                  "figures, as history shows them) and the summary, instead of every step's "
                  "tables; -q or --quiet on the line is the same")]


#: Words on the process line that stand for quiet=True.
QUIET_FLAGS = ("-q", "--quiet")


DESCRIPTION = (
    "Every parameter of the steps is accepted too, scoped by its step: STEP.NAME=VALUE with "
    "any NAME the step takes (index.max_lattices=2, integrate.d_min=1.8, rbs.lepage_max_delta=3; "
    "help STEP lists them). An unscoped name is taken when exactly one step has it, otherwise "
    "it is an error naming the steps. Without images, process continues after the last "
    "pipeline step of the current branch. docs/process.md; gonio process --many for many "
    "sweeps with Dask.")


class ProcessParamSet(ParamSet):
    """stop_after, and the steps' parameters, each under its step's scope.

    ``STEP.NAME`` resolves NAME as the step itself does (so ``index.max_lattices``
    is ``index.indexing.multiple_lattice_search.max_lattices``); an unscoped name
    must belong to exactly one step (otherwise the error lists the steps: scope it).
    The scoped parameters are not listed (``help STEP`` lists them), so ``help
    NAME`` does not show every step parameter twice.
    """

    def parse(self, tokens, cwd=None):
        return super().parse(["quiet=True" if t in QUIET_FLAGS else t for t in tokens], cwd)

    def resolve(self, name: str) -> Param:
        from gonio.shell.commands import lookup

        if self._pick(name) is not None:
            return super().resolve(name)
        step, dot, rest = name.partition(".")
        if dot and step in SCOPES:
            step = SCOPES[step]
            try:
                inner = lookup(step).paramset.resolve(rest)
            except ParameterError as e:
                raise ParameterError(f"{e} (a parameter of process scoped as {step}.NAME is "
                                     f"one of {step}'s: help {step} lists them)") from None
            return scope(step, inner)[0]
        owners = [step for step in PIPELINE if lookup(step).paramset._pick(name) is not None]
        if len(owners) > 1:
            raise ParameterError(
                f"'{name}' is a parameter of several steps ({', '.join(owners)}): scope it "
                f"with the step it is for, e.g. {_example(owners)}.{name}=...")
        if owners:
            return scope(owners[0], lookup(owners[0]).paramset.resolve(name))[0]
        forms = [f"{step}.{form}" for step in PIPELINE
                 for form in lookup(step).paramset.completion_names()]
        close = difflib.get_close_matches(name, forms + ["stop_after"], n=3, cutoff=0.75)
        close += [f for f in forms if f.endswith("." + name)][:3] if not close else []
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ParameterError(f"unknown parameter '{name}' for process: no step has it.{hint} "
                             "help STEP lists the parameters of a step; give them as "
                             "STEP.NAME=VALUE.")


def _example(steps: list[str]) -> str:
    return next((s for s in ("integrate", "scale", "index") if s in steps), steps[0])


class ProcessCommand(Command):
    """The process command: its parameters are the steps' (built when first needed)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.description = self.description or DESCRIPTION

    @property
    def paramset(self) -> ParamSet:
        if self._paramset is None:
            self._paramset = ProcessParamSet(self.name, params())
        return self._paramset


# -- planning -------------------------------------------------------------------------
def step_arguments(parsed, step: str) -> list[str]:
    """The ``name=value`` words of ``step`` given on the process line, as the step types them."""
    from gonio.shell.commands import lookup

    own = lookup(step).paramset
    words: list[str] = []
    prefix = step + "."
    for full in sorted(parsed.explicit):
        if full.startswith(prefix):
            param = own.by_name[full[len(prefix):]]
            value = format_value(param, parsed.values[full])
            words.append(_quote(f"{own.shortest_name(param)}={value}"))
    return words


def _quote(word: str) -> str:
    return word if word and all(c not in word for c in " \t'\";") else shlex.quote(word)


def _canonical(command: str) -> str | None:
    from gonio.shell.commands import lookup

    name = lookup(command).name
    return "rbs" if name == "refine_bravais_settings" else name if name in PIPELINE else None


def _start(session, images: list[str], stop_after: str) -> int:
    """Index in PIPELINE of the first step to run."""
    if images:
        return 0
    history = session.history
    done = [_canonical(s.command) for s in history.path(history.head)] if history.head else []
    done = [d for d in done if d is not None]
    if not done:
        raise ProcessError("process needs the images to start from, e.g. process "
                           "/data/th_8_2_#####.cbf (a template with # for the image number, or "
                           "the files); without them it continues an earlier process of this "
                           "session, and this session has no pipeline step yet.")
    start = PIPELINE.index(done[-1]) + 1
    if start > PIPELINE.index(stop_after) and not _scaled_uncut(session):
        raise ProcessError(f"The current branch has already run {done[-1]} (step "
                           f"{history.head}); nothing is left to do up to stop_after="
                           f"{stop_after}. Give the images to process again from the start, or "
                           "goto an earlier step first.")
    return start


def _scaled_uncut(session) -> bool:
    """The last pipeline step of the current branch is a scale without d_min (the first of
    process's two): continuing must run the resolution cut before merge, if it cuts."""
    history = session.history
    last = next((s for s in reversed(history.path(history.head)) if _canonical(s.command)),
                None) if history.head else None
    return last is not None and _canonical(last.command) == "scale" and \
        "d_min=" not in last.line and resolution_cut(session.state) is not None


def _best_solution(state) -> int | None:
    """The highest-symmetry recommended rbs solution (xia2 and dials.process take it)."""
    rbs = state.data.get("rbs")
    if not rbs:
        return None
    recommended = [int(n) for n, v in rbs["summary"].items() if v.get("recommended")]
    return max(recommended, default=None)


# -- running --------------------------------------------------------------------------
def run(ctx: Context, parsed) -> Outcome:
    return Outcome(text=run_pipeline(ctx.session, parsed, echo=_echo))


def _echo(text: str) -> None:
    print(text, flush=True)


def run_pipeline(session, parsed, echo=None) -> str:
    """Run the steps; return the summary. ``echo`` (if given) sees each step as it ends."""
    stop_after = parsed.values["stop_after"]
    images = list(parsed.positional)
    start = _start(session, images, stop_after)
    earlier = (read_marker(session.folder) or {}).get("process_steps", [])
    write_marker(session.folder, {"finished": False, "process_steps": earlier})
    steps = PIPELINE[start:PIPELINE.index(stop_after) + 1]
    # continuing after a scale whose resolution cut was not run (killed, or it failed)
    cut_pending = not images and PIPELINE[start - 1] == "scale" and _scaled_uncut(session)
    if cut_pending:
        steps = ("scale",) + steps
    made: list[int] = []
    notes: list[str] = []
    recording = ""  # the step being recorded in the background while the next one computes

    def stop(step: str, error: str):
        good = session.head
        where = (f"step {good} ({session.history.step(good).line})" if good
                 else "the empty start (step 0)")
        write_marker(session.folder, {"finished": False, "failed_at": step,
                                      "process_steps": earlier + made})
        return ProcessStepError(
            f"process stopped at {step}: {error.removeprefix('Error: ')} The session is at "
            f"{where}; the steps before are kept. What to try: {HINTS[step]}. Then type process "
            "(without images) to continue from there, or give the step's parameters on the "
            f"process line as {step}.NAME=VALUE.")

    quiet = parsed.values["quiet"]
    from gonio.shell.commands.history import _metrics_text

    def collect():
        for done in session.recorded():
            if echo:
                echo(f"{done.text}  {_metrics_text(done.metrics)}" if quiet and done.ok
                     else done.text)
            if not done.ok:
                raise stop(recording, done.text)
            made.append(done.step)

    def run_step(step: str, words: list[str]) -> None:
        nonlocal recording
        line = " ".join([step, *words])
        result = session.run_line(line, defer=True)
        collect()
        if echo and not quiet:
            echo(f"gonio> {line}" + (f"\n{result.text}" if result.text else ""))
        if not result.ok:
            raise stop(step, result.text)
        recording = step

    t0 = time.perf_counter()
    for step in steps:
        words = step_arguments(parsed, step)
        if step == "import":
            words = [_quote(w) for w in images] + words
        if step == "reindex" and not any(w.split("=")[0] in ("solution", "change_of_basis_op",
                                                             "space_group", "reference")
                                         for w in words):
            best = _best_solution(session.state)
            if best is None:
                notes.append("rbs recommended no solution: the data stay in the P1 setting.")
                continue
            words.insert(0, f"solution={best}")
        if step in PRELOAD:
            _preload(PRELOAD[step])
        given_d_min = any(w.startswith("d_min=") for w in words)
        if not (step == "scale" and cut_pending and not given_d_min):  # else only its cut
            run_step(step, words)
        if step == "scale" and not given_d_min:
            cut = resolution_cut(session.state)
            if cut is not None:  # as xia2: scale again to the CC1/2 resolution limit
                notes.append(f"resolution cut at {cut:.2f} A, where the fit of CC1/2 falls to "
                             "0.3 (dials.estimate_resolution's cc_half); scale was run again "
                             "with that d_min (give scale.d_min to choose another).")
                run_step(step, [f"d_min={cut:.2f}", *words])
    session.wait_recorded()
    collect()
    seconds = time.perf_counter() - t0
    summary = collect_summary(session, made)
    summary.update({"finished": True, "stop_after": stop_after, "seconds": round(seconds, 2),
                    "images": images, "steps": made, "process_steps": earlier + made})
    write_marker(session.folder, summary)
    return summary_text(summary, notes)


def resolution_cut(state) -> float | None:
    """The high-resolution limit (A) the CC1/2 fit of the scale step in ``state`` suggests,
    when it cuts away data (more than 0.5 % in d); else None."""
    r = (state.data.get("merging_statistics") or {}).get("resolution") or {}
    cut, d_data = r.get("cc_half"), r.get("d_min_data")
    if cut is None or not d_data or cut <= d_data * 1.005:
        return None
    return round(float(cut), 2)


def _preload(modules) -> None:
    """Import ``modules`` in a background thread (a failure is left to the step that needs
    the module, which meets and reports it)."""
    import threading
    from importlib import import_module

    def load():
        for module in modules:
            try:
                import_module(module)
            except Exception:
                pass

    threading.Thread(target=load, name="gonio-preload", daemon=True).start()


# -- summary --------------------------------------------------------------------------
def collect_summary(session, steps: list[int]) -> dict:
    """The figures a crystallographer checks, taken from the steps' metrics and final models."""
    history = session.history
    metrics = {_canonical(history.step(n).command): history.step(n).metrics for n in steps}
    out: dict = {"folder": str(session.folder)}
    crystals = [e.crystal for e in session.state.experiments if e.crystal is not None]
    if crystals:
        out["space_group"] = crystals[0].space_group.hm
        out["unit_cell"] = [round(x, 4) for x in crystals[0].unit_cell.parameters]
    stats = metrics.get("scale") or {}
    merged = metrics.get("merge") or {}
    for key in ("d_min", "completeness", "completeness_outer", "cc_half", "cc_half_outer",
                "i_over_sigma", "i_over_sigma_outer", "multiplicity", "r_meas"):
        value = merged.get(key, stats.get(key))
        if value is not None:
            out[key] = value
    if "refine" in metrics:
        out["refine_rmsd"] = {k: v for k, v in metrics["refine"].items() if k.startswith("rmsd")}
    files = []
    if merged.get("file"):
        files.append(merged["file"])
    files += (metrics.get("export") or {}).get("files", [])
    out["files"] = files
    return out


def summary_text(s: dict, notes: list[str] = ()) -> str:
    steps = s["steps"]
    lines = [f"process: {len(steps)} steps"
             + (f" (steps {steps[0]}-{steps[-1]})" if steps else "")
             + f" up to {s['stop_after']} in {s['seconds']:.1f} s, session in {s['folder']}"]
    lines += [f"Note: {n}" for n in notes]
    if "space_group" in s:
        lines.append(f"  Space group   {s['space_group']}")
        lines.append("  Unit cell     " + " ".join(f"{x:.3f}" if i < 3 else f"{x:.2f}"
                                                    for i, x in enumerate(s["unit_cell"])))
    if s.get("d_min") is not None:
        lines.append(f"  Resolution    {s['d_min']:.2f} A")
    for key, label, fmt in (("completeness", "Completeness", "{:.1f} %"),
                            ("cc_half", "CC1/2", "{:.3f}"), ("i_over_sigma", "I/sigma", "{:.1f}"),
                            ("multiplicity", "Multiplicity", "{:.1f}")):
        if s.get(key) is not None:
            v = s[key] * (100 if key == "completeness" else 1)
            text = fmt.format(v)
            outer = s.get(f"{key}_outer")
            if outer is not None:
                text += " (outer " + fmt.format(outer * (100 if key == "completeness" else 1)) + ")"
            lines.append(f"  {label:<13} {text}")
    if s.get("refine_rmsd"):
        lines.append("  Refined RMSD  " + ", ".join(f"{k}={v:.3g}" for k, v in
                                                    s["refine_rmsd"].items()))
    for f in s.get("files", []):
        lines.append(f"  File          {f}")
    return "\n".join(lines)


def write_marker(folder: str | Path, summary: dict) -> None:
    """Record the state of process runs in the session folder (written atomically)."""
    path = Path(folder) / MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(path)


def read_marker(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["PIPELINE", "MARKER", "params", "run", "run_pipeline", "read_marker"]
