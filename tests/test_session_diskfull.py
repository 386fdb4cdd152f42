"""A full disk during a step (a file-size limit, RLIMIT_FSIZE, in a child process): the step
fails with a clear message, the session stays at the previous step, nothing earlier is lost."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from gonio.store.history import History

resource = pytest.importorskip("resource")

CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    import gonio.shell.session as session_module
    from gonio.shell.command import Command, Outcome
    from gonio.shell.session import Session

    folder, what = sys.argv[1], sys.argv[2]

    class Big(Command):
        def __init__(self):
            super().__init__("bigstep", "makes a large table", "unused:unused", [])

        def function(self):
            def run(ctx, parsed):
                big = os.urandom(3_000_000).hex() if what == "log" else "small log"
                data = {"blob": os.urandom(3_000_000).hex()} if what == "blob" else {"x": 1}
                return Outcome(state=ctx.state.evolve(data=data), text=big)
            return run

    session_module.lookup = lambda name: Big()
    s = Session(folder)
    s.state  # noqa: B018  (loaded before the limit, as a running shell would have it)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    limit = 1_000_000
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    r = s.run_line("bigstep")
    print(json.dumps({"ok": r.ok, "text": r.text, "head": s.head}))
    """
)


def _session_with_steps(folder):
    with History.open(folder) as h:
        for i in range(3):
            h.commit_step("s", f"s {i}", {}, {"data/x": str(i).encode(), f"t{i}": b"t" * 50_000},
                          "", {}, 0.1, "t")
        return {s.id: s.manifest for s in h.steps()}


@pytest.mark.parametrize("what", ["blob", "log"])
def test_write_past_the_file_size_limit_fails_cleanly(tmp_path, what):
    before = _session_with_steps(tmp_path)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), what],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["ok"] and result["head"] == 3
    text = result["text"]
    if what == "blob":  # the artifact file could not be written
        assert "Could not store the results of bigstep" in text
        assert "File too large" in text and "session is at the step it was before" in text
    else:  # the database could not grow
        assert "Could not use the history database" in text and "Nothing was recorded" in text
    # nothing earlier lost; no half-written file; the database intact; work goes on
    con = sqlite3.connect(tmp_path / ".gonio" / "history.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert not list((tmp_path / ".gonio" / "blobs").rglob(".tmp-*"))
    with History.open(tmp_path, create=False) as h:
        assert h.head == 3 and {s.id: s.manifest for s in h.steps()} == before
        assert [h.load(i, "data/x") for i in (1, 2, 3)] == [b"0", b"1", b"2"]
        assert h.commit_step("s", "after", {}, {"data/x": b"9"}, "", {}, 0.1, "t") == 4
