"""``gonio process --many``: three small simulated sweeps (one with a truncated image) on a
local Dask cluster of 2 workers, a rerun that skips the finished sessions, and an existing
cluster (a real dask scheduler and worker started here on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import python_output

from gonio.shell.commands.process import MARKER
from gonio.shell.params import ParameterError
from gonio.shell.process_many import (
    ProcessManyError,
    expand_sweeps,
    main,
    session_folders,
    template_of,
)
from gonio.shell.session import Session
from tests.test_process import simulate_sweep

pytest.importorskip("distributed")

TRUE_CELL = (37.9, 79.1, 79.1)  # the lysozyme preset, sorted lengths (A)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    data = tmp_path_factory.mktemp("many")
    for k in (1, 2, 3):
        simulate_sweep(data / f"sweep_{k}", seed=k)
    broken = data / "sweep_3" / "image_00005.cbf"
    good = broken.read_bytes()
    broken.write_bytes(good[:15000])  # truncated in the pixel data
    return data, good


def run(args, cwd):
    out = io.StringIO()
    rc = main(args, cwd=cwd, stream=out)
    return rc, out.getvalue()


def rows(text):
    """The result table's rows by sweep name."""
    return {line.split()[0]: line for line in text.splitlines()
            if line.startswith("sweep_") and " " in line}


def test_sweeps_from_a_glob_and_a_list(sweeps, tmp_path):
    sweeps, _ = sweeps
    found = expand_sweeps(f"{sweeps}/*/image_0000[12].cbf", tmp_path)
    assert found == [f"{sweeps}/sweep_{k}/image_#####.cbf" for k in (1, 2, 3)]
    listing = tmp_path / "sweeps.txt"
    listing.write_text(f"# two of them\n{sweeps}/sweep_2/image_#####.cbf\n\n"
                       f"{sweeps}/sweep_1/image_#####.cbf\n")
    assert expand_sweeps(str(listing), tmp_path) == found[1::-1]
    # same image names in several folders: the folder names the session
    assert [f.name for f in session_folders(found, tmp_path)] == [
        "sweep_1_image", "sweep_2_image", "sweep_3_image"]
    assert template_of("/d/x_1_0042.cbf.gz") == "/d/x_1_####.cbf.gz"
    with pytest.raises(ProcessManyError, match="No files match"):
        expand_sweeps(f"{sweeps}/*/nothing_*.cbf", tmp_path)
    with pytest.raises(ParameterError, match="unknown parameter 'no_such' for index"):
        run(["--many", str(listing), "index.no_such=1"], tmp_path)
    with pytest.raises(ProcessManyError, match="--workers takes a whole number"):
        run(["--many", str(listing), "--workers", "0"], tmp_path)


@pytest.mark.slow
def test_many_on_a_local_cluster_then_rerun(sweeps, tmp_path):
    sweeps, good = sweeps
    args = ["--many", f"{sweeps}/*/image_00001.cbf", "--out", "sessions", "--workers", "2",
            "stop_after=index"]
    rc, text = run(args, tmp_path)
    assert rc == 1, text
    table = rows(text)
    assert " ok " in table["sweep_1_image"] and " ok " in table["sweep_2_image"], text
    assert "FAILED" in table["sweep_3_image"] and "image_00005.cbf is truncated" in text
    assert "process stopped at findspots" in table["sweep_3_image"]
    assert "[done 2 | running 0 | failed 1 | queued 0]" in text
    assert "; dashboard http://" in text  # bokeh installed: the Dask dashboard runs
    out = tmp_path / "sessions"
    for k in (1, 2):
        folder = out / f"sweep_{k}_image"
        assert json.loads((folder / MARKER).read_text())["stop_after"] == "index"
        s = Session(folder)
        try:  # an ordinary session, and the true cell (P1 after index) within 0.5 %
            assert [x.command for x in s.history.path(s.head)] == ["import", "findspots", "index"]
            cell = sorted(s.state.experiments[0].crystal.unit_cell.parameters[:3])
            assert np.allclose(cell, TRUE_CELL, rtol=5e-3)
        finally:
            s.close()
    failed = Session(out / "sweep_3_image")
    try:
        assert [x.command for x in failed.history.path(failed.head)] == ["import"]
    finally:
        failed.close()
    # the image copied again: the rerun skips the two finished sessions and resumes the
    # broken one from its last good step (import), with no second import
    (sweeps / "sweep_3" / "image_00005.cbf").write_bytes(good)
    rc, text = run(args, tmp_path)
    assert rc == 0 and "3 sweeps, 2 already finished (skipped)" in text, text
    table = rows(text)
    assert "skipped (finished)" in table["sweep_1_image"] and " ok " in table["sweep_3_image"]
    for name, commands in (("sweep_1_image", ["import", "findspots", "index"]),
                           ("sweep_3_image", ["import", "findspots", "index"])):
        s = Session(out / name)
        try:
            assert [x.command for x in s.history.steps()] == commands
        finally:
            s.close()


