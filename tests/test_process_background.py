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

import msgpack
import pytest
from conftest import run_ok as ok
from test_process import simulate_sweep

from gonio.core.io.dials_expt import expt_to_bytes
from gonio.core.io.dials_refl import refl_to_bytes
from gonio.core.reflection_table import ReflectionTable
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
            for name in tables:  # stored by columns: each column blob is the computed one
                table = state.reflections[name]
                header = msgpack.unpackb(s.history.load(info.id, f"reflections/{name}"),
                                        strict_map_key=False)
                assert header[2]["columns"] == list(table.keys()), (info.line, name)
                for column, values in table.items():
                    one = ReflectionTable({column: values}, table.experiment_identifiers)
                    assert manifest[f"columns/{name}/{column}"] == sha(refl_to_bytes(one)), (
                        info.line, name, column)
            for name, value in state.data.items():
                assert manifest[f"data/{name}"] == sha(json.dumps(value).encode())
        # the shoeboxes found by findspots are stored once, whatever table carries them
        shoeboxes = {x.manifest.get(f"columns/{t}/shoebox") for x in steps[1:]
                     for t in ("strong", "indexed")}
        assert len(shoeboxes - {None}) == 1
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


def test_a_new_session_creates_its_database_when_the_first_step_is_recorded(template, tmp_path):
    """Nothing to read in a new folder: the first step computes while the database does not
    exist yet, and its (background) record creates it; a session that records nothing
    leaves no database behind."""
    from gonio.store.layout import DATABASE_NAME, SESSION_DIR

    database = tmp_path / SESSION_DIR / DATABASE_NAME
    s = Session(tmp_path)
    try:
        assert not database.exists() and s.head is None
        result = s.run_line(f"import {template}", defer=True)
        assert result.ok, result.text
        s.wait_recorded()
        assert [r.step for r in s.recorded()] == [1]
        assert database.is_file() and s.head == 1
        assert s.state.experiments[0].scan.num_images == 40  # the simulated sweep
    finally:
        s.close()
    assert check(tmp_path).ok
    idle = tmp_path / "idle"
    idle.mkdir()
    s = Session(idle)
    assert s.run_line("help import").ok
    s.close()
    assert not (idle / SESSION_DIR / DATABASE_NAME).exists()


def test_a_new_session_whose_database_cannot_be_made_stops_at_the_first_step(
        template, tmp_path, monkeypatch):
    """The database of a new session is made by the first record: if that fails, process
    stops at the first step with the store's error, and nothing is recorded."""
    import gonio.shell.session as session_module
    from gonio.store.errors import NoSessionError

    def cannot(folder, read_only=False):
        raise NoSessionError(f"Cannot start a session in {folder}: No space left on device.")

    real = session_module._open_history
    monkeypatch.setattr(session_module, "_open_history", cannot)
    s = Session(tmp_path)
    try:
        r = s.run_line(f"process {template} stop_after=index")
        assert not r.ok
        assert "process stopped at import: Cannot start a session" in r.text
        assert "The session is at the empty start (step 0)" in r.text
        monkeypatch.setattr(session_module, "_open_history", real)  # space again
        ok(s, f"process {template} stop_after=findspots")
        assert commands(s) == ["import", "findspots"]
    finally:
        s.close()
