"""The persistent processing history of one folder: a tree of steps.

A processing folder holds ``.gonio/history.sqlite`` (SQLite in WAL mode, see
:mod:`gonio.store.schema`) and ``.gonio/blobs/`` (a :class:`BlobStore`). Every
successful command becomes a step: a child of the current *head* whose
manifest is the parent's manifest updated with the artifacts the command
changed. ``undo``/``redo``/``goto`` only move the head; a command run after
``undo`` starts a branch; nothing is ever deleted.

The store deals in bytes: it does not know what an artifact means.

Crash safety: blobs are written (atomically) before the database
transaction that references them, and the step row and the head move are one
transaction, so a process killed at any moment leaves the previous head and
a consistent database (at worst an unreferenced blob file). Several gonio
processes may work on one folder at once: writes take SQLite's write lock
up front (``BEGIN IMMEDIATE``) and wait for each other, and the head lives
in the database, so commits from any process extend the same tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from gonio.store.blobs import DEFAULT_CACHE_BYTES, BlobStore
from gonio.store.errors import (
    CorruptHistoryError,
    HistoryError,
    NewerHistoryError,
    NoSessionError,
    NoSuchArtifactError,
    NoSuchStepError,
    NothingToRedoError,
    NothingToUndoError,
)
from gonio.store.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Base,
    KeyValueRow,
    SessionRow,
    StepRow,
)

SESSION_DIR = ".gonio"
DATABASE_NAME = "history.sqlite"
BLOB_DIR = "blobs"
#: How long a write waits for another gonio process holding the database (s).
BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class StepInfo:
    """The record of one step (read-only; do not modify its dicts).

    ``params`` are the full effective parameters and ``metrics`` the key
    figures, both as they come back from JSON (tuples become lists).
    ``manifest`` maps every artifact name of the state after the step to its
    blob hash. Times are timezone-aware UTC.
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


