"""Looking after a session folder: check, repair, clean up (gc), measure, copy.

- :func:`check` reads the database (SQLite's integrity check, then every
  step row) and every artifact of every step (present, and its content
  matching its SHA-256), and lists half-written temporary files. It changes
  nothing.
- :func:`repair` keeps every step that can be read and marks the others:
  a damaged database is moved aside (never deleted) and every readable row
  is copied into a new one; altered artifact files are moved to
  ``.gonio/damaged/``; steps whose artifacts are missing or altered get the
  status ``damaged`` with the reason (and lose it again once the files are
  back); temporary files left by a crash are removed; a damaged head moves
  to its nearest intact ancestor. Everything it did is in its report.
- :func:`collect_garbage` removes the artifact files no step refers to
  (after ``forget``), holding the database write lock so that no step can
  be committed meanwhile, and refuses on a damaged database.
- :func:`sizes` reports the session's size and each branch's.
- :func:`copy_session` copies a session (e.g. a read-only one) to a new
  folder, where its branches can be continued.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gonio.store.blobs import BlobStore
from gonio.store.errors import (
    CorruptHistoryError,
    HistoryError,
    MissingBlobError,
    NoSessionError,
)
from gonio.store.history import (
    BLOB_DIR,
    DAMAGED,
    DATABASE_NAME,
    SESSION_DIR,
    History,
    StepInfo,
    _ranges,
)

#: Temporary blob files younger than this may belong to a live writer: left alone (s).
TEMPORARY_GRACE_S = 600.0
DAMAGED_DIR = "damaged"
_STEP_COLUMNS = (
    "id, parent_id, session_id, command, line, params, status, started, finished, "
    "duration_s, software_version, log, metrics, manifest"
)


@dataclass
class CheckReport:
    """What :func:`check` found. ``damaged`` maps step -> problems (one line each)."""

    folder: Path
    database_problem: str = ""
    steps: int = 0
    unreadable_steps: list[int] = field(default_factory=list)
    damaged: dict[int, list[str]] = field(default_factory=dict)
    lines: dict[int, str] = field(default_factory=dict)
    artifacts: int = 0
    temporary_files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.database_problem or self.unreadable_steps or self.damaged)

    def text(self) -> str:
        out = [f"Session {self.folder / SESSION_DIR}: {self.steps} steps, "
               f"{self.artifacts} artifacts checked."]
        if self.database_problem:
            out.append(f"The history database is damaged: {self.database_problem}")
        if self.unreadable_steps:
            out.append(f"Steps that cannot be read from the database: "
                       f"{_ranges(self.unreadable_steps)}.")
        for step, problems in sorted(self.damaged.items()):
            out.append(f"Step {step} ({self.lines.get(step, '')}): " + "; ".join(problems))
        if self.temporary_files:
            out.append(f"{len(self.temporary_files)} half-written temporary file(s) from an "
                       "interrupted write (repair or gc removes them).")
        if self.ok:
            out.append("Every step and artifact is intact.")
        else:
            out.append("Run `gonio repair` to keep every intact step and mark the damaged ones "
                       "(nothing is deleted); restore missing files from a backup first if you "
                       "have one.")
        return "\n".join(out)


@dataclass
class RepairReport:
    actions: list[str] = field(default_factory=list)
    check: CheckReport | None = None

    def text(self) -> str:
        done = self.actions or ["Nothing needed repairing."]
        return "\n".join(["Repair:"] + [f"- {a}" for a in done])


# ---------------------------------------------------------------------- check


def check(folder: str | os.PathLike, verify_content: bool = True) -> CheckReport:
    """Verify the database, every step and every artifact of ``folder``'s session."""
    folder = Path(folder).absolute()
    report = CheckReport(folder)
    db_path = folder / SESSION_DIR / DATABASE_NAME
    if not db_path.is_file():
        raise NoSessionError(
            f"There is no gonio history in {folder} (no {SESSION_DIR}/{DATABASE_NAME}); "
            "nothing to check."
        )
    blobs = BlobStore(folder / SESSION_DIR / BLOB_DIR, cache_bytes=0)
    report.temporary_files = blobs.temporary_files()
    problem = _integrity_problem(db_path)
    if problem:
        report.database_problem = problem
        rows, unreadable, _ = salvage_rows(db_path)
        steps = [_info(r) for r in rows]
        report.unreadable_steps = unreadable
    else:
        with History.open(folder, create=False, read_only=True) as h:
            steps = h.steps()
    report.steps = len(steps)
    known = {s.id for s in steps}
    verdicts: dict[str, str | None] = {}
    for s in steps:
        report.lines[s.id] = s.line[:60]
        problems = []
        if s.parent_id is not None and s.parent_id not in known:
            problems.append(f"its parent step {s.parent_id} is lost")
        for name, blob_hash in sorted(s.manifest.items()):
            if blob_hash not in verdicts:
                verdicts[blob_hash] = _blob_problem(blobs, blob_hash, verify_content)
            if verdicts[blob_hash]:
                problems.append(f"artifact '{name}' is {verdicts[blob_hash]}")
        if problems:
            report.damaged[s.id] = problems
    report.artifacts = len(verdicts)
    return report


