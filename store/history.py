"""The persistent processing history of one folder: a tree of steps.

A processing folder holds ``.gonio/history.sqlite`` (SQLite in WAL mode, see
:mod:`gonio.store.schema`) and ``.gonio/blobs/`` (a :class:`BlobStore`). Every
successful command becomes a step: a child of the step it was computed from
(normally the *head*) whose manifest is that parent's manifest updated with
the artifacts the command changed. ``undo``/``redo``/``goto`` only move the
head; a command run after ``undo`` starts a branch. Steps are removed only
by an explicit ``forget`` of a branch the head does not descend from.

The store deals in bytes: it does not know what an artifact means.

Crash safety: blobs are written (atomically) before the database
transaction that references them, and the step row and the head move are one
transaction, so a process killed at any moment leaves the previous head and
a consistent database (at worst an unreferenced blob file). A write that
fails (disk full, file size limit) raises :class:`WriteFailedError` and
changes nothing.

Several gonio processes may work on one folder at once. Writes take
SQLite's write lock up front (``BEGIN IMMEDIATE``) and wait for each other;
the head lives in the database, shared by all processes. A step is recorded
under the step it was *computed from* (``parent=`` of :meth:`record_step`):
if another process moved the head while the command ran, the step becomes a
new branch from its true parent (the returned :class:`Commit` says so), so
the tree never claims a step came from models it was not computed from.
Readers never wait for a writer (WAL).

Read-only: a session opened with ``read_only=True``, or in a folder that is
not writable, is read through SQLite's read-only mode; ``undo``/``redo``/
``goto`` move a head kept in memory, and recording or forgetting a step
raises :class:`ReadOnlyHistoryError`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, select, update
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from gonio.store.artifacts import SameAs
from gonio.store.blobs import DEFAULT_CACHE_BYTES, BlobStore
from gonio.store.errors import (
    CorruptHistoryError,
    ForgetRefusedError,
    HistoryError,
    NewerHistoryError,
    NoSessionError,
    NoSuchArtifactError,
    NoSuchStepError,
    NothingToRedoError,
    NothingToUndoError,
    ReadOnlyHistoryError,
    WriteFailedError,
)
from gonio.store.layout import DATABASE_NAME, SESSION_DIR
from gonio.store.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Base,
    KeyValueRow,
    SessionRow,
    StepRow,
)

BLOB_DIR = "blobs"
#: How long a write waits for another gonio process holding the database (s).
BUSY_TIMEOUT_S = 60.0
#: ``status`` of a step whose artifacts are missing or damaged (set by repair).
DAMAGED = "damaged"


class _Head:
    """Marker: record the step as a child of whatever the head is at commit time."""


HEAD = _Head()


@dataclass(frozen=True)
class StepInfo:
    """The record of one step (read-only; do not modify its dicts).

    ``params`` are the full effective parameters and ``metrics`` the key
    figures, both as they come back from JSON (tuples become lists).
    ``manifest`` maps every artifact name of the state after the step to its
    blob hash. Times are timezone-aware UTC. ``status`` is ``"ok"``, or
    ``"damaged"`` once ``gonio repair`` found artifacts of it missing or
    altered.
    """

    id: int
    parent_id: int | None
    command: str
    line: str
    params: dict[str, Any]
    status: str
    started: datetime
    finished: datetime
    duration_s: float
    software_version: str
    log: str
    metrics: dict[str, Any]
    manifest: dict[str, str]
    session_id: int


@dataclass(frozen=True)
class Commit:
    """What :meth:`History.record_step` did.

    ``parent`` is the step the new one was recorded under; ``head_before``
    the head just before (different from ``parent`` when another process
    moved the head while the command ran: the step then starts a branch).
    """

    step: int
    parent: int | None
    head_before: int | None

    @property
    def branched(self) -> bool:
        return self.parent != self.head_before


class History:
    """The step tree of one processing folder; open it with :meth:`History.open`.

    Step numbers are the ids users see ("step 7"); ``None`` (or 0 where a
    step number is accepted) is the empty start state, step 0.
    """

    def __init__(
        self,
        folder: Path,
        engine: Engine,
        blobs: BlobStore,
        read_only: bool = False,
        read_only_reason: str = "",
    ):
        self.folder = folder
        self.blobs = blobs
        self.read_only = read_only
        self.read_only_reason = read_only_reason
        self._engine = engine
        self._write_engine = engine.execution_options(gonio_write=True)
        self._steps: dict[int, StepInfo] = {}
        self._children: dict[int | None, list[int]] = {}
        self._max_known = 0
        self._generation = ""
        self._session_id: int | None = None
        self._local_head: int | None | _Head = HEAD  # read-only sessions move this head
        self._local_redo: dict[int | None, int] = {}  # ... and remember their undos here
        #: The head as this object last set it (HEAD: never): a shell compares it with
        #: :attr:`head` to tell that another process moved the session.
        self.last_set_head: int | None | _Head = HEAD
        # Crash tests set this to a callable(stage) run at "blobs_written" and
        # "before_commit" inside record_step.
        self._fault_hook = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        create: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        read_only: bool = False,
    ) -> History:
        """Open the history of processing folder ``folder`` (creating ``.gonio/`` if asked).

        ``cache_bytes`` bounds the artifacts kept in memory. The history is
        opened read-only when asked, or when the session folder is not
        writable (``read_only`` then tells why). Opening reads no step and no
        artifact.
        """
        folder = Path(folder).absolute()
        session_dir = folder / SESSION_DIR
        db_path = session_dir / DATABASE_NAME
        if not db_path.is_file():
            if not create or read_only:
                raise NoSessionError(
                    f"There is no gonio session in {folder} (no {SESSION_DIR}/{DATABASE_NAME}). "
                    "Check the folder name, or start a new session there."
                )
            if not folder.is_dir():
                raise NoSessionError(
                    f"The folder {folder} does not exist. Create it first, or give the "
                    "path of an existing processing folder."
                )
            try:
                session_dir.mkdir(exist_ok=True)
            except OSError as e:
                raise NoSessionError(
                    f"Cannot start a session in {folder}: {e.strerror or e}. Start gonio in a "
                    "folder you can write to."
                ) from None
        reason = ""
        if read_only:
            reason = "opened with --read-only"
        elif not _writable(session_dir, db_path):
            read_only, reason = True, f"the folder {session_dir} is not writable"
        engine = _make_read_only_engine(db_path) if read_only else _make_engine(db_path)
        blobs = BlobStore(session_dir / BLOB_DIR, cache_bytes)
        history = cls(folder, engine, blobs, read_only, reason)
        try:
            with history._database_errors():
                history._check_schema(create and not read_only)
        except BaseException:
            history.close()
            raise
        return history

    def close(self) -> None:
        """Release the database connections (the history stays on disk)."""
        self._engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def database_path(self) -> Path:
        return self.folder / SESSION_DIR / DATABASE_NAME

    @property
    def session_dir(self) -> Path:
        return self.folder / SESSION_DIR

    # ------------------------------------------------------------------ reading

    @property
    def head(self) -> int | None:
        """The current step (``None`` = step 0, the empty start), as shared by all processes."""
        if self.read_only and not isinstance(self._local_head, _Head):
            return self._local_head
        with self._database_errors(), Session(self._engine) as s:
            return _read_head(s)

    def step(self, step_id: int) -> StepInfo:
        """The record of step ``step_id``."""
        if not step_id:
            raise NoSuchStepError(
                "Step 0 is the empty start state of the session; it has no command or "
                "record. Give the number of a step shown by `history`."
            )
        return self._known_step(step_id)

    def manifest(self, step_id: int | None) -> dict[str, str]:
        """Artifact name -> blob hash of the state after ``step_id`` ({} for step 0)."""
        return dict(self.step(step_id).manifest) if step_id else {}

    def load(self, step_id: int | None, name: str) -> bytes:
        """The bytes of artifact ``name`` in the state after ``step_id``."""
        manifest = self.manifest(step_id)
        if name not in manifest:
            have = ", ".join(sorted(manifest)) or "no artifacts"
            raise NoSuchArtifactError(
                f"The state after step {step_id or 0} has no '{name}' (it has {have}). "
                "Run the command that makes it first, or go to a step that has it."
            )
        return self.loader(step_id)(manifest[name])

    def loader(self, step_id: int | None):
        """``load(hash) -> bytes`` for the artifacts of ``step_id``, whose errors name the step.

        A missing or damaged artifact raises :class:`MissingBlobError` or
        :class:`CorruptHistoryError` saying which step and artifact it is.
        """
        info = self.step(step_id) if step_id else None

        def load(blob_hash: str) -> bytes:
            try:
                return self.blobs.get(blob_hash)
            except CorruptHistoryError as e:
                names = [n for n, h in info.manifest.items() if h == blob_hash] if info else []
                what = f"'{names[0]}'" if names else f"{blob_hash[:12]}..."
                raise type(e)(
                    f"Step {step_id} ({info.line if info else ''}): its artifact {what} cannot "
                    f"be read. {e}"
                ) from None

        return load

    def moved_elsewhere(self, head: int | None) -> bool:
        """True when ``head`` is not where this object last put the head: another gonio
        process moved the session since (False when this object never moved it)."""
        return not isinstance(self.last_set_head, _Head) and head != self.last_set_head

    def damage(self, step_id: int) -> str | None:
        """Why ``gonio repair`` marked step ``step_id`` damaged (None: it is not)."""
        if self.step(step_id).status != DAMAGED:
            return None
        with self._database_errors(), Session(self._engine) as s:
            row = s.get(KeyValueRow, _damage_key(step_id))
            return row.value if row else "its artifacts are missing or altered"

    def steps(self) -> list[StepInfo]:
        """All steps, in step-number order."""
        self._refresh()
        return [self._steps[i] for i in sorted(self._steps)]

    def children(self, step_id: int | None) -> list[StepInfo]:
        """The steps made from ``step_id`` (0/None: from the start), oldest first."""
        parent = self._known_step(step_id).id if step_id else None
        self._refresh()
        return [self._steps[i] for i in self._children.get(parent, [])]

    def path(self, step_id: int | None) -> list[StepInfo]:
        """The branch from the start to ``step_id`` inclusive (step 0 excluded)."""
        chain: list[StepInfo] = []
        current = step_id or None
        if current is not None and current not in self._steps:
            self._refresh()  # one read for the whole branch
        while current is not None:
            info = self._known_step(current)
            chain.append(info)
            current = info.parent_id
        return chain[::-1]

    def descendants(self, step_id: int) -> list[int]:
        """``step_id`` and every step made from it (directly or not), in step-number order."""
        self._known_step(step_id)
        self._refresh()
        out, todo = [], [step_id]
        while todo:
            current = todo.pop()
            out.append(current)
            todo.extend(self._children.get(current, []))
        return sorted(out)

    def tree(self) -> list[tuple[StepInfo, int]]:
        """Every step with its branch depth, in display order.

        Depth-first, children oldest first. A step's first child continues its
        line at the same depth; each later child starts a branch one deeper.
        """
        self._refresh()
        out: list[tuple[StepInfo, int]] = []
        stack = [(i, 0 if n == 0 else 1) for n, i in enumerate(self._children.get(None, []))]
        stack.reverse()
        while stack:
            step_id, depth = stack.pop()
            out.append((self._steps[step_id], depth))
            kids = self._children.get(step_id, [])
            stack.extend((k, depth + (n > 0)) for n, k in reversed(list(enumerate(kids))))
        return out

    # ------------------------------------------------------------------ writing

    def commit_step(self, *args, **kwargs) -> int:
        """Record a successful command, make it the head and return its number: the
        arguments of :meth:`record_step` (which also says whether the step branched)."""
        return self.record_step(*args, **kwargs).step

    def record_step(
        self,
        command: str,
        line: str,
        params: Mapping[str, Any],
        artifacts: Mapping[str, bytes | SameAs | None],
        log: str,
        metrics: Mapping[str, Any],
        duration_s: float,
        software_version: str,
        parent: int | None | _Head = HEAD,
    ) -> Commit:
        """Record a successful command as a child of ``parent`` and make it the head.

        ``parent`` is the step the command was computed from (0/None: the
        empty start); by default the head at the moment of the commit.
        ``artifacts`` are the changed artifacts of the new state relative to
        ``parent`` (``None`` removes a name; :class:`~gonio.store.artifacts.SameAs`
        names an artifact of ``parent`` whose blob it shares); the others are
        inherited from it. ``params`` and ``metrics`` must be JSON-serialisable
        (numpy scalars/arrays and paths are converted).
        """
        self.require_writable("record a step")
        for name, data in artifacts.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"artifact names must be non-empty strings, not {name!r}")
            if data is not None and not isinstance(data, bytes | bytearray | memoryview | SameAs):
                raise TypeError(
                    f"artifact {name!r} must be bytes, SameAs or None, not {type(data).__name__}"
                )
        params_json = _json_roundtrip(params, "parameters")
        metrics_json = _json_roundtrip(metrics, "metrics")
        same = {n: d.name for n, d in artifacts.items() if isinstance(d, SameAs)}
        with self._write_errors(command):
            hashes = {n: None if d is None else self.blobs.put(d) for n, d in artifacts.items()
                      if n not in same}
        self._fault("blobs_written")
        finished = datetime.now(UTC)
        started = finished - timedelta(seconds=float(duration_s))
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            head_before = _read_head(s)
            parent_id = head_before if isinstance(parent, _Head) else (parent or None)
            if parent_id is not None and s.get(StepRow, parent_id) is None:
                raise NoSuchStepError(
                    f"Step {parent_id}, which this {command} was computed from, is no longer "
                    "in the history (another gonio process forgot it while the command ran). "
                    "Nothing was recorded; run the command again from a step `history` shows."
                )
            # a clean-up (gc) in another process may have removed a blob that was
            # already there when it was put: write it again, under the lock gc needs
            with self._write_errors(command):
                for name, blob_hash in hashes.items():
                    if blob_hash is not None and not self.blobs.path(blob_hash).is_file():
                        self.blobs.write(blob_hash, bytes(artifacts[name]))
            manifest = self._manifest_in(s, parent_id)
            missing = sorted(ref for ref in same.values() if ref not in manifest)
            if missing:
                raise CorruptHistoryError(
                    f"This {command} shares the artifact {missing[0]} of step {parent_id}, "
                    "which that step does not have. Nothing was recorded; run `gonio check`, "
                    "and run the command again.")
            shared = {name: manifest[ref] for name, ref in same.items()}
            for name, blob_hash in [*hashes.items(), *shared.items()]:
                if blob_hash is None:
                    manifest.pop(name, None)
                else:
                    manifest[name] = blob_hash
            session_id = self._session_id
            if session_id is None or s.get(SessionRow, session_id) is None:
                row = SessionRow(
                    created=_naive_utc(finished),
                    folder=str(self.folder),
                    software_version=software_version,
                )
                s.add(row)
                s.flush()
                session_id = row.id
            step = StepRow(
                parent_id=parent_id,
                session_id=session_id,
                command=command,
                line=line,
                params=params_json,
                status="ok",
                started=_naive_utc(started),
                finished=_naive_utc(finished),
                duration_s=float(duration_s),
                software_version=software_version,
                log=log,
                metrics=metrics_json,
                manifest=manifest,
            )
            s.add(step)
            s.flush()
            step_id = step.id
            _write_head(s, step_id)
            self._fault("before_commit")
        self._session_id = session_id
        self.last_set_head = step_id
        self._refresh()
        return Commit(step_id, parent_id, head_before)

    def undo(self) -> int | None:
        """Move the head to its parent and return the new head; ``redo`` comes back here."""
        if self.read_only:
            head = self.head
            if head is None:
                raise NothingToUndoError(_NOTHING_TO_UNDO)
            self._local_head = self._known_step(head).parent_id
            self._local_redo[self._local_head] = head
            return self._local_head
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            head = _read_head(s)
            if head is None:
                raise NothingToUndoError(_NOTHING_TO_UNDO)
            parent = self._step_in(s, head).parent_id
            _write_kv(s, _redo_key(parent), str(head))
            _write_head(s, parent)
        self.last_set_head = parent
        return parent

    def redo(self) -> int:
        """Move the head to the child it was left from by undo (else the newest child)."""
        if self.read_only:
            head = self.head
            kids = [c.id for c in self.children(head)]
            if not kids:
                raise NothingToRedoError(_nothing_to_redo(head))
            remembered = self._local_redo.get(head)
            self._local_head = remembered if remembered in kids else kids[-1]
            return self._local_head
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            head = _read_head(s)
            kids = list(s.scalars(select(StepRow.id).where(_parent_is(head)).order_by(StepRow.id)))
            if not kids:
                raise NothingToRedoError(_nothing_to_redo(head))
            remembered = s.get(KeyValueRow, _redo_key(head))
            target = (
                int(remembered.value) if remembered and int(remembered.value) in kids else kids[-1]
            )
            _write_head(s, target)
        self.last_set_head = target
        return target

    def goto(self, step_id: int | None) -> int | None:
        """Make ``step_id`` (0/None: the empty start) the head and return it.

        Going back along the current branch remembers the way, so ``redo``
        retraces it step by step.
        """
        target = self._known_step(step_id).id if step_id else None
        if self.read_only:
            self._local_head = target
            return target
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            if target is not None and s.get(StepRow, target) is None:  # forgotten meanwhile
                self._refresh(s)
                raise NoSuchStepError(_no_step_message(target, sorted(self._steps)))
            old = _read_head(s)
            if old is not None:
                self._refresh(s)
                line = [info.id for info in self.path(old)]
                if target is None or target in line:
                    below = line[line.index(target) + 1 :] if target is not None else line
                    upper = [target] + below[:-1]
                    for parent, child in zip(upper, below):
                        _write_kv(s, _redo_key(parent), str(child))
            _write_head(s, target)
        self.last_set_head = target
        return target

    def forget(self, step_id: int) -> list[int]:
        """Remove step ``step_id`` and every step made from it; return their numbers.

        Refused (:class:`ForgetRefusedError`) when the head is one of them:
        the current state must never lose its history. The artifacts stay on
        disk until ``gonio gc`` removes those no remaining step uses.
        """
        self.require_writable("forget steps")
        if not step_id:
            raise ForgetRefusedError(
                "Step 0 is the start of every branch and cannot be forgotten. Give the first "
                "step of the branch to drop (`history` shows the tree)."
            )
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            self._refresh(s)
            if step_id not in self._steps:
                raise NoSuchStepError(_no_step_message(step_id, sorted(self._steps)))
            head = _read_head(s)
            line = [info.id for info in self.path(head)] if head else []
            if step_id in line:
                where = "is the current step" if step_id == head else (
                    f"is on the current branch (the current step {head} was made from it)"
                )
                raise ForgetRefusedError(
                    f"Step {step_id} {where}; forgetting it would drop the history of the "
                    f"state you are working on. Go to another branch first (`goto N`; "
                    f"`history` shows the tree), then forget {step_id}."
                )
            drop = self.descendants(step_id)
            s.execute(delete(KeyValueRow).where(KeyValueRow.key.in_(
                [_redo_key(i) for i in drop] + [_damage_key(i) for i in drop])))
            for key, value in s.execute(select(KeyValueRow.key, KeyValueRow.value).where(
                    KeyValueRow.key.like("redo:%"))).all():
                if value and int(value) in drop:
                    s.execute(delete(KeyValueRow).where(KeyValueRow.key == key))
            s.execute(delete(StepRow).where(StepRow.id.in_(drop)))
            _bump_generation(s)
        self._refresh()
        return drop

    def mark_damaged(self, step_id: int, reason: str | None) -> None:
        """Mark step ``step_id`` damaged with ``reason`` (None: intact again). For repair."""
        self.require_writable("mark steps")
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            s.execute(update(StepRow).where(StepRow.id == step_id).values(
                status="ok" if reason is None else DAMAGED))
            if reason is None:
                s.execute(delete(KeyValueRow).where(KeyValueRow.key == _damage_key(step_id)))
            else:
                _write_kv(s, _damage_key(step_id), reason)
            _bump_generation(s)
        self._refresh()

    def set_head(self, step_id: int | None) -> None:
        """Move the head without remembering a redo path (for repair and copy)."""
        self.require_writable("move the head")
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            _write_head(s, step_id)
        self.last_set_head = step_id

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the database write lock: no step can be committed meanwhile (for gc)."""
        self.require_writable("clean up")
        with self._database_errors(), self._write_engine.begin():
            yield

    # ------------------------------------------------------------------ internals

    def require_writable(self, what: str) -> None:
        """Raise :class:`ReadOnlyHistoryError` (saying ``what`` cannot be done) if read-only."""
        if self.read_only:
            raise ReadOnlyHistoryError(
                f"This session is read-only ({self.read_only_reason}), so gonio cannot {what} "
                "in it. history, show, diff, goto and save (to another folder) work; to run "
                f"commands from here, copy the session first: gonio copy {self.folder} NEWFOLDER."
            )

    def _check_schema(self, create: bool) -> None:
        with self._engine.connect() as conn:
            app_id, version, n_objects = _identify(conn)
        if app_id == APPLICATION_ID:
            _check_version(version, self.database_path)
            return
        if app_id != 0 or n_objects:
            raise CorruptHistoryError(
                f"{self.database_path} is an SQLite database but not a gonio history. "
                f"Move it (or the whole {SESSION_DIR} folder) aside to start a new session here."
            )
        if not create:
            raise NoSessionError(f"The gonio history {self.database_path} is empty.")
        with self._write_engine.begin() as conn:
            app_id, version, n_objects = _identify(conn)  # another process may have won
            if app_id == APPLICATION_ID:
                _check_version(version, self.database_path)
                return
            Base.metadata.create_all(conn)
            conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(KeyValueRow.__table__.insert().values(key="head", value=""))

    def _refresh(self, s: Session | None = None) -> None:
        """Read the steps committed (by any process) since the last read.

        When steps were forgotten or re-marked (the ``generation`` value
        changed), everything is read again.
        """
        if s is None:
            with self._database_errors(), Session(self._engine) as s:
                self._refresh(s)
            return
        generation = s.scalar(select(KeyValueRow.value).where(KeyValueRow.key == "generation"))
        if (generation or "") != self._generation:
            self._steps, self._children, self._max_known = {}, {}, 0
            self._generation = generation or ""
        query = select(StepRow).where(StepRow.id > self._max_known).order_by(StepRow.id)
        for row in s.scalars(query):
            info = _step_info(row)
            self._steps[info.id] = info
            self._children.setdefault(info.parent_id, []).append(info.id)
            self._max_known = info.id

    def _known_step(self, step_id: int) -> StepInfo:
        """One step's record, read alone if not known yet (opening reads no other step)."""
        info = self._steps.get(step_id)
        if info is None:
            with self._database_errors(), Session(self._engine) as s:
                row = s.get(StepRow, step_id) if isinstance(step_id, int) else None
                if row is None:
                    self._refresh(s)
                    raise NoSuchStepError(_no_step_message(step_id, sorted(self._steps)))
                info = self._steps[step_id] = _step_info(row)
        return info

    def _step_in(self, s: Session, step_id: int) -> StepInfo:
        if step_id not in self._steps:
            self._refresh(s)
        return self._steps[step_id]

    def _manifest_in(self, s: Session, step_id: int | None) -> dict[str, str]:
        if step_id is None:
            return {}
        row = s.get(StepRow, step_id)  # from the database: another process may have changed it
        return dict(row.manifest)

    def _fault(self, stage: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(stage)

    @contextmanager
    def _write_errors(self, command: str) -> Iterator[None]:
        """An artifact that cannot be written: a clear error, nothing recorded."""
        try:
            yield
        except OSError as e:
            raise WriteFailedError(
                f"Could not store the results of {command} in {self.blobs.folder}: "
                f"{e.strerror or e}. The step was not recorded and the session is at the step "
                "it was before. Free disk space (`gonio gc` removes artifacts no step uses), "
                "check the folder is writable, and run the command again."
            ) from e

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Turn SQLite failures into clear user-facing errors."""
        try:
            yield
        except OperationalError as e:
            raise HistoryError(
                f"Could not use the history database {self.database_path}: {e.orig}. "
                "Check that the folder is writable and the disk not full; if another "
                "gonio process is busy with this folder, wait for it and try again. "
                "Nothing was recorded."
            ) from e
        except DatabaseError as e:
            raise CorruptHistoryError(
                f"{self.database_path} is not a readable gonio history ({e.orig}). Run "
                "`gonio check` to see what is damaged and `gonio repair` to keep every step "
                "that can be read; or restore it from a backup."
            ) from e


# ---------------------------------------------------------------------- helpers

_NOTHING_TO_UNDO = (
    "Nothing to undo: the session is at its start (step 0). Use `history` to see the steps "
    "and `goto N` to go to one."
)


def _nothing_to_redo(head: int | None) -> str:
    where = f"step {head}" if head else "the start of the session (step 0)"
    return (
        f"Nothing to redo: no step was made from {where}. Use `history` to see the steps "
        "and `goto N` to go to one."
    )


def _writable(session_dir: Path, db_path: Path) -> bool:
    return os.access(session_dir, os.W_OK) and (
        not db_path.exists() or os.access(db_path, os.W_OK)
    )


def _make_engine(db_path: Path) -> Engine:
    """SQLite engine: WAL, full sync, foreign keys, busy wait; BEGIN IMMEDIATE for writes."""

    def connect():
        return sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)

    engine = create_engine(URL.create("sqlite", database=str(db_path)), creator=connect)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        write = conn.get_execution_options().get("gonio_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _make_read_only_engine(db_path: Path) -> Engine:
    """SQLite engine that cannot write: ``mode=ro``; ``immutable=1`` where the folder forbids
    even SQLite's shared-memory index (a WAL database in a folder nobody may write to)."""
    uri = db_path.as_uri()

    def connect():
        con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                              check_same_thread=False)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            con.close()
            con = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
        return con

    engine = create_engine(URL.create("sqlite", database=str(db_path)), creator=connect)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


