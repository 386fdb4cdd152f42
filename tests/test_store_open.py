"""Opening a session folder: creation, missing, foreign, damaged and newer databases."""

import sqlite3

import pytest

from gonio.store.errors import (
    CorruptHistoryError,
    MissingBlobError,
    NewerHistoryError,
    NoSessionError,
)
from gonio.store.history import History
from gonio.store.schema import APPLICATION_ID, SCHEMA_VERSION


def db_path(folder):
    return folder / ".gonio" / "history.sqlite"


def make_session(folder, n_steps=2):
    with History.open(folder) as h:
        for i in range(n_steps):
            h.commit_step("s", f"s {i}", {}, {"table": f"t{i}".encode()}, "", {}, 0.1, "t")


def test_database_is_marked_and_in_wal_mode(tmp_path):
    make_session(tmp_path)
    con = sqlite3.connect(db_path(tmp_path))
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
    con.close()


def test_missing_session_is_not_created_unless_asked(tmp_path):
    with pytest.raises(NoSessionError, match="no gonio session"):
        History.open(tmp_path, create=False)
    assert not (tmp_path / ".gonio").exists()
    with pytest.raises(NoSessionError, match="does not exist"):
        History.open(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_reopen_resumes_at_head(tmp_path):
    make_session(tmp_path, 3)
    with History.open(tmp_path, create=False) as h:
        h.goto(2)
    with History.open(tmp_path, create=False) as h:
        assert h.head == 2 and h.load(h.head, "table") == b"t1"


def test_garbage_file_is_a_clear_error(tmp_path):
    (tmp_path / ".gonio").mkdir()
    db_path(tmp_path).write_bytes(b"this is not an SQLite database at all" * 100)
    with pytest.raises(CorruptHistoryError, match="not a readable gonio history"):
        History.open(tmp_path)
    assert db_path(tmp_path).read_bytes().startswith(b"this is not")  # left as it was
    assert sorted(p.name for p in (tmp_path / ".gonio").iterdir()) == ["history.sqlite"]


def test_foreign_sqlite_database_is_refused(tmp_path):
    (tmp_path / ".gonio").mkdir()
    con = sqlite3.connect(db_path(tmp_path))
    con.execute("CREATE TABLE photos (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(CorruptHistoryError, match="not a gonio history"):
        History.open(tmp_path)


def test_newer_schema_is_refused_with_version_numbers(tmp_path):
    make_session(tmp_path)
    con = sqlite3.connect(db_path(tmp_path))
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(NewerHistoryError) as err:
        History.open(tmp_path)
    message = str(err.value)
    assert f"format {SCHEMA_VERSION + 1}" in message and "Upgrade gonio" in message


def test_damaged_database_is_a_clear_error(tmp_path):
    make_session(tmp_path, 30)
    path = db_path(tmp_path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header, wreck every table page
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptHistoryError, match="not a readable gonio history"):
        with History.open(tmp_path) as h:
            h.steps()


def test_deleted_artifact_file_is_reported_on_load(tmp_path):
    make_session(tmp_path)
    with History.open(tmp_path) as h:
        blob = h.blobs.path(h.manifest(2)["table"])
    blob.unlink()
    with History.open(tmp_path) as h:
        assert h.load(1, "table") == b"t0"
        with pytest.raises(MissingBlobError, match="missing"):
            h.load(2, "table")
