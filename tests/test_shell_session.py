"""The shell's command runner, history commands and error handling, on the real MyD88 files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path, run_fail, run_ok

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl


@pytest.fixture
def myd88(session):
    expt = data_path("myd88", "imported.expt")
    refl = data_path("myd88", "strong.refl")
    run_ok(session, f"import {expt} {refl}")
    return session


def test_import_dials_files_and_show(myd88):
    state = myd88.state
    assert len(state.experiments) == 1
    assert len(state.reflections["strong"]) == 646
    text = run_ok(myd88, "show").text
    assert "wavelength: 0.025100" in text
    # Timepix 516 x 516, 55 um pixels; the distance is the one put into the file (2193 mm)
    assert "516 x 516" in text and "2193.00" in text
    assert "Max resolution (at corners)" in text and "Max resolution (inscribed)" in text
    assert "strong: 646 reflections" in text


def test_show_beam_centre_matches_geometry(myd88):
    e = myd88.state.experiments[0]
    p = e.detector[0]
    bc = p.beam_centre_mm(e.beam.s0)
    # the beam along -z meets the panel where origin + x fast + y slow has zero x,y components
    lab = p.lab_coord(bc[None, :])[0]
    assert abs(lab[0]) < 1e-9 and abs(lab[1]) < 1e-9
    text = myd88.run_line("show").text
    assert f"{bc[0]:.2f}, {bc[1]:.2f}" in text


def test_save_round_trip(myd88, tmp_path):
    run_ok(myd88, "save prefix=out")
    el = read_expt(tmp_path / "out.expt")
    t = read_refl(tmp_path / "out.refl")
    orig = read_refl(data_path("myd88", "strong.refl"))
    assert len(t) == 646
    assert np.array_equal(t["xyzobs.px.value"], orig["xyzobs.px.value"])
    assert np.allclose(el[0].goniometer.rotation_axis, [0.7825634081905295, -0.6225708892658111, 0])


def test_history_undo_redo_goto_branch(myd88):
    assert myd88.head == 1
    run_ok(myd88, "undo")
    assert myd88.head is None
    assert myd88.state.is_empty
    run_ok(myd88, "redo")
    assert myd88.head == 1
    run_ok(myd88, "goto 0")
    # a new command after undo starts a branch; step 1 stays
    run_ok(myd88, f"import {data_path('x4_xds', 'indexed.expt')}")
    assert myd88.head == 2
    assert myd88.history.step(2).parent_id is None
    assert [s.id for s in myd88.history.steps()] == [1, 2]
    run_ok(myd88, "goto 1")
    assert len(myd88.state.reflections["strong"]) == 646
    text = run_ok(myd88, "history").text
    assert "*1" in text and "import" in text


def test_diff_shows_changed_models(myd88):
    run_ok(myd88, f"import {data_path('x4_xds', 'indexed.expt')}")
    text = run_ok(myd88, "diff 1 2").text
    assert "wavelength (A)" in text and "0.025100" in text and "0.979500" in text
    assert "unit cell" in text


def test_history_script_and_replay(myd88, tmp_path):
    script = run_ok(myd88, "history script=True").text
    lines = [ln for ln in script.splitlines() if ln and not ln.startswith("#")]
    assert lines == [myd88.history.step(1).line]


def test_help(session):
    text = run_ok(session, "help").text
    assert "findspots (find_spots)" in text and "refine_bravais_settings (rbs)" in text
    text = run_ok(session, "help import").text
    assert "geometry.detector.distance" in text and "mm" in text
    assert run_ok(session, "import -h").text == text


def test_errors_leave_session_unchanged(myd88, tmp_path):
    msg = run_fail(myd88, "import /no/such/file.cbf")
    assert "/no/such/file.cbf" in msg and "no such file" in msg
    msg = run_fail(myd88, "import distance=-5")
    assert "distance" in msg and "> 0" in msg
    msg = run_fail(myd88, "import d_maxx=20")
    assert "d_maxx" in msg
    msg = run_fail(myd88, "frobnicate")
    assert "not a gonio command" in msg
    msg = run_fail(myd88, "goto 99")
    assert "99" in msg
    bad = tmp_path / "bad.expt"
    bad.write_text(json.dumps({"__id__": "SomethingElse"}))
    msg = run_fail(myd88, f"import {bad}")
    assert "not a DIALS experiment list" in msg
    trunc = tmp_path / "trunc.refl"
    trunc.write_bytes(data_path("myd88", "strong.refl").read_bytes()[:1000])
    msg = run_fail(myd88, f"import {data_path('myd88', 'imported.expt')} {trunc}")
    assert "trunc.refl" in msg


def test_show_in_empty_session_says_what_to_do(session):
    msg = run_fail(session, "show")
    assert "import" in msg


def test_session_resumes_after_restart(tmp_path):
    from gonio.shell.session import Session

    s = Session(tmp_path)
    run_ok(s, f"import {data_path('myd88', 'imported.expt')} {data_path('myd88', 'strong.refl')}")
    s.close()
    s2 = Session(tmp_path)
    assert s2.head == 1 and len(s2.state.reflections["strong"]) == 646
    s2.close()


def _gonio(args, cwd, stdin=None):
    return subprocess.run([sys.executable, "-m", "gonio.shell.main", *args], cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_command_line_modes(tmp_path):
    expt, refl = data_path("myd88", "imported.expt"), data_path("myd88", "strong.refl")
    r = _gonio(["-c", f"import {expt} {refl}; show"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "strong: 646 reflections" in r.stdout
    script = tmp_path / "steps.gonio"
    script.write_text("# a comment\nshow\nimport nonsense_parameter=3\nshow\n")
    r = _gonio(["run", str(script)], tmp_path)
    assert r.returncode == 1 and "nonsense_parameter" in r.stderr
    r = _gonio([], tmp_path, stdin="history\n")
    assert r.returncode == 0 and "import" in r.stdout
    r = _gonio(["history", "--script"], tmp_path)
    assert r.returncode == 0 and f"import {expt} {refl}" in r.stdout
    r = _gonio(["replay"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = _gonio(["history"], tmp_path)
    assert r.stdout.count("imported.expt") == 2


def test_start_is_fast_and_compiles_nothing(tmp_path):
    code = ("import sys, time; t=time.perf_counter(); from gonio.shell.main import main; "
            "main(['-c', 'help']); print('numba' in sys.modules, time.perf_counter()-t)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    loaded, seconds = r.stdout.split()[-2:]
    assert loaded == "False"
    assert float(seconds) < 2.0  # measured ~0.5 s; benchmarks/bench_startup.py reports it


def test_help_short_name_shows_every_place(session):
    text = run_ok(session, "help d_min").text
    assert "spotfinder.filter.d_min" in text and "findspots" in text
    assert "index" in text


def test_phil_file_on_the_command_line(myd88, tmp_path):
    (tmp_path / "axis.phil").write_text(
        "# refine the rotation axis\nrefinement {\n  parameterisation {\n"
        "    goniometer { fix = None }\n    detector.fix = distance\n  }\n}\n")
    run_ok(myd88, "import goniometer.axis=-107,-122,0")
    run_ok(myd88, "index axis.phil")
    step = myd88.history.step(myd88.head)
    assert step.params["refinement.parameterisation.goniometer.fix"] is None
    assert step.params["refinement.parameterisation.detector.fix"] == ["distance"]
    # MyD88 with the right axis sense: most spots index with sub-pixel RMSDs
    assert step.metrics["percent_indexed"] > 85
    assert step.metrics["rmsd_x_px"] < 1 and step.metrics["rmsd_y_px"] < 1
    assert step.metrics["rmsd_z_images"] < 0.35
    bad = tmp_path / "bad.phil"
    bad.write_text("refinement { parameterisation { goniometer { fixx = None } } }\n")
    msg = run_fail(myd88, "index bad.phil")
    assert "bad.phil" in msg and "fixx" in msg


def test_session_example_runs(tmp_path):
    import os

    data = data_path()
    script = Path(__file__).resolve().parents[1] / "session_examples" / "real_data.gonio"
    env = dict(os.environ, GONIO_DATA=str(data))
    r = subprocess.run([sys.executable, "-m", "gonio.shell.main", "run", str(script)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "strong: 646 reflections" in r.stdout and "strong: 742 reflections" in r.stdout
    assert "(-0.6594, -0.7518, 0.0000)" in r.stdout  # the axis set in step 2, seen by diff


def test_xds_files_with_swapped_origin_index_after_beam_search(session):
    """x4's XDS.INP has ORGX/ORGY swapped (the beam 43 px off each way): search_beam_position
    puts it back, then index gives the tetragonal cell with XDS's own indices."""
    run_ok(session, f"import {data_path('x4_xds', 'XDS.INP')} {data_path('x4_xds', 'SPOT.XDS')}")
    run_ok(session, "search_beam_position")
    e = session.state.experiments[0]
    p = e.detector[0]
    bc = p.millimeter_to_pixel(p.beam_centre_mm(e.beam.s0)[None, :])[0]
    assert np.hypot(*(bc - [1236.1, 1278.3])) < 1.5  # DIALS's refined beam centre
    run_ok(session, "index")
    m = session.history.step(session.head).metrics
    assert m["percent_indexed"] > 90
    c = sorted(session.state.experiments[0].crystal.unit_cell.parameters[:3])
    assert np.allclose(c, [39.80, 42.45, 42.45], rtol=5e-3)


def test_the_program_ends_without_collecting_its_libraries():
    """The ``gonio`` program freezes the garbage collector at exit (atexit), so that
    Python's finalisation does not walk the ~200,000 objects of the loaded libraries several
    times (0.4-1 s at the end of a ``gonio process``). Checked in a new process by a hook that runs after it (atexit runs
    the last registered first)."""
    from conftest import python_output

    code = ("import atexit, gc, os, tempfile\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "os.chdir(tempfile.mkdtemp())\n"
            "from gonio.shell.main import main\n"
            "print('exit', main(['-c', 'help']), main(['process']))\n")
    assert python_output(code).splitlines()[-2:] == ["exit 0 1", "frozen True"]
