"""End to end through the shell on a simulated sweep with known truth:
simulate -> import -> findspots -> index -> rbs -> reindex, with undo/diff/save/replay."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from conftest import run_ok as ok

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.reflection_table import Flags
from gonio.shell.session import Session


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proc")
    s = Session(folder)
    ok(s, "simulate preset=lysozyme n_images=50 image_size=768,768 d_min=2.5 output=sim seed=3")
    ok(s, "import sim/image_#####.cbf")
    ok(s, "findspots")
    ok(s, "index")
    ok(s, "rbs")
    yield s, folder
    s.close()


def test_findspots_finds_the_strong_reflections(processed):
    s, folder = processed
    state = s.state_at(3)
    strong = state.reflections["strong"]
    truth = read_refl(folder / "sim" / "truth.refl")
    assert len(strong) > 0.5 * len(truth)
    m = s.history.step(3).metrics
    assert m["spots"] == len(strong)


def test_index_recovers_the_true_cell(processed):
    s, folder = processed
    state = s.state_at(4)
    truth = read_expt(folder / "sim" / "truth.expt")[0].crystal
    cryst = state.experiments[0].crystal
    # P1 cell: reduce both (Niggli) and compare
    a = gemmi.UnitCell(*cryst.unit_cell.parameters)
    gv = gemmi.GruberVector(a, None, True)
    gv.niggli_reduce()
    t = gemmi.GruberVector(truth.unit_cell, None, True)
    t.niggli_reduce()
    assert np.allclose(gv.cell_parameters(), t.cell_parameters(), rtol=5e-3)
    indexed = state.reflections["indexed"]
    frac = indexed.get_flags(Flags.indexed).mean()
    assert frac > 0.9
    m = s.history.step(4).metrics
    assert m["rmsd_x_px"] < 0.5 and m["rmsd_y_px"] < 0.5


def test_rbs_recommends_tetragonal_and_reindex_takes_it(processed):
    s, folder = processed
    s.history.goto(5)
    rbs = s.state.data["rbs"]
    best = max((int(n) for n, v in rbs["summary"].items() if v["recommended"]))
    assert rbs["summary"][str(best)]["bravais"] == "tP"
    ok(s, f"reindex solution={best}")
    cryst = s.state.experiments[0].crystal
    c = cryst.unit_cell
    assert cryst.space_group.hm == "P 4"
    assert abs(c.a - 79.1) / 79.1 < 5e-3 and abs(c.b - 79.1) / 79.1 < 5e-3
    assert abs(c.c - 37.9) / 37.9 < 5e-3
    # reindexing does not move the predictions: A h is unchanged for every indexed reflection
    before = s.state_at(5)
    h0 = before.reflections["indexed"]["miller_index"].astype(float)
    h1 = s.state.reflections["indexed"]["miller_index"].astype(float)
    r0 = h0 @ before.experiments[0].crystal.A.T
    r1 = h1 @ cryst.A.T
    sel = np.any(h0 != 0, axis=1)
    assert np.abs(r0[sel] - r1[sel]).max() < 2e-3 * np.abs(r0[sel]).max()
    text = ok(s, f"diff 5 {s.head}").text
    assert "P 4" in text
    # against the truth: cell within 0.05 %, orientation within 0.02 deg (up to 422 symmetry)
    truth = read_expt(folder / "sim" / "truth.expt")[0].crystal
    t = truth.unit_cell
    assert np.allclose(c.parameters[:3], t.parameters[:3], rtol=5e-4)
    angles = []
    for op in gemmi.SpaceGroup("P 4 2 2").operations():
        M = cryst.U @ (np.array(op.rot) / 24.0).T @ truth.U.T
        angles.append(np.degrees(np.arccos(np.clip((np.trace(M) - 1) / 2, -1, 1))))
    assert min(angles) < 0.02


def test_save_and_reload_indexed(processed, tmp_path):
    s, folder = processed
    s.history.goto(4)
    ok(s, f"save prefix={tmp_path / 'indexed'}")
    el = read_expt(tmp_path / "indexed.expt")
    t = read_refl(tmp_path / "indexed.refl")
    assert el[0].crystal is not None
    assert "miller_index" in t and len(t) == len(s.state.reflections["indexed"])


def test_bad_order_and_values(tmp_path):
    s = Session(tmp_path)
    for line, words in [("findspots", "import"), ("index", "import"), ("rbs", "index"),
                        ("reindex solution=1", "index")]:
        r = s.run_line(line)
        assert not r.ok and words in r.text, r.text
    assert s.head is None and s.history.steps() == []
    s.close()


def test_findspots_bad_parameters(processed):
    s, folder = processed
    s.history.goto(2)
    for line, words in [("findspots d_min=10 d_max=5", "d_min"), ("findspots nproc=0", "nproc"),
                        ("findspots kernel_size=2000,2000", "kernel_size"),
                        ("findspots d_maxx=20", "d_max")]:
        n = len(s.history.steps())
        r = s.run_line(line)
        assert not r.ok and words in r.text, r.text
        assert len(s.history.steps()) == n and s.head == 2


def test_findspots_names_an_image_gone_missing(tmp_path):
    s = Session(tmp_path)
    ok(s, "simulate n_images=5 image_size=256,256 output=sim")
    ok(s, "import sim/image_#####.cbf")
    (tmp_path / "sim" / "image_00003.cbf").unlink()
    r = s.run_line("findspots")
    assert not r.ok and "image_00003.cbf" in r.text, r.text
    assert s.head == 2
    s.close()


def test_reindex_operator_and_back_onto_a_reference(processed, tmp_path):
    s, folder = processed
    s.history.goto(4)
    ok(s, f"save prefix={tmp_path / 'ref'}")
    h_ref = s.state.reflections["indexed"]["miller_index"].copy()
    ok(s, "reindex change_of_basis_op=b,c,a")
    h_cb = s.state.reflections["indexed"]["miller_index"]
    assert np.array_equal(h_cb, h_ref[:, [1, 2, 0]])
    ok(s, f"reindex reference={tmp_path / 'ref.expt'}")
    assert np.array_equal(s.state.reflections["indexed"]["miller_index"], h_ref)
    r = s.run_line("reindex change_of_basis_op=a,a,c")
    assert not r.ok and "a,a,c" in r.text
    r = s.run_line("reindex reference=missing.expt")
    assert not r.ok and "missing.expt" in r.text
    r = s.run_line("reindex solution=99")
    assert not r.ok


def test_refine_after_reindex_keeps_the_symmetry(processed):
    s, folder = processed
    s.history.goto(5)
    best = max(int(n) for n, v in s.state.data["rbs"]["summary"].items() if v["recommended"])
    ok(s, f"reindex solution={best}")
    text = ok(s, "refine").text
    assert "RMSDs by experiment" in text
    m = s.history.step(s.head).metrics
    assert m["rmsd_x_px"] < 0.3 and m["rmsd_y_px"] < 0.3 and m["rmsd_z_images"] < 0.3
    c = s.state.experiments[0].crystal
    assert c.space_group.hm == "P 4"
    a, b, cc, al, be, ga = c.unit_cell.parameters
    assert a == pytest.approx(b, abs=1e-9) and al == pytest.approx(90) and ga == pytest.approx(90)
    r = s.run_line("refine crystal.fix=all detector.fix=all beam.fix=all goniometer.fix=all")
    assert not r.ok and "nothing to refine" in r.text