def _blob_problem(blobs: BlobStore, blob_hash: str, verify_content: bool) -> str | None:
    try:
        if not verify_content:
            return None if blobs.path(blob_hash).is_file() else "missing (file deleted or not copied)"
        blobs.read_verified(blob_hash)
    except MissingBlobError:
        return "missing (file deleted or not copied)"
    except CorruptHistoryError:
        return "altered (its content no longer matches its checksum)"
    except ValueError:
        return f"named by an invalid checksum {blob_hash[:20]!r}"
    return None


def _integrity_problem(db_path: Path) -> str:
    """'' when SQLite's integrity check passes, else what it (or opening) says."""
    try:
        con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check(20)").fetchall()]
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return f"{e} (the file is truncated, overwritten or not a database)"
    if rows != ["ok"]:
        return "; ".join(rows[:3])
    from gonio.store.schema import APPLICATION_ID

    if app_id != APPLICATION_ID:
        return "the file is not a gonio history"
    return ""


def salvage_rows(db_path: Path) -> tuple[list[dict], list[int], dict[str, str]]:
    """Every step row that can still be read from a damaged database, one row at a time.

    Returns (rows as dicts, step ids that could not be read, the readable kv pairs).
    It reads a scratch copy (see :func:`_scratch_copy`); the file itself is not touched.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gonio-salvage-") as scratch:
        copy = _scratch_copy(db_path, Path(scratch))
        try:
            con = sqlite3.connect(copy)
        except sqlite3.Error:
            return [], [], {}
        return _salvage(con)


def _scratch_copy(db_path: Path, scratch: Path) -> Path:
    """A copy of a damaged database (and its WAL) that SQLite will open.

    A file cut short still says in its header how many pages it had, and
    SQLite then refuses every query; the copy is padded with empty pages to
    that length, so only the rows on the lost pages fail to read.
    """
    copy = scratch / DATABASE_NAME
    shutil.copyfile(db_path, copy)
    if Path(f"{db_path}-wal").is_file():
        shutil.copyfile(f"{db_path}-wal", f"{copy}-wal")
    with open(copy, "r+b") as f:
        header = f.read(100)
        if len(header) == 100 and header.startswith(b"SQLite format 3\x00"):
            page_size = int.from_bytes(header[16:18], "big")
            page_size = 65536 if page_size == 1 else page_size
            n_pages = int.from_bytes(header[28:32], "big")
            size = os.fstat(f.fileno()).st_size
            if page_size and n_pages * page_size > size:
                f.truncate(n_pages * page_size)
    return copy


def _salvage(con: sqlite3.Connection) -> tuple[list[dict], list[int], dict[str, str]]:
    rows, unreadable, kv = [], [], {}
    try:
        last = _last_step_id(con)
        for step_id in range(1, last + 1):
            try:
                row = con.execute(f"SELECT {_STEP_COLUMNS} FROM steps WHERE id = ?",
                                  (step_id,)).fetchone()
                if row is None:
                    continue  # forgotten, or never committed
                d = dict(zip([c.strip() for c in _STEP_COLUMNS.split(",")], row))
                for key in ("params", "metrics", "manifest"):
                    d[key] = json.loads(d[key])
                rows.append(d)
            except (sqlite3.Error, ValueError, TypeError):
                unreadable.append(step_id)
        try:
            kv = dict(con.execute("SELECT key, value FROM kv").fetchall())
        except sqlite3.Error:
            kv = {}
    finally:
        con.close()
    return rows, unreadable, kv


def _last_step_id(con: sqlite3.Connection) -> int:
    for query in ("SELECT seq FROM sqlite_sequence WHERE name = 'steps'",
                  "SELECT max(id) FROM steps"):
        try:
            value = con.execute(query).fetchone()
            if value and value[0]:
                return int(value[0])
        except sqlite3.Error:
            continue
    return 0


def _info(row: dict) -> StepInfo:
    def when(text):
        try:
            return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)
        except ValueError:
            return datetime.fromtimestamp(0, UTC)

    return StepInfo(
        id=row["id"], parent_id=row["parent_id"], command=row["command"], line=row["line"],
        params=row["params"], status=row["status"], started=when(row["started"]),
        finished=when(row["finished"]), duration_s=row["duration_s"],
        software_version=row["software_version"], log=row["log"], metrics=row["metrics"],
        manifest=row["manifest"], session_id=row["session_id"],
    )


# ---------------------------------------------------------------------- repair


def repair(folder: str | os.PathLike) -> RepairReport:
    """Keep every intact step, mark the damaged ones, move damaged files aside; report it all."""
    folder = Path(folder).absolute()
    report = RepairReport()
    found = check(folder)
    session_dir = folder / SESSION_DIR
    if found.database_problem:
        _rebuild_database(session_dir, report)
    blobs = BlobStore(session_dir / BLOB_DIR, cache_bytes=0)
    for tmp in blobs.temporary_files(older_than_s=TEMPORARY_GRACE_S):
        tmp.unlink(missing_ok=True)
        report.actions.append(f"removed the half-written temporary file {tmp.name} "
                              "(left by a write that was interrupted)")
    with History.open(folder, create=False) as h:
        steps = h.steps()
        known = {x.id for x in steps}
        altered = set()
        for s in steps:
            reasons = []
            if s.parent_id is not None and s.parent_id not in known:
                reasons.append(f"its parent step {s.parent_id} is lost")
            for name, blob_hash in sorted(s.manifest.items()):
                problem = _blob_problem(blobs, blob_hash, True)
                if problem and problem.startswith("altered"):
                    altered.add(blob_hash)
                if problem:
                    reasons.append(f"artifact '{name}' is {problem}")
            if reasons and s.status != DAMAGED:
                h.mark_damaged(s.id, "; ".join(reasons))
                report.actions.append(f"marked step {s.id} ({s.line[:50]}) damaged: "
                                      + "; ".join(reasons))
            elif not reasons and s.status == DAMAGED:
                h.mark_damaged(s.id, None)
                report.actions.append(f"step {s.id} is intact again (its artifacts are back); "
                                      "unmarked")
        for blob_hash in sorted(altered):
            target = session_dir / DAMAGED_DIR / blob_hash
            target.parent.mkdir(exist_ok=True)
            os.replace(blobs.path(blob_hash), target)
            report.actions.append(f"moved the altered artifact file {blob_hash[:12]}... to "
                                  f"{target} (kept, not deleted)")
        head = h.head
        if head is not None:
            ok_head = _intact_prefix(h.path(head))
            if ok_head != head:
                h.set_head(ok_head)
                report.actions.append(f"the current step {head} is damaged: moved the session "
                                      f"to step {ok_head or 0}, its nearest intact ancestor")
    report.check = check(folder)
    return report


def _intact_prefix(path: list[StepInfo]) -> int | None:
    """The last step of ``path`` before the first damaged one (None: step 0)."""
    last = None
    for s in path:
        if s.status == DAMAGED:
            break
        last = s.id
    return last


def _rebuild_database(session_dir: Path, report: RepairReport) -> None:
    """Move the damaged database aside and copy every readable row into a new one."""
    db_path = session_dir / DATABASE_NAME
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    kept = session_dir / f"{DATABASE_NAME}.damaged-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db_path}{suffix}").exists():
            os.replace(f"{db_path}{suffix}", f"{kept}{suffix}")
    report.actions.append(f"the damaged database was moved to {kept.name} (kept, not deleted)")
    rows, unreadable, kv = salvage_rows(kept)
    History.open(session_dir.parent).close()  # a new, empty history
    con = sqlite3.connect(db_path, timeout=60)
    try:
        with con:
            ids = {r["id"] for r in rows}
            for sid in sorted({r["session_id"] for r in rows}):
                con.execute("INSERT INTO sessions (id, created, folder, software_version) "
                            "VALUES (?, ?, ?, ?)", (sid, _now_text(),
                                                    str(session_dir.parent), "recovered"))
            for r in sorted(rows, key=lambda r: r["id"]):
                lost_parent = r["parent_id"] is not None and r["parent_id"] not in ids
                values = dict(r)
                if lost_parent:
                    values["parent_id"] = None
                    values["status"] = DAMAGED
                    reason = (f"its parent step {r['parent_id']} could not be recovered from "
                              "the damaged database (recorded here without a parent)")
                    con.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                                (f"damage:{r['id']}", reason))
                    report.actions.append(f"step {r['id']}: {reason}")
                for key in ("params", "metrics", "manifest"):
                    values[key] = json.dumps(values[key])
                names = [c.strip() for c in _STEP_COLUMNS.split(",")]
                con.execute(f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES "
                            f"({', '.join('?' * len(names))})", [values[n] for n in names])
            for key, value in kv.items():
                if key.startswith(("redo:", "damage:")) or key == "generation":
                    con.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                                (key, value))
            head = kv.get("head", "")
            if not head or int(head) not in ids:
                head = str(max(ids)) if ids else ""
            con.execute("UPDATE kv SET value = ? WHERE key = 'head'", (head,))
            if unreadable:  # their numbers are never given to new steps
                con.execute("DELETE FROM sqlite_sequence WHERE name = 'steps'")
                con.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('steps', ?)",
                            (max(max(unreadable), max(ids, default=0)),))
    finally:
        con.close()
    report.actions.append(f"recovered {len(rows)} step(s) into a new history.sqlite" + (
        f"; steps {_ranges(unreadable)} could not be read" if unreadable else ""))


# ---------------------------------------------------------------------- gc, sizes


@dataclass
class BranchSize:
    tip: int
    first: int  # first step of the branch's own part (after the fork)
    steps: int  # steps in its own part
    total_bytes: int  # all artifacts of the path from the start to the tip
    own_bytes: int  # artifacts only its own part uses (what `forget first` + gc frees)


@dataclass
class SizeReport:
    database_bytes: int
    artifact_bytes: int  # every blob file on disk
    unreferenced_bytes: int
    branches: list[BranchSize]

    def text(self) -> str:
        from tabulate import tabulate

        total = self.database_bytes + self.artifact_bytes
        out = [f"Session size {_size(total)}: database {_size(self.database_bytes)}, "
               f"artifacts {_size(self.artifact_bytes)} (of which {_size(self.unreferenced_bytes)}"
               " used by no step)."]
        if self.branches:
            rows = [[b.tip, b.first, b.steps, _size(b.total_bytes), _size(b.own_bytes)]
                    for b in self.branches]
            out.append(tabulate(rows, headers=["branch tip", "from step", "steps", "size",
                                               "own (freed by forget+gc)"],
                                disable_numparse=True))
        return "\n".join(out)


@dataclass
class GcReport:
    removed: int
    removed_bytes: int
    temporary_removed: int
    sizes: SizeReport

    def text(self) -> str:
        return (f"Removed {self.removed} artifact file(s) no step uses ({_size(self.removed_bytes)})"
                + (f" and {self.temporary_removed} half-written temporary file(s)"
                   if self.temporary_removed else "") + ".\n" + self.sizes.text())


def sizes(history: History) -> SizeReport:
    """Size of the session on disk and of each branch (a branch per tip of the tree)."""
    steps = {s.id: s for s in history.steps()}
    blobs = history.blobs
    on_disk = {h: blobs.stored_size(h) for h in blobs.hashes()}
    users: dict[str, set[int]] = defaultdict(set)
    for s in steps.values():
        for h in s.manifest.values():
            users[h].add(s.id)
    children: dict[int | None, list[int]] = defaultdict(list)
    for s in steps.values():
        children[s.parent_id].append(s.id)
    branches = []
    for tip in sorted(i for i in steps if not children.get(i)):
        path = [x.id for x in history.path(tip)]
        own_start = 0
        for k in range(len(path) - 1, -1, -1):
            parent = steps[path[k]].parent_id
            if len(children[parent]) > 1 or parent is None:
                own_start = k
                break
        own = set(path[own_start:])
        path_hashes = {h for i in path for h in steps[i].manifest.values()}
        own_hashes = {h for h in path_hashes if users[h] <= own}
        branches.append(BranchSize(
            tip=tip, first=path[own_start], steps=len(own),
            total_bytes=sum(on_disk.get(h, 0) for h in path_hashes),
            own_bytes=sum(on_disk.get(h, 0) for h in own_hashes)))
    database = sum(Path(f"{history.database_path}{s}").stat().st_size
                   for s in ("", "-wal") if Path(f"{history.database_path}{s}").exists())
    return SizeReport(database, sum(on_disk.values()),
                      sum(n for h, n in on_disk.items() if h not in users), branches)


def collect_garbage(history: History) -> GcReport:
    """Remove artifact files that no step refers to; report what was removed and the sizes."""
    problem = _integrity_problem(history.database_path)
    if problem:
        raise CorruptHistoryError(
            f"The history database is damaged ({problem}), so gonio cannot tell which "
            "artifacts are still used; nothing was removed. Run `gonio repair` first."
        )
    removed = removed_bytes = 0
    with history.write_lock():  # no step can be committed while files are removed
        used = {h for s in history.steps() for h in s.manifest.values()}
        for blob_hash in list(history.blobs.hashes()):
            if blob_hash in used:
                continue
            size = history.blobs.stored_size(blob_hash)
            history.blobs.path(blob_hash).unlink(missing_ok=True)
            history.blobs.forget_cached(blob_hash)
            removed, removed_bytes = removed + 1, removed_bytes + size
        temporary = history.blobs.temporary_files(older_than_s=TEMPORARY_GRACE_S)
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
    return GcReport(removed, removed_bytes, len(temporary), sizes(history))


# ---------------------------------------------------------------------- copy


def copy_session(source: str | os.PathLike, dest: str | os.PathLike) -> tuple[int, list[str]]:
    """Copy the session of ``source`` into folder ``dest`` (made if needed).

    The database is copied with SQLite's backup API (a consistent snapshot
    even while another process writes), then every artifact a step refers
    to. Returns (number of steps, artifact hashes missing in the source).
    The copy is assembled in ``dest/.gonio.partial`` and renamed at the end,
    so an interrupted copy never looks like a session.
    """
    source, dest = Path(source).absolute(), Path(dest).absolute()
    if dest.exists() and not dest.is_dir():
        raise HistoryError(f"{dest} is a file; give gonio copy a folder (new or existing) to "
                           "copy the session into.")
    if (dest / SESSION_DIR).exists():
        raise HistoryError(
            f"{dest} already has a gonio session ({SESSION_DIR}/); copy into a new folder, or "
            "move that session aside first."
        )
    with History.open(source, create=False, read_only=True) as src:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HistoryError(f"Cannot make the folder {dest} ({e.strerror or e}); give gonio "
                               "copy a folder you can write in.") from None
        partial = dest / (SESSION_DIR + ".partial")
        if partial.exists():
            shutil.rmtree(partial)  # our own leftover from an interrupted copy
        (partial / BLOB_DIR).mkdir(parents=True)
        raw = src._engine.raw_connection()
        try:
            target = sqlite3.connect(partial / DATABASE_NAME)
            raw.driver_connection.backup(target)
            target.close()
        finally:
            raw.close()
    copied = BlobStore(partial / BLOB_DIR)
    missing = []
    with History.open(source, create=False, read_only=True) as src:
        hashes = sorted({h for s in _steps_of(partial) for h in s.values()})
        for blob_hash in hashes:
            path = src.blobs.path(blob_hash)
            if not path.is_file():
                missing.append(blob_hash)
                continue
            out = copied.path(blob_hash)
            out.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, out)
    os.replace(partial, dest / SESSION_DIR)
    with History.open(dest, create=False) as h:
        n = len(h.steps())
    return n, missing


def _steps_of(session_dir: Path) -> list[dict[str, str]]:
    con = sqlite3.connect(session_dir / DATABASE_NAME)
    try:
        return [json.loads(m) for (m,) in con.execute("SELECT manifest FROM steps")]
    finally:
        con.close()


# ---------------------------------------------------------------------- helpers


def _now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(" ")


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
