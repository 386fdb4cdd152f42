"""``process``: the pipeline in one command, on a small simulated sweep with known truth.

It must give exactly the session a person gets by typing the steps, stop at a failing
step with the session at the last good one, and scope the steps' parameters.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import python_output
from conftest import run_fail as fail
from conftest import run_ok as ok

from gonio.core.io.dials_expt import read_expt
from gonio.shell.commands import lookup
from gonio.shell.commands.process import HINTS, MARKER, PIPELINE, step_arguments
from gonio.shell.params import split_line
from gonio.shell.session import Session

#: lysozyme-like (P 43 21 2, 79.1 79.1 37.9 A): 40 images of 512x512 px, enough equivalents
#: for symmetry to see the 4-fold
SIM = dict(n_images=40, image_size=(512, 512), d_min=2.5)


def simulate_sweep(folder, seed=1):
    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams

    simulate(SimulationParams.from_preset("lysozyme", output=str(folder), seed=seed, **SIM))
    return f"{folder}/image_#####.cbf"



@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    return folder, simulate_sweep(folder)


@pytest.fixture(scope="module")
def processed(sweep, tmp_path_factory):
    """process to index, then process again (no images) to continue to refine."""
    _, template = sweep
    s = Session(tmp_path_factory.mktemp("by_process"))
    ok(s, f"process {template} index.max_lattices=1 stop_after=index")
    result = ok(s, "process stop_after=refine")
    yield s, result
    s.close()


def branch(session):
    return session.history.path(session.history.head)


def test_process_equals_the_steps_typed_by_hand(sweep, processed, tmp_path):
    folder, template = sweep
    s, result = processed
    by_hand = Session(tmp_path)
    try:
        ok(by_hand, f"import {template}")
        ok(by_hand, "findspots")
        ok(by_hand, "index max_lattices=1")
        ok(by_hand, "rbs")
        summary = by_hand.state.data["rbs"]["summary"]
        best = max(int(n) for n, v in summary.items() if v["recommended"])
        ok(by_hand, f"reindex solution={best}")
        ok(by_hand, "refine")
        a, b = branch(s), branch(by_hand)
        assert [x.line for x in a] == [y.line for y in b]
        # history marks the steps process ran, not those typed
        marked = [ln for ln in ok(s, "history").text.splitlines() if "[process]" in ln]
        assert len(marked) == len(a) + 1  # every step, and the legend
        assert "[process]" not in ok(by_hand, "history").text
        for x, y in zip(a, b):
            assert x.metrics == y.metrics, x.line  # the same computation: equal to the bit
            assert x.params == y.params, x.line
        ca, cb = s.state.experiments[0].crystal, by_hand.state.experiments[0].crystal
        assert np.allclose(ca.A, cb.A, rtol=0, atol=1e-12)
    finally:
        by_hand.close()
    # the highest-symmetry recommended lattice (tP) and the true cell within 0.5 %
    crystal = s.state.experiments[0].crystal
    truth = read_expt(folder / "truth.expt")[0].crystal.unit_cell.parameters
    assert crystal.space_group.hm == "P 4"
    assert np.allclose(crystal.unit_cell.parameters[:3], truth[:3], rtol=5e-3)
    # the summary and the marker of the second (continuing) run
    assert "Space group   P 4" in result.text and "Refined RMSD" in result.text
    marker = json.loads((s.folder / MARKER).read_text())
    assert marker["finished"] and marker["stop_after"] == "refine"
    assert marker["process_steps"] == [x.id for x in branch(s)]  # both runs: every step
    assert [s.history.step(n).command for n in marker["steps"]] == [
        "refine_bravais_settings", "reindex", "refine"]
    assert marker["space_group"] == "P 4"


def test_a_failing_step_stops_there(sweep, tmp_path, monkeypatch, capsys):
    import shutil

    from gonio.shell.main import main

    src, _ = sweep
    data = tmp_path / "data"
    shutil.copytree(src, data)
    image = data / "image_00007.cbf"
    image.write_bytes(image.read_bytes()[:20000])  # truncated in the pixel data
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["process", f"{data}/image_#####.cbf", "stop_after=refine"]) == 1
    err = capsys.readouterr().err
    assert "process stopped at findspots" in err and "image_00007.cbf is truncated" in err
    assert "The session is at step 1 (import" in err
    s = Session(work)
    try:
        assert [x.command for x in branch(s)] == ["import"]
        assert s.head == 1
        marker = json.loads((work / MARKER).read_text())
        assert not marker["finished"] and marker["failed_at"] == "findspots"
        assert marker["process_steps"] == [1]
        # continuing runs the failed step again (and fails again, changing nothing)
        r = s.run_line("process")
        assert not r.ok and "process stopped at findspots" in r.text
        assert s.head == 1 and len(s.history.steps()) == 1
    finally:
        s.close()
    assert main(["process", f"{src}/image_#####.cbf", "stop_after=import"]) == 0


@pytest.mark.parametrize("line, message", [
    ("process {t} d_min=2", "'d_min' is a parameter of several steps (findspots, index, integrate"),
    ("process {t} index.no_such=1", "unknown parameter 'no_such' for index"),
    ("process {t} index.max_lattices=two", "index.max_lattices must be a whole number"),
    ("process {t} stop_after=indexing", "must be one of import, findspots, index"),
    ("process", "process needs the images to start from"),
])
def test_bad_parameters_change_nothing(session, sweep, line, message):
    r = session.run_line(line.format(t=sweep[1]))
    assert not r.ok and message in r.text, r.text
    assert session.head is None and not session.history.steps()


def test_parameters_go_to_their_step():
    ps = lookup("process").paramset
    parsed = ps.parse(split_line("max_lattices=2 rbs.lepage_max_delta=3 "
                                 "refine_bravais_settings.random_seed=5 "
                                 "index.known_symmetry.space_group='P 43 21 2' "
                                 "findspots.sigma_strong=4 refine.scan_varying=False"))
    index = step_arguments(parsed, "index")
    assert index == ["'space_group=P 43 21 2'", "max_lattices=2"]
    # the words the step gets parse back to the same values in the step itself
    values = lookup("index").paramset.parse(split_line(" ".join(index))).values
    assert values["indexing.multiple_lattice_search.max_lattices"] == 2
    assert values["indexing.known_symmetry.space_group"].replace(" ", "") == "P43212"
    assert step_arguments(parsed, "rbs") == ["lepage_max_delta=3.0", "random_seed=5"]
    assert step_arguments(parsed, "findspots") == ["sigma_strong=4.0"]
    assert step_arguments(parsed, "refine") == ["scan_varying=False"]
    assert step_arguments(parsed, "integrate") == []


def test_the_hints_name_real_parameters():
    ps = lookup("process").paramset
    for step, hint in HINTS.items():
        assert step in PIPELINE
        for word in hint.replace(",", " ").split():
            if word.split(".")[0] in PIPELINE and "." in word:
                ps.resolve(word.split("=")[0])  # raises if the hint names a parameter that does not exist


@pytest.mark.slow
def test_the_whole_pipeline_to_the_merged_file(processed):
    s, _ = processed
    start = s.head
    r = ok(s, "process")  # continues after refine: integrate ... export
    steps = branch(s)
    new = [x for x in steps if x.id > start]
    commands = [x.command for x in new]
    marker = json.loads((s.folder / MARKER).read_text())
    if len(new) == 6:  # cut to the resolution of the CC1/2 fit: scale again with that d_min
        assert commands == ["integrate", "symmetry", "scale", "scale", "merge", "export"]
        cut = float(new[3].line.split("d_min=")[1].split()[0])
        assert marker["d_min"] == pytest.approx(cut, abs=0.01)
        assert "resolution cut at" in r.text
    else:
        assert commands == ["integrate", "symmetry", "scale", "merge", "export"]
    assert marker["steps"] == [x.id for x in steps if x.id > start]
    merged = s.folder / "merged.mtz"
    assert str(merged) in marker["files"] and merged.is_file()
    # figures taken from the scale/merge steps; a tetragonal space group with the true cell
    assert marker["space_group"].startswith("P 4")
    assert abs(marker["unit_cell"][0] - 79.1) < 0.5 and abs(marker["unit_cell"][2] - 37.9) < 0.3
    assert 0.9 < marker["cc_half"] <= 1.0 and marker["i_over_sigma"] > 5
    assert 0 < marker["completeness"] <= 1 and marker["d_min"] > 2.4
    for label in ("Space group", "Unit cell", "Resolution", "Completeness", "CC1/2", "I/sigma",
                  "merged.mtz"):
        assert label in r.text
    # the same five steps typed by hand on a branch from refine: the same merged data
    processed_steps, head = new, s.head
    s.history.goto(start)
    for x in processed_steps:
        ok(s, x.command)
    by_hand = branch(s)[-len(new):]
    assert s.head != head and [x.line for x in by_hand] == [x.line for x in processed_steps]
    for x, y in zip(processed_steps, by_hand):
        assert x.metrics == y.metrics, x.line
    a = s.state_at(head).reflections["scaled"]["intensity.scale.value"]
    b = s.state.reflections["scaled"]["intensity.scale.value"]
    assert len(a) > 50 and np.allclose(a, b, rtol=1e-6, atol=0)


def test_quiet_prints_one_line_per_step_and_the_summary(sweep, tmp_path, monkeypatch, capsys):
    from gonio.shell.main import main

    _, template = sweep
    monkeypatch.chdir(tmp_path)
    assert main(["process", template, "stop_after=index", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "gonio>" not in "\n".join(out)  # no step's own tables
    assert [ln.split(",")[0] for ln in out[:3]] == ["[step 1: import", "[step 2: findspots",
                                                   "[step 3: index"]
    assert "spots=" in out[1] and "percent_indexed=" in out[2]  # key figures, as in history
    assert out[3].startswith("process: 3 steps (steps 1-3) up to index")
    assert any(ln.startswith("  Unit cell") for ln in out[4:])
    s = Session(tmp_path)
    try:
        assert s.history.step(3).line == "index"  # quiet is process's own, not the step's
    finally:
        s.close()


def test_preloaded_modules_exist_and_load_in_a_thread():
    """What process imports in the background while integrate runs (PRELOAD) names real
    steps and modules, and the thread imports them (in a new process: none loaded yet)."""
    from gonio.shell.commands.process import PRELOAD

    assert set(PRELOAD) <= set(PIPELINE)
    code = ("import sys, threading\n"
            "from gonio.shell.commands.process import PRELOAD, _preload\n"
            "mods = [m for ms in PRELOAD.values() for m in ms]\n"
            "assert not any(m in sys.modules for m in mods)\n"
            "_preload(mods)\n"
            "[t.join() for t in threading.enumerate() if t.name == 'gonio-preload']\n"
            "print(all(m in sys.modules for m in mods))\n")
    assert python_output(code) == "True"


def test_resolution_cut_follows_the_cc_half_fit():
    """process scales again to the d_min where the CC1/2 fit falls to 0.3 (as xia2), only when
    that cuts data away."""
    from gonio.shell.commands.process import resolution_cut
    from gonio.store.state import State

    def state(cc_half, d_min_data):
        return State().evolve(data={"merging_statistics": {"resolution": {
            "cc_half": cc_half, "d_min_data": d_min_data}}})

    assert resolution_cut(state(1.593, 1.525)) == 1.59
    assert resolution_cut(state(None, 1.525)) is None  # CC1/2 never falls to 0.3
    assert resolution_cut(state(1.527, 1.525)) is None  # at the edge of the data: no cut
    assert resolution_cut(State()) is None  # no scale step


@pytest.mark.slow
def test_continuing_after_an_uncut_scale_runs_the_cut_first(sweep, tmp_path, monkeypatch):
    """When the resolution cut's scale did not run (process killed after the first scale, or
    the cut's scale failed), process continues with that cut before merge, not with merge on
    the uncut data; a d_min given on the line is used instead."""
    import gonio.shell.commands.process as P

    _, template = sweep
    monkeypatch.setattr(P, "resolution_cut", lambda state: None)
    s = Session(tmp_path)
    try:
        ok(s, f"process {template} stop_after=scale")
        assert branch(s)[-1].line == "scale"
        first_scale = s.head
        monkeypatch.setattr(P, "resolution_cut", lambda state: 3.0)  # the fit now says 3.0 A
        r = ok(s, "process stop_after=merge")
        assert [x.line for x in branch(s)[-2:]] == ["scale d_min=3.00", "merge"]
        assert "resolution cut at 3.00 A" in r.text
        assert "Continued from" in branch(s)[-2].log  # from the first scale's model
        s.history.goto(first_scale)
        ok(s, "process scale.d_min=2.8 stop_after=merge")
        assert [x.line for x in branch(s)[-2:]] == ["scale d_min=2.8", "merge"]
        s.history.goto(first_scale)  # stopping after scale again: the cut is still to do
        ok(s, "process stop_after=scale")
        assert [x.line for x in branch(s)[-2:]] == ["scale", "scale d_min=3.00"]
        fail(s, "process stop_after=scale")  # now nothing is left to do
    finally:
        s.close()
