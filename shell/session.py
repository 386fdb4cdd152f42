"""A gonio session: the history of one processing folder and the command runner.

Running a command line:

1. split and look up the command, parse its parameters (nothing runs if
   they are wrong),
2. take the current state (the head step's experiments and tables),
3. call the command's function,
4. on success, commit one step atomically (command, full effective
   parameters, changed artifacts, log, key figures, timing, version),
5. on failure, nothing changes: a :class:`GonioError` becomes one clear
   paragraph and the state and history stay as they were.

Recent states stay in memory (keyed by step number) so undo and goto are
instant.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from gonio.core.errors import GonioError
from gonio.shell.command import Command, Context, Outcome
from gonio.shell.commands import COMMANDS, lookup
from gonio.shell.params import split_line

STATE_CACHE_SIZE = 8


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gonio {version('gonio')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "gonio (source)"


@dataclass
class Result:
    ok: bool
    text: str
    step: int | None = None


class Session:
    """The session kept in ``folder/.gonio`` (created on first use)."""

    def __init__(self, folder: str | os.PathLike = ".", progress=None, nproc: int = 0,
                 read_only: bool = False):
        from gonio.store.history import History

        self.folder = Path(folder).absolute()
        self.history = History.open(self.folder, read_only=read_only)
        self.progress = progress or (lambda what, done, total: None)
        self.nproc = nproc or (os.cpu_count() or 1)
        self._states: OrderedDict[int, object] = OrderedDict()

    def close(self) -> None:
        self.history.close()

    # -- state ------------------------------------------------------------------
    @property
    def head(self) -> int | None:
        return self.history.head

    def state_at(self, step: int | None):
        from gonio.store.state import State, decode_state

        key = step or 0
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        if not key:
            state = State()
        else:
            manifest = self.history.manifest(key)
            where = f"step {key} ({self.history.step(key).line[:40]})"
            state = decode_state(manifest, self.history.loader(key), where)
        self._remember(key, state)
        return state

    def forget_states(self, steps) -> None:
        """Drop the kept states of forgotten steps."""
        for step in steps:
            self._states.pop(step, None)

    def _remember(self, key: int, state) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > STATE_CACHE_SIZE:
            self._states.popitem(last=False)

    @property
    def state(self):
        return self.state_at(self.head)

    # -- running ------------------------------------------------------------------
    def run_line(self, line: str) -> Result:
        """Run one command line; never raises for user errors."""
        line = line.strip()
        if not line or line.startswith("#"):
            return Result(True, "")
        try:
            words = split_line(line)
            name, args = words[0], words[1:]
            if len(args) == 1 and args[0] in ("-h", "--help", "help"):
                return self.run_line(f"help {name}")
            command = lookup(name)
            parsed = command.paramset.parse(args, cwd=self.folder)
            return self._run(command, parsed, line)
        except GonioError as e:
            return Result(False, _paragraph(e))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a bug: say so plainly; nothing was committed
            return Result(False, f"Error: internal error in gonio ({type(e).__name__}: {e}). "
                          f"Nothing was recorded; the session is as before. "
                          f"{_save_traceback(self.folder)}")

    def _run(self, command: Command, parsed, line: str) -> Result:
        if command.step:
            self.history.require_writable(f"run {command.name}")
        head = self.head
        notice = ""
        if command.step and self.history.moved_elsewhere(head):
            notice = (f"Note: another gonio process moved the session to step {head or 0} "
                      f"since your last command; this {command.name} runs on step {head or 0}.\n")
        ctx = Context(load_state=lambda: self.state_at(head), cwd=str(self.folder),
                      progress=self.progress, nproc=self.nproc, session=self)
        t0 = time.perf_counter()
        outcome: Outcome = command.function()(ctx, parsed)
        duration = time.perf_counter() - t0
        if outcome.state is None or not command.step:
            return Result(True, outcome.text)
        from gonio.store.state import encode_changes

        artifacts = encode_changes(ctx.state, outcome.state)
        params = dict(parsed.values)
        if parsed.positional:
            params["_positional"] = list(parsed.positional)
        commit = self.history.record_step(
            command=command.name, line=line, params=params, artifacts=artifacts,
            log=outcome.text, metrics=outcome.metrics, duration_s=duration,
            software_version=software_version(), parent=head,
        )
        step = commit.step
        self._remember(step, outcome.state)
        if commit.branched:
            notice += (f"Note: another gonio process moved the session to step "
                       f"{commit.head_before or 0}; this step is recorded as a branch from step "
                       f"{head or 0}.\n")
        text = outcome.text.rstrip()
        return Result(True, notice + (text + "\n" if text else "") + f"[step {step}: "
                      f"{command.name}, {duration:.2f} s]", step)


def _save_traceback(folder: Path) -> str:
    """Write the traceback of the exception being handled beside the history, if possible."""
    import traceback

    log = folder / ".gonio" / "last_error.txt"
    try:
        log.write_text(traceback.format_exc())
    except OSError:  # read-only folder or full disk: show it instead
        return "The traceback follows; please report it.\n" + traceback.format_exc()
    return f"The traceback is in {log}; please report it."


def _paragraph(e: Exception) -> str:
    text = " ".join(str(e).split()) if "\n\n" not in str(e) else str(e)
    return f"Error: {text}"


__all__ = ["Session", "Result", "COMMANDS"]
