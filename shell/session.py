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

``run_line(line, defer=True)`` (what ``process`` uses) records the step in a
background thread while the caller goes on: the record starts when the next
command starts computing (after its line is parsed), which computes on the
state in memory, and its own record waits for the one before (its parent). A step counts only once its artifacts and row are committed, as
always; anything else that touches the history (:attr:`Session.history`,
:attr:`Session.head`, :meth:`close`) first waits for the step being recorded,
and :meth:`Session.recorded` hands out how each deferred record ended.

In a folder without a session the history database is created when the first
step is recorded (not when the session starts): the first command computes
meanwhile, and a session that records nothing leaves no ``.gonio`` behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gonio.core.errors import GonioError
from gonio.shell.command import Command, Context, Outcome
from gonio.shell.commands import COMMANDS, lookup
from gonio.shell.params import ParameterError, split_line

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future, ThreadPoolExecutor

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
    metrics: dict | None = None  # the key figures of the step recorded


@dataclass
class _Recording:
    """A step computed and being recorded in the background (``run_line(defer=True)``):
    its record ``job`` starts (``future``) when the next command starts computing, or
    when anything waits for it."""

    job: Callable[[], object]
    future: Future | None
    state: object
    command: str
    duration_s: float
    metrics: dict


class Session:
    """The session kept in ``folder/.gonio`` (created on first use)."""

    def __init__(self, folder: str | os.PathLike = ".", progress=None, nproc: int = 0,
                 read_only: bool = False):
        self.folder = Path(folder).absolute()
        self._opened = None
        self._open_lock = threading.Lock()
        # a new session has nothing to read: its database is created (and SQLAlchemy,
        # ~0.3 s of CPU, imported) when the first step is recorded, which process does in
        # the background while the next step computes
        self._new = not read_only and _new_session_folder(self.folder)
        if not self._new:
            self._opened = _open_history(self.folder, read_only)
        self.progress = progress or (lambda what, done, total: None)
        self.nproc = nproc or (os.cpu_count() or 1)
        self._states: OrderedDict[int, object] = OrderedDict()
        self._recording: _Recording | None = None
        self._recorded: list[Result] = []
        self._writer: ThreadPoolExecutor | None = None

    def close(self) -> None:
        self.wait_recorded()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        if self._opened is not None:  # (a new session that recorded nothing has no database)
            self._opened.close()

    @property
    def _history(self):
        """The history database (for a new session: created on first use, by whichever
        thread needs it first; its error, if any, is that caller's)."""
        if self._opened is None:
            with self._open_lock:
                if self._opened is None:
                    self._opened = _open_history(self.folder)
        return self._opened

    def _opening_new(self) -> bool:
        """True for a new session whose database is not created yet: it has no step and
        its folder is writable (checked when the session started)."""
        return self._new and self._opened is None

    @property
    def history(self):
        """The step history (after the step being recorded in the background, if any)."""
        self.wait_recorded()
        return self._history

    # -- recording in the background ---------------------------------------------
    def wait_recorded(self) -> None:
        """Wait for the step being recorded in the background (if any); how it ended
        goes to :meth:`recorded`."""
        rec = self._recording
        if rec is None:
            return
        self._start_recording()
        try:
            commit = rec.future.result()
        except GonioError as e:
            self._recording = None
            self._recorded.append(Result(False, _paragraph(e)))
            return
        except Exception as e:  # a bug while encoding or recording: nothing was committed
            self._recording = None
            self._recorded.append(Result(False, _internal_error(e, self.folder)))
            return
        self._recording = None
        self._remember(commit.step, rec.state)
        notice = (f"Note: another gonio process moved the session to step "
                  f"{commit.head_before or 0}; this step is recorded as a branch from step "
                  f"{commit.parent or 0}.\n") if commit.branched else ""
        self._recorded.append(Result(True, notice + f"[step {commit.step}: {rec.command}, "
                                     f"{rec.duration_s:.2f} s]", commit.step, rec.metrics))

    def _start_recording(self) -> None:
        """Start the record of the step computed last, if it waits to start."""
        rec = self._recording
        if rec is not None and rec.future is None:
            rec.future = self._writer.submit(rec.job)

    def recorded(self) -> list[Result]:
        """How the deferred records that ended since the last call ended, oldest first: the
        step's line ``[step N: command, T s]`` and its number, or the error (not recorded)."""
        out, self._recorded = self._recorded, []
        return out

    # -- state ------------------------------------------------------------------
    @property
    def head(self) -> int | None:
        if self._opening_new():
            return None
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
            history = self.history
            manifest = history.manifest(key)
            where = f"step {key} ({history.step(key).line[:40]})"
            state = decode_state(manifest, history.loader(key), where)
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
        """The current state (that of the step being recorded in the background, if any)."""
        if self._recording is not None:
            return self._recording.state
        return self.state_at(self.head)

    # -- running ------------------------------------------------------------------
    def run_line(self, line: str, defer: bool = False) -> Result:
        """Run one command line; never raises for user errors.

        ``defer``: a step is recorded in the background: the result's text has no
        ``[step N: ...]`` line and no step number (:meth:`recorded` gives them once it
        is committed), and a deferred step that follows computes meanwhile.
        """
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
            if parsed.positional and not command.takes_words:
                hint = command.stray_hint.format(word=parsed.positional[0])
                raise ParameterError(
                    f"{command.name} does not take {' '.join(parsed.positional)!r}: its "
                    f"parameters are name=value words ('help {command.name}' lists them)"
                    + (f"; {hint}" if hint else "."))
            return self._run(command, parsed, line, defer and command.step)
        except GonioError as e:
            return Result(False, _paragraph(e))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a bug: say so plainly; nothing was committed
            return Result(False, _internal_error(e, self.folder))

    def _run(self, command: Command, parsed, line: str, defer: bool = False) -> Result:
        fresh = self._opening_new()  # a new session, its database not created yet
        if command.step and not fresh:
            self._history.require_writable(f"run {command.name}")
        base = self._recording if defer else None
        notice = ""
        if base is None:  # from the head in the database
            head = self.head
            if command.step and not fresh and self._history.moved_elsewhere(head):
                notice = (f"Note: another gonio process moved the session to step {head or 0} "
                          f"since your last command; this {command.name} runs on step "
                          f"{head or 0}.\n")
            load = lambda: self.state_at(head)  # noqa: E731
        else:  # from the step being recorded meanwhile (its record is this one's parent)
            load = lambda: base.state  # noqa: E731
        ctx = Context(load_state=load, cwd=str(self.folder), progress=self.progress,
                      nproc=self.nproc, session=self)
        t0 = time.perf_counter()
        # the record of the step before runs while this one computes (not while its line
        # was parsed and its modules imported: those hold the GIL as a record does)
        self._start_recording()
        try:
            outcome: Outcome = command.function()(ctx, parsed)
        finally:
            if base is not None:
                self.wait_recorded()
        duration = time.perf_counter() - t0
        if outcome.state is None or not command.step:
            return Result(True, outcome.text)
        from gonio.store.state import freeze

        freeze(outcome.state)
        if base is not None:
            previous = self._recorded[-1]  # how the record of the step computed from ended
            if not previous.ok:  # that step is not in the session: neither is this one
                return Result(False, f"Error: {command.name} was not recorded: the step it was "
                              "computed from could not be recorded (its error is above). The "
                              "session is as before.")
            parent = previous.step
        else:
            parent = head
        record = self._record_job(command.name, line, parsed, ctx.state, outcome, duration,
                                  parent)
        text = outcome.text.rstrip()
        if defer:
            if self._writer is None:
                from concurrent.futures import ThreadPoolExecutor

                self._writer = ThreadPoolExecutor(1, thread_name_prefix="gonio-record")
            self._recording = _Recording(record, None, outcome.state, command.name, duration,
                                         outcome.metrics)
            return Result(True, notice + text)
        commit = record()
        step = commit.step
        self._remember(step, outcome.state)
        if commit.branched:
            notice += (f"Note: another gonio process moved the session to step "
                       f"{commit.head_before or 0}; this step is recorded as a branch from step "
                       f"{head or 0}.\n")
        return Result(True, notice + (text + "\n" if text else "") + f"[step {step}: "
                      f"{command.name}, {duration:.2f} s]", step, outcome.metrics)

    def _record_job(self, name: str, line: str, parsed, old, outcome: Outcome,
                    duration: float, parent: int | None):
        """``record() -> Commit``: encode what changed from ``old`` and commit the step."""
        params = dict(parsed.values)
        if parsed.positional:
            params["_positional"] = list(parsed.positional)

        def record():
            from gonio.store.state import encode_changes

            return self._history.record_step(
                command=name, line=line, params=params,
                artifacts=encode_changes(old, outcome.state), log=outcome.text,
                metrics=outcome.metrics, duration_s=duration,
                software_version=software_version(), parent=parent)

        return record