def _identify(conn) -> tuple[int, int, int]:
    app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
    version = conn.exec_driver_sql("PRAGMA user_version").scalar()
    n_objects = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
    return app_id, version, n_objects


def _check_version(version: int, db_path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise NewerHistoryError(
            f"The history {db_path} was written by a newer gonio (history format "
            f"{version}; this gonio reads up to format {SCHEMA_VERSION}). Upgrade gonio to "
            "continue this session."
        )
    if version < SCHEMA_VERSION:
        raise CorruptHistoryError(
            f"The history {db_path} has format {version}, which no gonio release wrote "
            f"(this gonio reads format {SCHEMA_VERSION}). Move the {SESSION_DIR} folder aside "
            "to start a new session."
        )


def _read_head(s: Session) -> int | None:
    value = s.scalar(select(KeyValueRow.value).where(KeyValueRow.key == "head"))
    return int(value) if value else None


def _write_head(s: Session, step_id: int | None) -> None:
    _write_kv(s, "head", "" if step_id is None else str(step_id))


def _write_kv(s: Session, key: str, value: str) -> None:
    s.merge(KeyValueRow(key=key, value=value))


def _bump_generation(s: Session) -> None:
    """Tell every process that steps were removed or re-marked (their caches reload)."""
    old = s.scalar(select(KeyValueRow.value).where(KeyValueRow.key == "generation"))
    _write_kv(s, "generation", str(int(old or 0) + 1))


def _redo_key(step_id: int | None) -> str:
    return f"redo:{step_id or 0}"


def _damage_key(step_id: int) -> str:
    return f"damage:{step_id}"


def _parent_is(step_id: int | None):
    return StepRow.parent_id.is_(None) if step_id is None else StepRow.parent_id == step_id


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def _step_info(row: StepRow) -> StepInfo:
    return StepInfo(
        id=row.id,
        parent_id=row.parent_id,
        command=row.command,
        line=row.line,
        params=row.params,
        status=row.status,
        started=row.started.replace(tzinfo=UTC),
        finished=row.finished.replace(tzinfo=UTC),
        duration_s=row.duration_s,
        software_version=row.software_version,
        log=row.log,
        metrics=row.metrics,
        manifest=row.manifest,
        session_id=row.session_id,
    )


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} cannot be stored as JSON")


def _json_roundtrip(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``values`` as they will read back from the database (validated before anything is written)."""
    try:
        return json.loads(json.dumps(dict(values), default=_json_default))
    except (TypeError, ValueError) as e:
        raise TypeError(f"the step {what} cannot be recorded: {e}") from e


def _no_step_message(step_id: Any, known: list[int]) -> str:
    if not known:
        return (
            f"There is no step {step_id}: this session has no steps yet (only step 0, the "
            "empty start)."
        )
    return (
        f"There is no step {step_id}. This session has steps {_ranges(known)} (and 0, the "
        "empty start); `history` shows them."
    )


def _ranges(numbers: list[int]) -> str:
    """'1-4, 7, 9-10' for [1, 2, 3, 4, 7, 9, 10] (sorted input)."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
