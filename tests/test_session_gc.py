"""Growth: `forget N` drops a branch (never the current one), `gonio gc` removes the artifacts
no step uses and reports the sizes; tables with shoeboxes are stored compressed."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from gonio.shell.main import main
from gonio.shell.session import Session
from gonio.store.errors import CorruptHistoryError, ForgetRefusedError, NoSuchStepError
from gonio.store.history import History
from gonio.store.maintenance import collect_garbage, sizes


def commit(h, line, artifacts):
    return h.commit_step("s", line, {}, artifacts, "", {}, 0.1, "t")


@pytest.fixture
def tree(tmp_path):
    """1-2-3 (main line) and 2-4-5 (a branch); step 4 reuses step 3's table."""
    shared = os.urandom(40_000)
    with History.open(tmp_path) as h:
        commit(h, "a", {"base": os.urandom(10_000)})
        commit(h, "b", {"t": os.urandom(20_000)})
        commit(h, "c", {"t": shared})
        h.goto(2)
        commit(h, "d", {"t": shared, "x": os.urandom(30_000)})
        commit(h, "e", {"y": os.urandom(50_000)})
        h.goto(3)
    return tmp_path


def blob_files(folder):
    return sorted(p for p in (folder / ".gonio" / "blobs").rglob("*") if p.is_file())


def test_forget_refuses_the_current_branch_and_says_why(tree):
    with History.open(tree) as h:
        with pytest.raises(ForgetRefusedError, match="Step 3 is the current step"):
            h.forget(3)
        with pytest.raises(ForgetRefusedError, match=r"Step 2 is on the current branch \(the "
                           r"current step 3 was made from it\).*goto N"):
            h.forget(2)
        with pytest.raises(ForgetRefusedError, match="Step 0"):
            h.forget(0)
        with pytest.raises(NoSuchStepError, match="There is no step 9"):
            h.forget(9)
        assert [s.id for s in h.steps()] == [1, 2, 3, 4, 5]


def test_forget_then_gc_frees_exactly_the_branch_own_artifacts(tree):
    with History.open(tree) as h:
        before = sizes(h)
        branch = {b.tip: b for b in before.branches}
        assert set(branch) == {3, 5}
        assert branch[5].first == 4 and branch[5].steps == 2
        assert 80_000 <= branch[5].own_bytes <= 81_000  # x and y; not the shared table
        assert branch[3].first == 3 and branch[3].own_bytes == 0  # its table is shared
        files_before = blob_files(tree)
        assert h.forget(4) == [4, 5]
        assert [s.id for s in h.steps()] == [1, 2, 3]
        report = collect_garbage(h)
        assert report.removed == 2 and report.removed_bytes == branch[5].own_bytes
        assert len(blob_files(tree)) == len(files_before) - 2
        for s in h.steps():  # every remaining step is whole
            for name in s.manifest:
                assert h.load(s.id, name)
        assert "Removed 2 artifact file(s)" in report.text()
        assert report.sizes.unreferenced_bytes == 0


def test_forget_from_the_shell_and_gc_from_the_command_line(tree, capsys):
    s = Session(tree)
    r = s.run_line("forget 4")
    assert r.ok and "Forgot steps 4, 5" in r.text and "gonio gc" in r.text
    r = s.run_line("forget 2")
    assert not r.ok and "current branch" in r.text
    s.close()
    assert main(["gc", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "Removed 2 artifact file(s)" in out and "branch tip" in out and "Session size" in out


def test_another_process_sees_forgotten_steps_disappear(tree):
    with History.open(tree) as reader, History.open(tree) as writer:
        assert len(reader.steps()) == 5 and reader.step(5).line == "e"  # known to the reader
        writer.forget(4)
        assert [s.id for s in reader.steps()] == [1, 2, 3]
        assert [c.id for c in reader.children(2)] == [3]
        with pytest.raises(NoSuchStepError, match="There is no step 5"):
            reader.goto(5)
        assert reader.head == 3


def test_gc_during_a_commit_cannot_lose_the_new_step_artifacts(tree):
    with History.open(tree) as h:
        reused = h.load(5, "y")  # a new step will store the same bytes as forgotten step 5
        h.forget(4)
        other = History.open(tree)

        def gc_between_blob_write_and_commit(stage):
            if stage == "blobs_written":
                assert collect_garbage(other).removed == 2  # x and y: unreferenced
                assert not other.blobs.has(hashlib.sha256(reused).hexdigest())

        h._fault_hook = gc_between_blob_write_and_commit
        new = commit(h, "f", {"y": reused})
        h._fault_hook = None
        other.close()
        assert h.blobs.path(h.manifest(new)["y"]).is_file()
        with History.open(tree) as fresh:
            assert fresh.load(new, "y") == reused


def test_gc_refuses_on_a_damaged_database(tree):
    path = tree / ".gonio" / "history.sqlite"
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    n_files = len(blob_files(tree))
    with History.open(tree) as h, pytest.raises(CorruptHistoryError, match="gonio repair"):
        collect_garbage(h)
    assert len(blob_files(tree)) == n_files


def test_table_with_shoeboxes_is_stored_compressed(tmp_path):
    from conftest import data_path

    raw = data_path("myd88", "strong.refl").read_bytes()
    with History.open(tmp_path) as h:
        step = commit(h, "findspots", {"reflections/strong": raw})
        stored = h.blobs.path(h.manifest(step)["reflections/strong"]).stat().st_size
        assert stored < 0.25 * len(raw)  # shoebox pixels compress to about 16 %
        with History.open(tmp_path) as fresh:
            assert fresh.load(step, "reflections/strong") == raw