class History:
    """The step tree of one processing folder; open it with :meth:`History.open`.

    Step numbers are the ids users see ("step 7"); ``None`` (or 0 where a
    step number is accepted) is the empty start state, step 0.
    """

    def __init__(self, folder: Path, engine: Engine, blobs: BlobStore):
        self.folder = folder
        self.blobs = blobs
        self._engine = engine
        self._write_engine = engine.execution_options(gonio_write=True)
        self._steps: dict[int, StepInfo] = {}
        self._children: dict[int | None, list[int]] = {}
        self._max_known = 0
        self._session_id: int | None = None
        # Crash tests set this to a callable(stage) run at "blobs_written" and
        # "before_commit" inside commit_step.
        self._fault_hook = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls, folder: str | os.PathLike, create: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> History:
        """Open the history of processing folder ``folder`` (creating ``.gonio/`` if asked).

        ``cache_bytes`` bounds the artifacts kept in memory.
        """
        folder = Path(folder).absolute()
        session_dir = folder / SESSION_DIR
        db_path = session_dir / DATABASE_NAME
        if not db_path.is_file():
            if not create:
                raise NoSessionError(
                    f"There is no gonio session in {folder} (no {SESSION_DIR}/{DATABASE_NAME}). "
                    "Check the folder name, or start a new session there."
                )
            if not folder.is_dir():
                raise NoSessionError(
                    f"The folder {folder} does not exist. Create it first, or give the "
                    "path of an existing processing folder."
                )
            session_dir.mkdir(exist_ok=True)
        history = cls(folder, _make_engine(db_path), BlobStore(session_dir / BLOB_DIR, cache_bytes))
        try:
            with history._database_errors():
                history._check_schema(create)
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

    # ------------------------------------------------------------------ reading

    @property
    def head(self) -> int | None:
        """The current step (``None`` = step 0, the empty start), as shared by all processes."""
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
        return self.blobs.get(manifest[name])

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
        while current is not None:
            info = self._known_step(current)
            chain.append(info)
            current = info.parent_id
        return chain[::-1]

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

    def commit_step(
        self,
        command: str,
        line: str,
        params: Mapping[str, Any],
        artifacts: Mapping[str, bytes | None],
        log: str,
        metrics: Mapping[str, Any],
        duration_s: float,
        software_version: str,
    ) -> int:
        """Record a successful command as a child of the head, make it the head, return its number.

        ``artifacts`` are the changed artifacts of the new state (``None``
        removes a name); the others are inherited from the parent. ``params``
        and ``metrics`` must be JSON-serialisable (numpy scalars/arrays and
        paths are converted).
        """
        for name, data in artifacts.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"artifact names must be non-empty strings, not {name!r}")
            if data is not None and not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(
                    f"artifact {name!r} must be bytes or None, not {type(data).__name__}"
                )
        params_json = _json_roundtrip(params, "parameters")
        metrics_json = _json_roundtrip(metrics, "metrics")
        hashes = {n: None if d is None else self.blobs.put(d) for n, d in artifacts.items()}
        self._fault("blobs_written")
        finished = datetime.now(UTC)
        started = finished - timedelta(seconds=float(duration_s))
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            parent_id = _read_head(s)
            manifest = self._manifest_in(s, parent_id)
            for name, blob_hash in hashes.items():
                if blob_hash is None:
                    manifest.pop(name, None)
                else:
                    manifest[name] = blob_hash
            session_id = self._session_id
            if session_id is None:
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
        self._refresh()
        return step_id

    def undo(self) -> int | None:
        """Move the head to its parent and return the new head; ``redo`` comes back here."""
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            head = _read_head(s)
            if head is None:
                raise NothingToUndoError(
                    "Nothing to undo: the session is at its start (step 0). Use `history` "
                    "to see the steps and `goto N` to go to one."
                )
            parent = self._step_in(s, head).parent_id
            _write_kv(s, _redo_key(parent), str(head))
            _write_head(s, parent)
        return parent

    def redo(self) -> int:
        """Move the head to the child it was left from by undo (else the newest child)."""
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
            head = _read_head(s)
            kids = list(s.scalars(select(StepRow.id).where(_parent_is(head)).order_by(StepRow.id)))
            if not kids:
                where = f"step {head}" if head else "the start of the session (step 0)"
                raise NothingToRedoError(
                    f"Nothing to redo: no step was made from {where}. Use `history` to "
                    "see the steps and `goto N` to go to one."
                )
            remembered = s.get(KeyValueRow, _redo_key(head))
            target = (
                int(remembered.value) if remembered and int(remembered.value) in kids else kids[-1]
            )
            _write_head(s, target)
        return target

    def goto(self, step_id: int | None) -> int | None:
        """Make ``step_id`` (0/None: the empty start) the head and return it.

        Going back along the current branch remembers the way, so ``redo``
        retraces it step by step.
        """
        target = self._known_step(step_id).id if step_id else None
        with self._database_errors(), Session(self._write_engine) as s, s.begin():
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
        return target

    # ------------------------------------------------------------------ internals

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
        """Read the steps committed (by any process) since the last read."""
        if s is None:
            with self._database_errors(), Session(self._engine) as s:
                self._refresh(s)
            return
        query = select(StepRow).where(StepRow.id > self._max_known).order_by(StepRow.id)
        for row in s.scalars(query):
            info = _step_info(row)
            self._steps[info.id] = info
            self._children.setdefault(info.parent_id, []).append(info.id)
            self._max_known = info.id

    def _known_step(self, step_id: int) -> StepInfo:
        if step_id not in self._steps:
            self._refresh()
            if step_id not in self._steps:
                raise NoSuchStepError(_no_step_message(step_id, sorted(self._steps)))
        return self._steps[step_id]

    def _step_in(self, s: Session, step_id: int) -> StepInfo:
        if step_id not in self._steps:
            self._refresh(s)
        return self._steps[step_id]

    def _manifest_in(self, s: Session, step_id: int | None) -> dict[str, str]:
        return dict(self._step_in(s, step_id).manifest) if step_id is not None else {}

    def _fault(self, stage: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(stage)

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Turn SQLite failures into clear user-facing errors."""
        try:
            yield
        except OperationalError as e:
            raise HistoryError(
                f"Could not use the history database {self.database_path}: {e.orig}. "
                "Check that the folder is writable and the disk not full; if another "
                "gonio process is busy with this folder, wait for it and try again."
            ) from e
        except DatabaseError as e:
            raise CorruptHistoryError(
                f"{self.database_path} is not a readable gonio history ({e.orig}). Restore it "
                f"from a backup, or move the {SESSION_DIR} folder aside to start a new session."
            ) from e


# ---------------------------------------------------------------------- helpers


def _make_engine(db_path: Path) -> Engine:
    """SQLite engine: WAL, full sync, foreign keys, busy wait; BEGIN IMMEDIATE for writes."""
    engine = create_engine(
        URL.create("sqlite", database=str(db_path)), connect_args={"timeout": BUSY_TIMEOUT_S}
    )

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


def _redo_key(step_id: int | None) -> str:
    return f"redo:{step_id or 0}"


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