def test_warm_up_loads_what_the_steps_import():
    """A worker's warm-up (in a new process, as a worker starts) imports every module of
    WARM_MODULES and loads the kernels of process in the background."""
    code = ("import sys\n"
            "from gonio.shell import process_many as m\n"
            "assert not any(x in sys.modules for x in m.WARM_MODULES[3:])\n"
            "m.warm_up(); m.warm_up(); m._warm[0].join(timeout=120)\n"
            "assert len(m._warm) == 1 and not m._warm[0].is_alive()\n"
            "print(sorted(set(m.WARM_MODULES) - set(sys.modules)))\n")
    assert python_output(code, timeout=200) == "[]"


@pytest.mark.slow
def test_many_on_an_existing_scheduler(sweeps, tmp_path):
    sweeps, _ = sweeps
    listing = tmp_path / "sweeps.txt"
    listing.write_text(f"{sweeps}/sweep_2/image_#####.cbf\n")
    info = tmp_path / "scheduler.json"
    python = sys.executable
    scheduler = subprocess.Popen(
        [python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(info)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        for _ in range(300):
            if info.exists() and info.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = subprocess.Popen(
            [python, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rc, text = run(["--many", str(listing), "--scheduler", address, "--out", "out",
                        "stop_after=findspots"], tmp_path)
        assert rc == 0, text
        assert f"on the Dask cluster at {address}" in text
        folder = tmp_path / "out" / "image"
        marker = json.loads((folder / MARKER).read_text())
        assert marker["stop_after"] == "findspots" and marker["images"] == [
            f"{sweeps}/sweep_2/image_#####.cbf"]
        assert "gonio> findspots" in (folder / "gonio_process.log").read_text()
        # the worker, started without --preload, was warmed up by the plugin process --many
        # registered when it connected
        from distributed import Client

        with Client(address, timeout="30s") as client:  # eval: nothing of this module to pickle
            warmed = client.run(eval, "bool(__import__('gonio.shell.process_many', "
                                "fromlist=['_warm'])._warm)")
        assert list(warmed.values()) == [True]
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


@pytest.mark.slow
def test_many_killed_then_started_again_resumes(sweeps, tmp_path):
    """The batch killed (SIGKILL of the whole process group, workers included) after the
    first sweep finished: started again, it skips that one and finishes the other from the
    last step its session recorded, with no step done twice."""
    import os
    import signal

    sweeps, _ = sweeps
    listing = tmp_path / "sweeps.txt"
    listing.write_text(f"{sweeps}/sweep_1/image_#####.cbf\n{sweeps}/sweep_2/image_#####.cbf\n")
    args = ["--many", str(listing), "--out", "sessions", "--workers", "1",
            "stop_after=index"]
    batch = subprocess.Popen([sys.executable, "-m", "gonio.shell.main", "process", *args],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    first = tmp_path / "sessions" / "sweep_1_image" / MARKER
    try:
        for _ in range(1200):
            if first.exists() and json.loads(first.read_text() or "{}").get("finished"):
                break
            assert batch.poll() is None, "the batch ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the first sweep did not finish in 60 s")
    finally:
        os.killpg(batch.pid, signal.SIGKILL)
        batch.wait(timeout=30)
    second = tmp_path / "sessions" / "sweep_2_image" / MARKER
    assert not (second.exists() and json.loads(second.read_text() or "{}").get("finished"))
    rc, text = run(args, tmp_path)
    assert rc == 0, text
    assert "2 sweeps, 1 already finished (skipped)" in text, text
    table = rows(text)
    assert "skipped (finished)" in table["sweep_1_image"] and " ok " in table["sweep_2_image"]
    s = Session(tmp_path / "sessions" / "sweep_2_image")
    try:
        assert [x.command for x in s.history.steps()] == ["import", "findspots", "index"]
        cell = sorted(s.state.experiments[0].crystal.unit_cell.parameters[:3])
        assert np.allclose(cell, TRUE_CELL, rtol=5e-3)
    finally:
        s.close()