def _new_session_folder(folder: Path) -> bool:
    """True for an existing, writable folder that holds no session yet."""
    from gonio.store.layout import DATABASE_NAME, SESSION_DIR

    return (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
            and not (folder / SESSION_DIR / DATABASE_NAME).exists())


#: Opens in this process one at a time (two sessions of one new folder: the second
#: finds the database the first created).
_OPEN_LOCK = threading.Lock()


def _open_history(folder: Path, read_only: bool = False):
    from gonio.store.history import History

    with _OPEN_LOCK:
        return History.open(folder, read_only=read_only)


def _save_traceback(folder: Path) -> str:
    """Write the traceback of the exception being handled beside the history, if possible."""
    import traceback

    log = folder / ".gonio" / "last_error.txt"
    try:
        log.write_text(traceback.format_exc())
    except OSError:  # read-only folder or full disk: show it instead
        return "The traceback follows; please report it.\n" + traceback.format_exc()
    return f"The traceback is in {log}; please report it."


def _internal_error(e: Exception, folder: Path) -> str:
    """A bug: said plainly; nothing was committed."""
    return (f"Error: internal error in gonio ({type(e).__name__}: {e}). Nothing was recorded; "
            f"the session is as before. {_save_traceback(folder)}")


def _paragraph(e: Exception) -> str:
    text = " ".join(str(e).split()) if "\n\n" not in str(e) else str(e)
    return f"Error: {text}"


__all__ = ["Session", "Result", "COMMANDS"]
