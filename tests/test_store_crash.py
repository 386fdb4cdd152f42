"""History across processes: resuming, SIGKILL at any moment, two writers at once."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from gonio.store.history import History

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from gonio.store.history import History

    folder, mode = sys.argv[1], sys.argv[2]
    h = History.open(folder)

    def commit(i, tag):
        data = os.urandom(300_000)
        return h.commit_step(
            "step", f"step {tag} {i}", {"i": i, "tag": tag},
            {"table": data, f"small/{i % 3}": data[:100]}, "log", {"i": i}, 0.1, "test",
        )

    if mode == "loop":
        i = 0
        while True:
            print(commit(i, "loop"), flush=True)
            i += 1
    elif mode == "count":
        while not os.path.exists(os.path.join(folder, "go")):
            time.sleep(0.001)
        for i in range(int(sys.argv[3])):
            print(commit(i, sys.argv[4]), flush=True)
    elif mode == "report":
        print(json.dumps({"head": h.head, "manifest": h.manifest(h.head),
                          "table": h.load(h.head, "table").decode()}))
    else:  # die at a fault point inside commit_step
        h._fault_hook = lambda stage: stage == mode and os.kill(os.getpid(), signal.SIGKILL)
        h.commit_step("doomed", "doomed", {}, {"table": b"doomed artifact"}, "", {}, 0.1, "t")
        print("survived", flush=True)
    """
)


def spawn(folder, *args):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_consistent(folder):
    """Integrity of the SQLite file and of the tree; returns the linear chain of step ids."""
    con = sqlite3.connect(folder / ".gonio" / "history.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with History.open(folder, create=False) as h:
        steps = h.steps()
        ids = [s.id for s in steps]
        assert ids == list(range(1, len(ids) + 1))
        assert [s.parent_id for s in steps] == [None] + ids[:-1]  # one line, no gaps
        assert h.head == (ids[-1] if ids else None)
        for s in steps:
            assert all(h.blobs.has(b) for b in s.manifest.values())
        if ids:
            assert len(h.load(h.head, "table")) == 300_000  # hash-checked read
        return ids


def test_new_process_resumes_at_the_head(tmp_path):
    with History.open(tmp_path) as h:
        for i in range(3):
            h.commit_step("s", f"s {i}", {}, {"table": f"state {i}".encode()}, "", {}, 0.1, "t")
        h.undo()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "report"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["head"] == 2 and report["table"] == "state 1"


def test_sigkill_in_a_loop_of_commits_keeps_the_history_consistent(tmp_path):
    last = 0
    for wait_for in (2, 4, 3):
        child = spawn(tmp_path, "loop")
        for _ in range(wait_for):
            line = child.stdout.readline()
            assert line, child.stderr.read()
            last = int(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
        ids = check_consistent(tmp_path)
        # the kill lands between or inside commits: at most one commit beyond the last printed
        assert ids[-1] in (last, last + 1)
    assert len(ids) >= 9


@pytest.mark.parametrize("stage", ["blobs_written", "before_commit"])
def test_sigkill_inside_commit_leaves_the_previous_head(tmp_path, stage):
    with History.open(tmp_path) as h:
        for i in range(2):
            h.commit_step("s", f"s {i}", {}, {"table": os.urandom(300_000)}, "", {}, 0.1, "t")
    child = spawn(tmp_path, stage)
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL and "survived" not in out, err
    doomed = hashlib.sha256(b"doomed artifact").hexdigest()
    assert (tmp_path / ".gonio" / "blobs" / doomed[:2] / doomed[2:]).is_file()  # written first
    assert check_consistent(tmp_path) == [1, 2]
    with History.open(tmp_path) as h:
        new = h.commit_step("s", "again", {}, {"table": os.urandom(300_000)}, "", {}, 0.1, "t")
        assert new == 3 and h.step(3).parent_id == 2  # no step number was used up


def test_two_processes_committing_at_once_extend_one_tree(tmp_path):
    children = [spawn(tmp_path, "count", 12, tag) for tag in ("a", "b")]
    (tmp_path / "go").touch()  # both start committing at about the same time
    outputs = [c.communicate(timeout=120) for c in children]
    for child, (_, err) in zip(children, outputs):
        assert child.returncode == 0, err
    printed = [sorted(int(x) for x in out.split()) for out, _ in outputs]
    assert [len(p) for p in printed] == [12, 12]
    assert sorted(printed[0] + printed[1]) == list(range(1, 25))
    assert check_consistent(tmp_path) == list(range(1, 25))
    with History.open(tmp_path, create=False) as h:
        tags = {s.params["tag"] for s in h.steps()}
        assert tags == {"a", "b"} and len({s.session_id for s in h.steps()}) == 2
