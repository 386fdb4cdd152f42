"""Many sweeps and crystals in one session (issue 14), on simulated sweeps with known truth.

Three small-molecule sweeps on one detector: A and B are one crystal (the same
orientation at phi = 0) measured from 0 and from 90 deg, C is another crystal
(another cell, monoclinic, another orientation) from 30 deg. Checked against the
truth: model sharing on import, spots per experiment, indexing per sweep and jointly
(the true cell, one crystal), experiment selection, split, joint refinement,
integration, symmetry and scaling of several sweeps, and the errors.
"""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from conftest import run_fail as fail
from conftest import run_ok as ok

from gonio.core.indexing.index import same_crystal
from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.reflection_table import Flags
from gonio.shell.session import Session

SWEEPS = {  # folder: simulate parameters (the seed makes the structure factors: one crystal,
    # one seed)
    "a": "unit_cell=5.43,8.14,12.04,90,90,90 orientation=10,20,30 phi_start=0 seed=1",
    "b": "unit_cell=5.43,8.14,12.04,90,90,90 orientation=10,20,30 phi_start=90 seed=1",
    "c": "space_group=P121 unit_cell=6.21,7.93,13.12,90,97.5,90 orientation=40,-15,70 "
         "phi_start=30 seed=3",
}




@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweeps")
    s = Session(folder)
    for name, extra in SWEEPS.items():
        ok(s, f"simulate preset=small_molecule n_images=20 image_size=512,512 {extra} "
              f"output={name}")
    ok(s, "import a/image_#####.cbf b/image_#####.cbf c/image_#####.cbf")
    steps = {"import": s.head}
    ok(s, "findspots")
    steps["findspots"] = s.head
    truth = [read_expt(folder / n / "truth.expt")[0].crystal for n in SWEEPS]
    yield s, folder, steps, truth
    s.close()


def _reduced(cell) -> np.ndarray:
    """Niggli cell with each angle folded to <= 90 deg: a cell with an angle at 90 deg within
    the refinement's error reduces to the all-acute or the all-obtuse form by chance, and
    the two describe the same lattice."""
    g = gemmi.GruberVector(gemmi.UnitCell(*cell.parameters), None, True)
    g.niggli_reduce()
    abc_angles = np.array(g.cell_parameters())
    abc_angles[3:] = np.minimum(abc_angles[3:], 180.0 - abc_angles[3:])
    return abc_angles


def _cell_ok(crystal, true_crystal, rtol=3e-3):
    np.testing.assert_allclose(_reduced(crystal.unit_cell), _reduced(true_crystal.unit_cell),
                               rtol=rtol)


def test_import_shares_the_instrument_not_the_scans(sweeps):
    s, folder, steps, _ = sweeps
    el = s.state_at(steps["import"]).experiments  # as stored and read back
    assert len(el) == 3 and len({id(e.imageset) for e in el}) == 3
    assert el[0].beam is el[1].beam is el[2].beam
    assert el[0].detector is el[1].detector is el[2].detector
    assert el[0].goniometer is el[2].goniometer
    assert [e.scan.oscillation[0] for e in el] == pytest.approx([0.0, 90.0, 30.0])


def test_findspots_ids_per_experiment(sweeps):
    s, folder, steps, _ = sweeps
    strong = s.state_at(steps["findspots"]).reflections["strong"]
    for k, name in enumerate(SWEEPS):
        n = int((strong["id"] == k).sum())
        truth = read_refl(folder / name / "truth.refl")
        assert 0.5 * len(truth) < n < 1.5 * len(truth)
    assert strong.experiment_identifiers == {
        k: e.identifier for k, e in enumerate(s.state_at(steps["findspots"]).experiments)}


def test_auto_indexes_different_crystals_each_on_its_own(sweeps):
    s, folder, steps, truth = sweeps
    ok(s, f"goto {steps['findspots']}")
    text = ok(s, "index").text  # joint_indexing=Auto: C is another crystal
    assert "each of the 3 sweeps was indexed on its own" in text
    el = s.state_at(s.head).experiments
    assert len(el) == 3 and len({id(e.crystal) for e in el}) == 3
    for e, t in zip(el, truth):
        _cell_ok(e.crystal, t)
        same, angle = same_crystal(t, e.crystal)
        assert same and angle < 0.1
    indexed = s.state_at(s.head).reflections["indexed"]
    for k in range(3):
        sel = indexed["imageset_id"] == k
        assert indexed.get_flags(Flags.indexed)[sel].mean() > 0.9
        assert set(np.unique(indexed["id"][sel])) <= {k, -1}


