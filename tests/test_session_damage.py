"""Damage to a session folder, made by the test: each gives a clear error naming the step, and
`gonio check` / `gonio repair` find it and keep every intact step without deleting data."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest

from gonio.shell.main import main
from gonio.shell.session import Session
from gonio.store.errors import CorruptHistoryError, MissingBlobError
from gonio.store.history import History
from gonio.store.maintenance import check, repair


def make_session(folder, n=5, log_bytes=10):
    """Steps 1..n in a line; step i adds table/i (unique) and sets data/n = i."""
    with History.open(folder) as h:
        for i in range(1, n + 1):
            h.commit_step("s", f"s {i}", {"i": i},
                          {f"table/{i}": f"table {i} ".encode() * 500, "data/n": str(i).encode()},
                          "x" * log_bytes, {"i": i}, 0.1, "t")


def blob(folder, step, name):
    with History.open(folder, create=False) as h:
        return h.blobs.path(h.manifest(step)[name])


def test_missing_artifact_names_the_step_and_repair_marks_every_step_using_it(tmp_path, capsys):
    make_session(tmp_path)
    blob(tmp_path, 3, "table/3").unlink()
    with History.open(tmp_path, create=False) as h:
        assert h.load(2, "table/2")  # earlier steps are fine
        with pytest.raises(MissingBlobError, match=r"Step 4 \(s 4\): its artifact 'table/3'"):
            h.load(4, "table/3")
    report = check(tmp_path)
    assert not report.ok and sorted(report.damaged) == [3, 4, 5]
    assert "artifact 'table/3' is missing" in report.damaged[3][0]
    assert main(["check", str(tmp_path)]) == 1
    assert "Step 3 (s 3): artifact 'table/3' is missing" in capsys.readouterr().err

    assert main(["repair", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "marked step 3 (s 3) damaged" in out and "moved the session to step 2" in out
    with History.open(tmp_path, create=False) as h:
        assert [s.status for s in h.steps()] == ["ok", "ok", "damaged", "damaged", "damaged"]
        assert h.head == 2 and "table/3' is missing" in h.damage(4)
        assert len(h.steps()) == 5  # nothing deleted
    s = Session(tmp_path)
    r = s.run_line("history")
    assert r.ok and "[damaged]" in r.text
    s.close()


def test_restored_artifact_is_unmarked_by_the_next_repair(tmp_path):
    make_session(tmp_path, 3)
    path = blob(tmp_path, 3, "table/3")
    saved = path.read_bytes()
    path.unlink()
    repair(tmp_path)
    path.write_bytes(saved)  # the user found the file in a backup
    report = repair(tmp_path)
    assert any("step 3 is intact again" in a for a in report.actions)
    assert report.check.ok
    with History.open(tmp_path, create=False) as h:
        assert [s.status for s in h.steps()] == ["ok"] * 3 and h.damage(3) is None


def test_altered_artifact_is_reported_and_moved_aside_not_deleted(tmp_path):
    make_session(tmp_path, 4)
    path = blob(tmp_path, 2, "table/2")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit flipped on disk
    path.write_bytes(bytes(data))
    s = Session(tmp_path)
    with pytest.raises(CorruptHistoryError, match=r"Step 2 \(s 2\).*'table/2'.*damaged"):
        s.history.load(2, "table/2")
    s.close()
    report = check(tmp_path)
    assert sorted(report.damaged) == [2, 3, 4]
    assert "altered" in report.damaged[2][0]
    fixed = repair(tmp_path)
    kept = tmp_path / ".gonio" / "damaged" / (path.parent.name + path.name)
    assert kept.read_bytes() == bytes(data)
    assert any("moved the altered artifact" in a for a in fixed.actions)


def test_half_written_temporary_file_is_listed_then_removed_by_repair(tmp_path):
    make_session(tmp_path, 2)
    folder = blob(tmp_path, 1, "table/1").parent
    old = folder / ".tmp-abc123.tmp"
    old.write_bytes(b"half a tab")  # a writer killed mid-write
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    young = folder / ".tmp-def456.tmp"
    young.write_bytes(b"being written")  # may belong to a live writer
    report = check(tmp_path)
    assert report.temporary_files == sorted([old, young])
    assert "half-written temporary" in report.text() and report.ok  # no step is affected
    fixed = repair(tmp_path)
    assert not old.exists() and young.exists()
    assert any(".tmp-abc123.tmp" in a for a in fixed.actions)


def test_folder_copied_without_its_blobs(tmp_path):
    (tmp_path / "a").mkdir()
    make_session(tmp_path / "a", 3)
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("blobs"))
    s = Session(tmp_path / "b")
    assert s.run_line("history").ok  # the record is all there
    with pytest.raises(MissingBlobError, match=r"Step 3 \(s 3\).*copied incompletely"):
        s.state  # noqa: B018
    s.close()
    report = check(tmp_path / "b")
    assert sorted(report.damaged) == [1, 2, 3]
    assert main(["copy", str(tmp_path / "a"), str(tmp_path / "c")]) == 0  # the right way
    assert check(tmp_path / "c").ok


def _checkpointed(folder):
    path = folder / ".gonio" / "history.sqlite"
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def test_truncated_database_keeps_every_readable_step(tmp_path):
    make_session(tmp_path, 30, log_bytes=3000)  # about one step per database page
    path = _checkpointed(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size * 6 // 10)  # a copy cut short
    with pytest.raises(CorruptHistoryError, match="gonio check"):
        with History.open(tmp_path) as h:
            h.steps()
    report = check(tmp_path)
    assert report.database_problem and report.unreadable_steps
    readable = report.steps
    assert 5 <= readable < 30 and readable + len(report.unreadable_steps) == 30

    fixed = repair(tmp_path)
    assert any("moved to history.sqlite.damaged-" in a for a in fixed.actions)
    kept = [p for p in (tmp_path / ".gonio").glob("history.sqlite.damaged-*") if p.name[-4] != "-"]
    assert len(kept) == 1 and kept[0].stat().st_size == size * 6 // 10  # the damaged file is kept
    assert not fixed.check.database_problem
    with History.open(tmp_path, create=False) as h:
        steps = h.steps()
        assert len(steps) == readable
        for st in steps:  # every recovered step is complete, with its artifacts
            assert h.load(st.id, f"table/{st.id}") == f"table {st.id} ".encode() * 500
            assert st.params == {"i": st.id} and len(st.log) == 3000
        new = h.commit_step("s", "after repair", {}, {"x": b"1"}, "", {}, 0.1, "t")
        assert new == 31  # numbers of lost steps are never reused


def test_corrupted_database_page_keeps_the_other_steps(tmp_path):
    make_session(tmp_path, 30, log_bytes=3000)
    path = _checkpointed(tmp_path)
    data = bytearray(path.read_bytes())
    page = 4096
    n_pages = len(data) // page
    victim = n_pages // 2
    data[victim * page:(victim + 1) * page] = os.urandom(page)
    path.write_bytes(bytes(data))
    report = check(tmp_path)
    assert report.database_problem
    assert report.unreadable_steps or report.steps < 30
    fixed = repair(tmp_path)
    assert not fixed.check.database_problem
    with History.open(tmp_path, create=False) as h:
        ids = [s.id for s in h.steps()]
        assert len(ids) >= 20  # one bad page loses at most a few steps
        assert h.head in ids
        for i in ids:
            assert h.load(i, "data/n") == str(i).encode()


def test_check_of_a_folder_without_a_session_is_a_clear_error(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 1
    assert "There is no gonio history in" in capsys.readouterr().err
    assert not (tmp_path / ".gonio").exists()
    assert main(["copy", str(tmp_path), str(tmp_path / "x")]) == 1
    assert main(["gc", "a", "b"]) == 2  # usage
