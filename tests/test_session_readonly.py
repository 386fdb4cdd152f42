"""A session opened read-only (--read-only, or a folder that is not writable): explore, diff and
save elsewhere; steps are refused; `gonio copy` continues a branch in a copy."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
from conftest import data_path

from gonio.shell.main import main
from gonio.shell.session import Session
from gonio.store.errors import ReadOnlyHistoryError
from gonio.store.history import History


def teacher_session(folder):
    """Three steps whose state has real experiments (so show and save have work to do)."""
    expt = data_path("myd88", "imported.expt").read_bytes()
    folder.mkdir(exist_ok=True)
    with History.open(folder) as h:
        h.commit_step("import", "import imported.expt", {}, {"experiments": expt}, "", {}, 0.1, "t")
        h.commit_step("note", "note a", {}, {"data/note": b'"a"'}, "", {"n": 1}, 0.1, "t")
        h.commit_step("note", "note b", {}, {"data/note": b'"b"'}, "", {"n": 2}, 0.1, "t")


def digest(folder):
    """Hash of every file in the session folder (to prove nothing changed)."""
    out = hashlib.sha256()
    for p in sorted((folder / ".gonio").rglob("*")):
        if p.is_file() and not p.name.endswith(("-shm", "-wal")):
            out.update(p.name.encode() + p.read_bytes())
    return out.hexdigest()


def test_read_only_session_explores_and_saves_elsewhere_but_records_nothing(tmp_path):
    teacher_session(tmp_path / "class")
    before = digest(tmp_path / "class")
    s = Session(tmp_path / "class", read_only=True)
    assert s.history.read_only
    r = s.run_line("history")
    assert r.ok and "read-only session: opened with --read-only" in r.text
    assert s.run_line("goto 1").ok and s.head == 1  # a head of its own, in memory
    assert s.run_line("show").ok
    assert s.run_line("diff 1 3").ok
    assert s.run_line("undo").ok and s.head is None and s.run_line("redo").ok and s.head == 1
    assert s.run_line("goto 2").ok and s.run_line("undo").ok and s.head == 1
    assert s.run_line("redo").ok and s.head == 2  # back where undo left, not the newest
    out = tmp_path / "mine"
    out.mkdir()
    r = s.run_line(f"save output.prefix={out / 'x'}")
    assert r.ok and (out / "x.expt").is_file()
    r = s.run_line("import " + str(data_path("myd88", "imported.expt")))
    assert not r.ok and "read-only" in r.text and "gonio copy" in r.text
    assert not s.run_line("forget 2").ok
    s.close()
    with History.open(tmp_path / "class", create=False) as h:
        assert h.head == 3 and len(h.steps()) == 3
    assert digest(tmp_path / "class") == before


def test_read_only_flag_on_the_command_line(tmp_path, monkeypatch, capsys):
    teacher_session(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["--read-only", "history"]) == 0
    assert "read-only session" in capsys.readouterr().out
    assert main(["--read-only", "undo"]) == 0  # moves its own head only
    with History.open(tmp_path, create=False) as h:
        assert h.head == 3


def test_folder_that_is_not_writable_opens_read_only(tmp_path, monkeypatch):
    teacher_session(tmp_path)
    monkeypatch.setattr("gonio.store.history._writable", lambda *a: False)
    with History.open(tmp_path) as h:
        assert h.read_only and "is not writable" in h.read_only_reason
        with pytest.raises(ReadOnlyHistoryError, match="gonio copy"):
            h.commit_step("s", "s", {}, {}, "", {}, 0.1, "t")


@pytest.fixture
def unwritable_copy(tmp_path):
    """The teacher's session seen through a read-only mount (as root) or without write bits."""
    src, seen = tmp_path / "src", tmp_path / "ro"
    teacher_session(src)
    seen.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: use a read-only bind mount
        mounted = subprocess.run(["mount", "--bind", str(src), str(seen)], capture_output=True)
        if mounted.returncode:
            pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(seen)], check=True)
            yield seen
        finally:
            subprocess.run(["umount", str(seen)], check=True)
    else:
        seen.rmdir()
        shutil.copytree(src, seen)
        for p in [seen, *seen.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        yield seen
        for p in [seen, *seen.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_folder_that_cannot_be_written_opens_read_only_for_real(unwritable_copy):
    before = digest(unwritable_copy)
    s = Session(unwritable_copy)
    assert s.history.read_only and "is not writable" in s.history.read_only_reason
    assert s.run_line("history").ok and s.run_line("goto 2").ok and s.head == 2
    assert s.state_at(1).experiments and s.run_line("show").ok
    r = s.run_line("forget 3")
    assert not r.ok and "is not writable" in r.text and "gonio copy" in r.text
    s.close()
    assert digest(unwritable_copy) == before
    assert not any(p.name.endswith(("-wal", "-shm")) for p in (unwritable_copy / ".gonio").iterdir())


def test_copy_continues_a_branch_of_a_read_only_session(tmp_path, capsys):
    teacher_session(tmp_path / "class")
    before = digest(tmp_path / "class")
    assert main(["copy", str(tmp_path / "class"), str(tmp_path / "student")]) == 0
    assert "3 steps" in capsys.readouterr().out
    s = Session(tmp_path / "student")
    assert not s.history.read_only and s.head == 3
    assert [(x.id, x.line) for x in s.history.steps()] == [
        (1, "import imported.expt"), (2, "note a"), (3, "note b")]
    assert s.run_line("goto 2").ok
    new = s.history.commit_step("note", "note c", {}, {"data/note": b'"c"'}, "", {}, 0.1, "t")
    assert s.history.step(new).parent_id == 2 and s.state_at(new).data["note"] == "c"
    assert s.state_at(1).experiments  # artifacts came along
    s.close()
    assert digest(tmp_path / "class") == before
    assert main(["copy", str(tmp_path / "class"), str(tmp_path / "student")]) == 1  # not over it
    assert "already has a gonio session" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["copy", str(tmp_path / "class"), str(tmp_path / "notes.txt")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert main(["copy", str(tmp_path / "class"), str(tmp_path / "notes.txt" / "sub")]) == 1
    err = capsys.readouterr().err
    assert "Cannot make the folder" in err and "Traceback" not in err