def test_auto_indexes_one_crystal_jointly(sweeps):
    s, folder, steps, truth = sweeps
    ok(s, f"goto {steps['findspots']}")
    text = ok(s, "index experiments=0,1").text
    assert "indexed jointly as one crystal" in text
    el = s.state_at(s.head).experiments
    assert el[0].crystal is el[1].crystal and el[2].crystal is None


def test_separately_by_choice_notes_one_crystal(sweeps):
    s, folder, steps, truth = sweeps
    ok(s, f"goto {steps['findspots']}")
    text = ok(s, "index experiments=0,1 joint_indexing=False").text
    assert "look like one crystal" in text
    el = s.state_at(s.head).experiments
    assert el[0].crystal is not el[1].crystal
    for e in el[:2]:
        _cell_ok(e.crystal, truth[0])


@pytest.fixture(scope="module")
def joint_refined(sweeps):
    """A and B indexed jointly (one crystal model) and refined together (static): the
    steps, for the tests that start from there (whichever runs first)."""
    s, _, steps, _ = sweeps
    if "joint_refined" not in steps:
        ok(s, f"goto {steps['findspots']}")
        ok(s, "index joint_indexing=True experiments=0,1")
        steps["joint_indexed"] = s.head
        ok(s, "refine experiments=0,1 scan_varying=False")
        steps["joint_refined"] = s.head
    return steps["joint_refined"]


def test_joint_indexing_gives_one_crystal_and_refines_jointly(sweeps, joint_refined):
    s, folder, steps, truth = sweeps
    el = s.state_at(steps["joint_indexed"]).experiments
    assert el[0].crystal is el[1].crystal and el[2].crystal is None
    _cell_ok(el[0].crystal, truth[0], rtol=2e-3)
    assert same_crystal(truth[0], el[0].crystal)[1] < 0.05
    state = s.state_at(joint_refined)
    el = state.experiments
    assert el[0].crystal is el[1].crystal  # one crystal model refined from both sweeps
    assert el[0].detector is el[1].detector
    _cell_ok(el[0].crystal, truth[0], rtol=2e-3)
    assert state.reflections["indexed"]["id"].max() == 1


def test_scan_varying_after_joint_indexing_gives_each_sweep_its_crystal(sweeps, joint_refined):
    s, folder, steps, truth = sweeps
    ok(s, f"goto {steps['joint_refined']}")
    text = ok(s, "refine experiments=0,1 scan_varying=True absolute_num_intervals=1").text
    assert "each sweep got its own copy" in text
    el = s.state_at(s.head).experiments
    assert el[0].crystal is not el[1].crystal and el[0].detector is el[1].detector
    for e in el[:2]:
        assert e.crystal.A_at_scan_points is not None
        _cell_ok(e.crystal, truth[0], rtol=2e-3)


def test_joint_indexing_of_two_crystals_is_refused(sweeps):
    s, folder, steps, _ = sweeps
    ok(s, f"goto {steps['findspots']}")
    text = fail(s, "index joint_indexing=True experiments=0,2")
    assert "joint_indexing=False" in text and "one crystal" in text


def test_selection_leaves_the_others_unchanged(sweeps):
    s, folder, steps, truth = sweeps
    ok(s, f"goto {steps['findspots']}")
    before = s.state_at(s.head)
    ok(s, "findspots experiments=2 sigma_strong=4")
    after = s.state_at(s.head)
    old, new = before.reflections["strong"], after.reflections["strong"]
    for k in (0, 1):  # the spots of the other sweeps pass through
        np.testing.assert_array_equal(old["xyzobs.px.value"][old["id"] == k],
                                      new["xyzobs.px.value"][new["id"] == k])
    assert 0 < (new["id"] == 2).sum() < (old["id"] == 2).sum()
    ok(s, "index experiments=2")
    el = s.state_at(s.head).experiments
    assert el[0].crystal is None and el[1].crystal is None
    _cell_ok(el[2].crystal, truth[2])
    indexed = s.state_at(s.head).reflections["indexed"]
    assert set(np.unique(indexed["id"]).tolist()) <= {2, -1}
    ok(s, "index experiments=0")  # the indexed table grows; experiment 2 keeps its rows
    state = s.state_at(s.head)
    indexed = state.reflections["indexed"]
    assert set(np.unique(indexed["id"][indexed["id"] >= 0]).tolist()) == {0, 2}
    assert indexed.experiment_identifiers == {k: state.experiments[k].identifier
                                              for k in (0, 2)}
    _cell_ok(state.experiments[0].crystal, truth[0])
    _cell_ok(state.experiments[2].crystal, truth[2])


