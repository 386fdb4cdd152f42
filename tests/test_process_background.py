"""process records each step in a background thread while the next step computes.

What is stored must be exactly the state each step computed (and that the next step
started from); a record that fails stops process at that step with the session at the
step before; a process killed while a step is being recorded leaves a valid session
(the step is simply not there) from which ``process`` continues.
"""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import run_ok as ok
from test_process import simulate_sweep

from gonio.core.io.dials_expt import expt_to_bytes
from gonio.core.io.dials_refl import refl_to_bytes
from gonio.shell.commands.process import MARKER, PIPELINE
from gonio.shell.session import Session
from gonio.store.maintenance import check


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return simulate_sweep(tmp_path_factory.mktemp("sweep"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commands(session):
    return [x.command for x in session.history.path(session.history.head)]


def test_the_stored_steps_are_the_states_computed(template, tmp_path):
    s = Session(tmp_path)
    try:
        ok(s, f"process {template} stop_after=refine")
        steps = s.history.path(s.head)
        assert [x.command for x in steps] == ["import", "findspots", "index",
                                             "refine_bravais_settings", "reindex", "refine"]
        for info in steps:
            assert info.id in s._states  # the state the step computed, kept in memory
            state = s.state_at(info.id)
            manifest = info.manifest
            assert manifest["experiments"] == sha(expt_to_bytes(state.experiments)), info.line
            tables = {n.split("/", 1)[1] for n in manifest if n.startswith("reflections/")}
            assert tables == set(state.reflections), info.line
            for name in tables:
                assert manifest[f"reflections/{name}"] == sha(
                    refl_to_bytes(state.reflections[name])), (info.line, name)
            for name, value in state.data.items():
                assert manifest[f"data/{name}"] == sha(json.dumps(value).encode())
    finally:
        s.close()
    assert check(tmp_path).ok
    # and read back by a new process, each step's crystal is the one computed
    again = Session(tmp_path)
    try:
        assert again.state.experiments[0].crystal.space_group.hm == "P 4"
    finally:
        again.close()


def test_a_step_that_cannot_be_recorded_stops_process_there(template, tmp_path):
    s = Session(tmp_path)
    put = s.history.blobs.put

    def full_disk(data):
        if len(data) > 1_000_000:  # the first large artifact: findspots' strong table
            raise OSError(errno.ENOSPC, "No space left on device")
        return put(data)

    s.history.blobs.put = full_disk
    try:
        r = s.run_line(f"process {template} stop_after=rbs")
        assert not r.ok
        assert "process stopped at findspots: Could not store the results of findspots" in r.text
        assert "No space left on device" in r.text and "The session is at step 1 (import" in r.text
        # index, computed while findspots was being recorded, was not recorded either
        assert commands(s) == ["import"] and len(s.history.steps()) == 1
        marker = json.loads((tmp_path / MARKER).read_text())
        assert marker["failed_at"] == "findspots" and marker["process_steps"] == [1]
        s.history.blobs.put = put  # space again: process continues from import
        ok(s, "process stop_after=index")
        assert commands(s) == ["import", "findspots", "index"]
    finally:
        s.close()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from gonio.shell.session import Session
    from gonio.store.history import History

    record_step = History.record_step

    def dying(self, command, *args, **kwargs):
        if command == sys.argv[3]:  # killed just before its transaction commits
            self._fault_hook = lambda stage: (stage == "before_commit"
                                              and os.kill(os.getpid(), signal.SIGKILL))
        return record_step(self, command, *args, **kwargs)

    History.record_step = dying
    s = Session(sys.argv[1])
    print(s.run_line(f"process {sys.argv[2]} stop_after=refine").text)
""")


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["index", "refine"])
def test_killed_while_a_step_is_recorded_then_process_continues(template, tmp_path, victim):
    r = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path), template, victim],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    assert check(tmp_path).ok
    s = Session(tmp_path)
    try:
        done = PIPELINE.index(victim)  # the steps before the victim are committed, it is not
        assert commands(s) == ["import", "findspots", "index", "refine_bravais_settings",
                               "reindex"][:done]
        ok(s, "process stop_after=refine")
        assert commands(s) == ["import", "findspots", "index", "refine_bravais_settings",
                               "reindex", "refine"]  # every step once
        assert s.state.experiments[0].crystal.space_group.hm == "P 4"
    finally:
        s.close()


def test_each_step_line_follows_its_output(template, tmp_path, monkeypatch, capsys):
    """The [step N: ...] line, printed once the step is committed, still comes after the
    step's own output and before the next step's."""
    from gonio.shell.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["process", template, "stop_after=index"]) == 0
    out = capsys.readouterr().out.splitlines()
    marks = [ln.split(",")[0].split(" ")[1] if ln.startswith("gonio> ") else ln.split(",")[0]
             for ln in out if ln.startswith(("gonio> ", "[step "))]
    assert marks == ["import", "[step 1: import", "findspots", "[step 2: findspots", "index",
                     "[step 3: index"]