@pytest.mark.parametrize("step, line, words", [
    ("findspots", "index experiments=3", "no experiment 3"),
    ("findspots", "findspots experiments=0,0", "twice"),
    ("joint_refined", "refine experiments=-1", "no experiment -1"),
    ("joint_refined", "integrate experiments=1,5", "no experiment 5")])
def test_selection_out_of_range(sweeps, joint_refined, step, line, words):
    s, folder, steps, _ = sweeps
    ok(s, f"goto {steps[step]}")
    text = fail(s, line)
    assert words in text and "numbered 0 to 2" in text or "twice" in text


def test_refine_and_integrate_of_unindexed_selection_refused(sweeps, joint_refined):
    s, folder, steps, _ = sweeps
    ok(s, f"goto {steps['joint_refined']}")
    assert "index them first" in fail(s, "refine experiments=2")
    assert "index (and refine) them first" in fail(s, "integrate experiments=2")


def test_split(sweeps, joint_refined, tmp_path):
    s, folder, steps, _ = sweeps
    ok(s, f"goto {steps['joint_refined']}")
    state = s.state_at(s.head)
    ok(s, "split experiments=1")
    part = s.state_at(s.head)
    assert len(part.experiments) == 1
    assert part.experiments[0].identifier == state.experiments[1].identifier
    for name, table in part.reflections.items():
        assert set(np.unique(table["id"]).tolist()) <= {0, -1}, name
        assert table.experiment_identifiers in ({}, {0: state.experiments[1].identifier})
    n_old = (state.reflections["indexed"]["id"] == 1).sum()
    assert (part.reflections["indexed"]["id"] == 0).sum() == n_old
    assert "nothing to split" in fail(s, "split experiments=0")  # one experiment left
    ok(s, "undo")
    text = ok(s, f"split output.prefix={tmp_path / 'one'}").text  # files, no step
    assert "Wrote 6 files" in text
    for k in range(3):
        el = read_expt(tmp_path / f"one_{k}.expt")
        t = read_refl(tmp_path / f"one_{k}.refl")
        assert len(el) == 1 and el[0].identifier == state.experiments[k].identifier
        assert set(np.unique(t["id"]).tolist()) <= {0, -1}
    assert "Wrote 6 files" in ok(s, f"split output.prefix={tmp_path / 'one'}").text  # again
    (tmp_path / "one_2.refl").write_text("mine")  # a file of the user's: nothing written
    stamp = (tmp_path / "one_0.expt").stat().st_mtime_ns
    assert "one_2.refl already exists" in fail(s, f"split output.prefix={tmp_path / 'one'}")
    assert (tmp_path / "one_0.expt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_integrate_symmetry_scale_of_two_sweeps(sweeps, joint_refined):
    s, folder, steps, truth = sweeps
    ok(s, f"goto {steps['joint_refined']}")
    ok(s, "split experiments=0,1")
    ok(s, "integrate")
    state = s.state_at(s.head)
    integrated = state.reflections["integrated"]
    for k, name in enumerate(("a", "b")):
        t = read_refl(folder / name / "truth.refl")
        mine = integrated.select((integrated["id"] == k)
                                 & integrated.get_flags(Flags.integrated_sum))
        full = (t["partiality"] > 0.95) & (t["fraction.on_detector"] > 0.95)
        assert len(mine) > 0.95 * full.sum()  # every fully recorded reflection, about
        # summation intensities against the simulated photon counts, matched by hkl in the
        # truth's basis (the indexed one may differ by a change of basis)
        real_found = state.experiments[k].crystal.real_space_vectors
        M = np.rint(real_found @ np.linalg.inv(truth[k].real_space_vectors))
        h_true = np.rint(mine["miller_index"] @ np.linalg.inv(M).T).astype(int)
        key = {tuple(h): i for h, i in zip(t["miller_index"].tolist(),
                                          t["intensity.recorded"])}
        pairs = np.array([(key[tuple(h)], i) for h, i in zip(
            h_true.tolist(), mine["intensity.sum.value"]) if tuple(h) in key])
        assert len(pairs) > 0.8 * len(mine)
        strong = pairs[:, 0] > 1000
        ratio = np.median(pairs[strong, 1] / pairs[strong, 0])
        assert 0.9 < ratio < 1.1
    ok(s, "symmetry")
    assert s.history.step(s.head).metrics["space_group"] == "P 21 21 21"
    ok(s, "scale")
    m = s.history.step(s.head).metrics
    assert m["cc_half"] > 0.95 and m["multiplicity"] > 1.2  # both sweeps merged together
    scaled = s.state_at(s.head).reflections["scaled"]
    used = ~scaled.get_flags(Flags.bad_for_scaling, all_bits=False)
    assert set(np.unique(scaled["id"][used]).tolist()) == {0, 1}


def test_share_models_within_the_dials_import_tolerances(sweeps):
    from gonio.core.importer import set_distance, share_models

    s, folder, steps, _ = sweeps
    el = s.state_at(steps["import"]).experiments
    d = el[0].detector
    moved = [e.replace(detector=set_distance(d, d[0].distance + shift))
             for e, shift in zip(el, (0.0, 0.01, 0.5))]
    out = share_models(moved)
    assert out[1].detector is out[0].detector  # 0.01 mm: the same detector
    assert out[2].detector is not out[0].detector  # 0.5 mm: another one
    assert out[2].beam is out[0].beam
    tilted = el[2].goniometer.with_rotation_axis([1.0, 0.01, 0.0])
    out = share_models([el[0], el[1], el[2].replace(goniometer=tilted)])
    assert out[1].goniometer is out[0].goniometer and out[2].goniometer is not out[0].goniometer


def test_selection_follows_identifiers_after_a_second_lattice(sweeps):
    """Strong spots found before index added a second lattice to sweep 0 still belong to
    their sweeps: selecting sweep 1 (now experiment 2) takes its spots, and re-indexing
    one lattice of sweep 0 takes the whole sweep."""
    from gonio.shell.commands.split import merge_selected, select_state, whole_imagesets
    from gonio.store.state import State

    s, folder, steps, truth = sweeps
    found = s.state_at(steps["findspots"])
    e0, e1, e2 = found.experiments
    second = e0.replace(identifier="second-lattice")  # same imageset, another lattice
    state = State(type(found.experiments)([e0, second, e1, e2]), dict(found.reflections))
    strong = state.reflections["strong"]
    assert whole_imagesets(state.experiments, [1]) == [0, 1]
    part = select_state(state, [2])
    n1 = int((strong["id"] == 1).sum())
    assert len(part.reflections["strong"]) == n1 and (part.reflections["strong"]["id"] == 0).all()
    assert part.reflections["strong"].experiment_identifiers == {0: e1.identifier}
    # a result for sweep 1 goes back to its place, the others pass through
    table = part.reflections["strong"].copy()
    table["xyzobs.px.value"] = table["xyzobs.px.value"] + 1.0
    merged = merge_selected(state, [2], part.experiments, {"strong": table})
    out = merged.reflections["strong"]
    assert [x.identifier for x in merged.experiments] == [e0.identifier, "second-lattice",
                                                          e1.identifier, e2.identifier]
    np.testing.assert_array_equal(out["xyzobs.px.value"][out["id"] == 2],
                                  strong["xyzobs.px.value"][strong["id"] == 1] + 1.0)
    np.testing.assert_array_equal(out["xyzobs.px.value"][out["id"] == 3],
                                  strong["xyzobs.px.value"][strong["id"] == 2])
    assert (out["imageset_id"][out["id"] == 3] == 2).all()  # what index reads the spots by


def test_spots_found_after_two_lattices_on_one_sweep_index_again(sweeps):
    """Experiments [a (lattice 1), a (lattice 2), b]: the spots of b are experiment 2 but
    image set 1; find_spots says so (imageset_id) and index takes them."""
    from gonio.core.formats.reader import ImageSequenceReader
    from gonio.core.indexing.index import index
    from gonio.core.indexing.params import IndexParams
    from gonio.core.models.experiment import ExperimentList
    from gonio.core.spotfinding.finder import find_spots

    s, _, steps, truth = sweeps
    a, b, _ = s.state_at(steps["import"]).experiments
    el = ExperimentList([a, a.replace(identifier="a-lattice-2"), b])
    ra, rb = ImageSequenceReader(a), ImageSequenceReader(b)
    strong, _ = find_spots(el, [ra, ra, rb])
    assert set(strong["id"].tolist()) == {0, 2}
    assert np.array_equal(strong["imageset_id"], np.where(strong["id"] == 2, 1, 0))
    indexed_el, table, _ = index(el, strong, IndexParams(joint_indexing=False))
    assert len(indexed_el) == 2
    for e, t in zip(indexed_el, truth[:2]):
        _cell_ok(e.crystal, t)
