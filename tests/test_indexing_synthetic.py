"""Indexing simulated sweeps with exact ground truth.

Strong spots are the predicted centroids of a known crystal
(gonio.core.prediction.rotation) plus Gaussian noise; the found lattice is
compared with the truth up to a change of basis M (found = M truth).
"""

from __future__ import annotations

import zlib

import gemmi
import numpy as np
import pytest

from gonio.core.indexing import IndexingError, IndexParams, index
from gonio.core.indexing.symmetry import primitive_to_conventional
from gonio.core.models.beam import Beam
from gonio.core.models.crystal import Crystal
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.models.scan import Scan
from gonio.core.prediction.rotation import predict_rotation
from gonio.core.reflection_table import Flags, ReflectionTable


def random_rotation(seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=4)
    q /= np.linalg.norm(q)
    return axis_angle_matrix(q[:3] / np.linalg.norm(q[:3]), 2 * np.arccos(q[3]))


def make_experiment(cell, space_group="P 1", wavelength=0.9795, distance=200.0, n_images=300,
                    osc=0.2, npx=(2463, 2527), px=0.172, axis=(1.0, 0.0, 0.0), seed=0):
    """A Pilatus-6M-like single-axis sweep with a crystal in a random orientation."""
    panel = Panel(fast_axis=[1, 0, 0], slow_axis=[0, -1, 0],
                  origin=[-npx[0] * px / 2 + 3.1, npx[1] * px / 2 - 2.3, -distance],
                  image_size=npx, pixel_size=(px, px))
    crystal = Crystal.from_cell_and_U(gemmi.UnitCell(*cell), random_rotation(seed),
                                      space_group=space_group)
    expt = Experiment(beam=Beam(direction=[0, 0, 1], wavelength=wavelength),
                      detector=Detector([panel]), goniometer=Goniometer(rotation_axis_datum=axis),
                      scan=Scan(image_range=(1, n_images), oscillation=(0.0, osc)),
                      crystal=crystal)
    return ExperimentList([expt])


def strong_spots(experiments, d_min, sigma_px=0.2, sigma_z=0.1, seed=1):
    """Strong-spot table (as findspots writes it) from the prediction of every crystal."""
    rng = np.random.default_rng(seed)
    tables, truth = [], []
    for i, expt in enumerate(experiments):
        t = predict_rotation(expt, d_min)
        t["id"] = np.zeros(len(t), np.int32)
        tables.append(t)
        truth.append(np.full(len(t), i))
    t = ReflectionTable.concatenate(tables)
    lattice = np.concatenate(truth)
    n = len(t)
    noise = rng.normal(size=(n, 3)) * [sigma_px, sigma_px, sigma_z]
    strong = ReflectionTable({
        "xyzobs.px.value": t["xyzcal.px"] + noise,
        "xyzobs.px.variance": np.tile([sigma_px**2, sigma_px**2, sigma_z**2], (n, 1)),
        "panel": t["panel"], "id": np.zeros(n, np.int32),
        "flags": np.full(n, Flags.strong, np.uint64), "intensity.sum.value": np.ones(n)})
    return strong, t["miller_index"], lattice


def compare(found: Crystal, truth: Crystal):
    """(M, misorientation deg, max relative cell error): found basis = M x truth basis.

    M is unimodular when the truth is primitive, and maps true conventional
    indices of a centred lattice to the found primitive ones (h_found = M h_true).
    """
    Q = np.linalg.inv(primitive_to_conventional(truth.space_group))
    Rf, Rt = found.real_space_vectors, Q @ truth.real_space_vectors
    M = np.rint(Rf @ np.linalg.inv(Rt))
    ref = Crystal(A=np.linalg.inv(M @ Rt))
    dU = found.U @ ref.U.T
    angle = np.degrees(np.arccos(np.clip((np.trace(dU) - 1) / 2, -1, 1)))
    pf, pt = np.array(found.unit_cell.parameters), np.array(ref.unit_cell.parameters)
    return M @ Q, angle, np.max(np.abs(pf - pt) / pt)


CASES = {  # about 5000-9000 spots each
    "triclinic": dict(cell=(31.0, 42.0, 53.0, 81.0, 96.0, 104.0), d_min=2.0, n_images=150),
    "monoclinic_C": dict(cell=(99.06, 31.01, 54.30, 90, 107.7, 90), space_group="C 1 2 1",
                         d_min=2.2, n_images=150),
    "orthorhombic": dict(cell=(52.0, 61.0, 73.0, 90, 90, 90), space_group="P 21 21 21",
                         d_min=3.0, n_images=150),
    "tetragonal": dict(cell=(57.8, 57.8, 150.0, 90, 90, 90), space_group="P 41 21 2",
                       d_min=3.5, n_images=150),
    "hexagonal": dict(cell=(50.0, 50.0, 120.0, 90, 90, 120), space_group="P 61 2 2",
                      d_min=3.0, n_images=150),
    "cubic_I": dict(cell=(78.0, 78.0, 78.0, 90, 90, 90), space_group="I 2 3", d_min=3.0,
                    n_images=150),
    "rhombohedral": dict(cell=(60.0, 60.0, 150.0, 90, 90, 120), space_group="R 3 :H",
                         d_min=3.0, n_images=150),
    "long_axis_250A": dict(cell=(60.0, 70.0, 250.0, 90, 90, 90), space_group="P 21 21 21",
                           d_min=4.0, distance=350.0, osc=0.1, n_images=200),
    "small_molecule_5A": dict(cell=(5.43, 8.14, 12.04, 90, 90, 90), space_group="P 21 21 21",
                              d_min=0.75, wavelength=0.7, distance=60.0, n_images=180, osc=1.0),
    "electron": dict(cell=(37.0, 62.0, 65.0, 73.0, 89.0, 74.0), d_min=2.5, wavelength=0.0251,
                     distance=2200.0, npx=(2048, 2048), px=0.028, n_images=60, osc=0.5,
                     axis=(-0.659, -0.752, 0.0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_index_every_crystal_system(name):
    case = dict(CASES[name])
    d_min = case.pop("d_min")
    experiments = make_experiment(**case, seed=zlib.crc32(name.encode()) % 1000)
    truth = experiments[0].crystal
    strong, true_hkl, _ = strong_spots(experiments, d_min)
    imported = ExperimentList([experiments[0].replace(crystal=None)])
    found_expts, refl, result = index(imported, strong, IndexParams())
    M, angle, cell_err = compare(found_expts[0].crystal, truth)
    n_centring = len(truth.space_group.operations().cen_ops)
    assert abs(np.linalg.det(M) * n_centring - 1) < 1e-6  # same lattice, primitive basis
    assert angle < 0.02, angle
    assert cell_err < 5e-4, cell_err
    assert result.percent_indexed > 99.0
    idx = refl["id"] >= 0
    expected = np.rint(true_hkl[idx] @ M.T)
    assert np.all(refl["miller_index"][idx] == expected)
    assert result.rmsds[0] < 0.3 and result.rmsds[1] < 0.3 and result.rmsds[2] < 0.2


def _imported(experiments):
    return ExperimentList([experiments[0].replace(crystal=None)])


def test_known_symmetry_gives_the_conventional_setting_and_constrained_cell():
    experiments = make_experiment((57.8, 57.8, 150.0, 90, 90, 90), "P 41 21 2", seed=5,
                                  n_images=150)
    strong, true_hkl, _ = strong_spots(experiments, 3.5)
    params = IndexParams(space_group="P41212", unit_cell=(58, 58, 149, 90, 90, 90))
    found, refl, result = index(_imported(experiments), strong, params)
    c = found[0].crystal
    assert c.space_group.hm == "P 41 21 2"
    a, b, cc, al, be, ga = c.unit_cell.parameters
    assert a == pytest.approx(b, rel=1e-12)  # tetragonal constraint held in refinement
    assert (al, be, ga) == pytest.approx((90, 90, 90), abs=1e-9)
    assert (a, cc) == pytest.approx((57.8, 150.0), rel=5e-4)
    # indices agree with the truth up to an operation of the lattice point group
    idx = refl["id"] >= 0
    M = np.rint(c.real_space_vectors @ np.linalg.inv(experiments[0].crystal.real_space_vectors))
    assert abs(np.linalg.det(M)) == pytest.approx(1)
    assert np.all(refl["miller_index"][idx] == true_hkl[idx] @ M.T.astype(int))
    assert result.crystals[0]["space_group"] == "P 41 21 2"


def test_beam_centre_off_by_several_pixels_is_corrected():
    experiments = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), "P 21 21 21", seed=7,
                                  n_images=150)
    strong, _, _ = strong_spots(experiments, 3.0)
    true_panel = experiments[0].detector[0]
    shifted = true_panel.replace(origin=true_panel.origin + np.array([4 * 0.172, -3 * 0.172, 0]))
    imported = ExperimentList([experiments[0].replace(
        crystal=None, detector=experiments[0].detector.replace(panels=[shifted]))])
    s0 = experiments[0].beam.s0
    off = shifted.beam_centre_mm(s0) - true_panel.beam_centre_mm(s0)
    assert np.hypot(*off) / 0.172 == pytest.approx(5.0, abs=0.01)
    found, _, result = index(imported, strong, IndexParams())
    err = found[0].detector[0].beam_centre_mm(found[0].beam.s0) - true_panel.beam_centre_mm(s0)
    assert np.hypot(*err) / 0.172 < 0.1  # from 5 px to below a tenth of a pixel
    assert result.percent_indexed > 99.0


def test_two_lattices_are_both_found():
    first = make_experiment((40.0, 50.0, 60.0, 90, 90, 90), seed=11, n_images=150)
    second = make_experiment((40.0, 50.0, 60.0, 90, 90, 90), seed=12, n_images=150)
    both = ExperimentList([first[0], first[0].replace(crystal=second[0].crystal)])
    strong, _, lattice = strong_spots(both, 3.0)
    found, refl, result = index(_imported(first), strong, IndexParams(max_lattices=2))
    assert len(found) == 2 and len(result.crystals) == 2
    assert len({e.identifier for e in found}) == 2
    assert found[0].detector is found[1].detector  # one shared, jointly refined detector
    for k in range(2):
        mine = refl["id"] == k
        # each lattice's spots come (almost) only from one true lattice
        counts = np.bincount(lattice[mine], minlength=2)
        assert counts.max() / counts.sum() > 0.97
        truth = both[int(np.argmax(counts))].crystal
        _, angle, cell_err = compare(found[k].crystal, truth)
        assert angle < 0.02 and cell_err < 5e-4
    assert result.percent_indexed > 97.0
    R = found[1].crystal.U @ found[0].crystal.U.T
    assert result.lattice_rotations[0]["angle_deg"] == pytest.approx(
        np.degrees(np.arccos((np.trace(R) - 1) / 2)), abs=1e-6)


def test_local_index_assignment_agrees_with_simple_on_a_good_model():
    experiments = make_experiment((31.0, 42.0, 53.0, 81.0, 96.0, 104.0), seed=3,
                                  n_images=100)
    strong, _, _ = strong_spots(experiments, 2.5)
    a = index(_imported(experiments), strong, IndexParams())[1]
    b = index(_imported(experiments), strong, IndexParams(index_assignment="local"))[1]
    both = (a["id"] >= 0) & (b["id"] >= 0)
    assert both.mean() > 0.98
    assert np.all(a["miller_index"][both] == b["miller_index"][both])


def test_output_columns_and_flags():
    experiments = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), seed=9, n_images=100)
    strong, _, _ = strong_spots(experiments, 3.0)
    found, refl, result = index(_imported(experiments), strong, IndexParams())
    for col in ("miller_index", "xyzcal.mm", "xyzcal.px", "s1", "rlp", "entering", "flags", "id"):
        assert col in refl
    idx = refl["id"] >= 0
    assert np.all(refl.get_flags(Flags.indexed) == idx)
    used = refl.get_flags(Flags.used_in_refinement)
    assert used.sum() >= 1000 and not np.any(used & ~idx)
    assert np.all(refl["miller_index"][~idx] == 0)
    d = refl["xyzcal.px"][idx] - refl["xyzobs.px.value"][idx]
    assert np.sqrt(np.mean(d[:, :2] ** 2)) < 0.3
    assert refl.experiment_identifiers == {0: found[0].identifier}
    text = result.format_text()
    for part in ("Found max_cell", "RMSDs by experiment", "% indexed", "Unit cell", "U matrix"):
        assert part in text
    metrics = result.metrics()
    assert metrics["percent_indexed"] > 99 and metrics["rmsd_x_px"] < 0.3


# -- bad input: clear errors ------------------------------------------------------------

def _small_case():
    experiments = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), seed=9, n_images=100)
    strong, _, _ = strong_spots(experiments, 3.0)
    return _imported(experiments), strong


def test_no_strong_spots_says_run_findspots():
    imported, strong = _small_case()
    with pytest.raises(IndexingError, match="run findspots first"):
        index(imported, None)
    with pytest.raises(IndexingError, match="run findspots first"):
        index(imported, strong.select(np.zeros(len(strong), bool)))


def test_too_few_spots():
    imported, strong = _small_case()
    with pytest.raises(IndexingError, match="Only 5 strong spots"):
        index(imported, strong.select(np.arange(5)))


def test_real_space_grid_search_needs_unit_cell():
    imported, strong = _small_case()
    with pytest.raises(IndexingError, match="give unit_cell="):
        index(imported, strong, IndexParams(method="real_space_grid_search"))


@pytest.mark.parametrize("cell", [(10, 10, 10, 90, 90, 200), (0, 10, 10, 90, 90, 90),
                                  (10, 10, 10, 120, 120, 120.5), (10, 10)])
def test_impossible_unit_cell(cell):
    imported, strong = _small_case()
    with pytest.raises(IndexingError, match="not a possible unit cell"):
        index(imported, strong, IndexParams(unit_cell=cell))


def test_space_group_incompatible_with_cell():
    imported, strong = _small_case()
    with pytest.raises(IndexingError, match="does not fit space group"):
        index(imported, strong, IndexParams(space_group="P 4 2 2",
                                            unit_cell=(52, 61, 73, 90, 90, 90)))


def test_known_cell_that_does_not_match_the_lattice():
    imported, strong = _small_case()
    with pytest.raises(IndexingError, match="has no setting matching"):
        index(imported, strong, IndexParams(unit_cell=(45, 61, 73, 90, 90, 90)))


def _random_spots(strong, n_images: float):
    """``strong`` with its spots moved to random places (nothing to index) on n_images."""
    rng = np.random.default_rng(0)
    strong["xyzobs.px.value"] = np.column_stack([
        rng.uniform(0, 2463, len(strong)), rng.uniform(0, 2527, len(strong)),
        rng.uniform(0, n_images, len(strong))])
    return strong


def test_indexing_failure_names_causes_and_parameters():
    imported, strong = _small_case()
    with pytest.raises(IndexingError) as err:
        index(imported, _random_spots(strong, 100))
    msg = str(err.value)
    assert "Indexing failed" in msg and "max_cell" in msg and "d_min" in msg
    assert "Likely causes: the geometry" in msg and "deg of rotation" not in msg


def test_indexing_failure_on_a_narrow_wedge_says_so():
    """A failure on one image of 0.1 deg names the wedge as the likely cause (a user
    importing a single image of a sweep) before the other causes."""
    import dataclasses

    from gonio.core.models.experiment import ExperimentList

    imported, strong = _small_case()
    e = imported[0]
    one = ExperimentList([e.replace(scan=dataclasses.replace(
        e.scan, image_range=(1, 1), oscillation=(e.scan.oscillation[0], 0.1)))])
    with pytest.raises(IndexingError) as err:
        index(one, _random_spots(strong, 1))
    msg = str(err.value)
    assert "1 image covering 0.1 deg of rotation" in msg and "real_space_grid_search" in msg
    assert "Other possible causes: the geometry" in msg


def test_inputs_are_not_modified():
    imported, strong = _small_case()
    before = strong.copy()
    origin = imported[0].detector[0].origin.copy()
    index(imported, strong)
    assert strong == before
    assert np.all(imported[0].detector[0].origin == origin) and imported[0].crystal is None


@pytest.mark.parametrize("name", ["triclinic", "monoclinic_C", "small_molecule_5A"])
@pytest.mark.parametrize("method", ["fft1d", "real_space_grid_search"])
def test_fft1d_and_real_space_grid_search(name, method):
    case = dict(CASES[name])
    d_min = case.pop("d_min")
    experiments = make_experiment(**case, seed=zlib.crc32(name.encode()) % 1000)
    truth = experiments[0].crystal
    strong, true_hkl, _ = strong_spots(experiments, d_min)
    params = IndexParams(method=method)
    if method == "real_space_grid_search":
        params = IndexParams(method=method, unit_cell=truth.unit_cell.parameters,
                             space_group=truth.space_group.hm)
    found, refl, result = index(_imported(experiments), strong, params)
    M, angle, cell_err = compare(found[0].crystal, truth)
    assert angle < 0.02 and cell_err < 5e-4
    assert result.percent_indexed > 99.0
    idx = refl["id"] >= 0
    if method == "real_space_grid_search":  # in the known (conventional) setting
        assert found[0].crystal.space_group.hm == truth.space_group.hm
        assert abs(np.linalg.det(M)) == pytest.approx(1)
    assert np.all(refl["miller_index"][idx] == np.rint(true_hkl[idx] @ M.T))


def test_two_sweeps_of_one_crystal_are_indexed_jointly():
    from gonio.core.models.imageset import ImageSetRef

    first = make_experiment((52.0, 61.0, 73.0, 90, 90, 90), n_images=100, seed=3)[0]
    first = first.replace(imageset=ImageSetRef(template="a_####.cbf"))
    second = first.replace(scan=Scan(image_range=(1, 100), oscillation=(90.0, 0.2)),
                           imageset=ImageSetRef(template="b_####.cbf"), identifier="sweep-2")
    s_a, _, _ = strong_spots(ExperimentList([first]), 3.0)
    s_b, _, _ = strong_spots(ExperimentList([second]), 3.0)
    s_b["id"] = np.ones(len(s_b), np.int32)
    strong = ReflectionTable.concatenate([s_a, s_b])
    imported = ExperimentList([first.replace(crystal=None), second.replace(crystal=None)])
    found, refl, result = index(imported, strong, IndexParams())
    assert len(found) == 2 and found[0].crystal is found[1].crystal
    assert [e.identifier for e in found] == [first.identifier, "sweep-2"]
    assert [r["% indexed"] for r in result.indexed_table] == [100.0, 100.0]
    assert np.all(refl["id"][: len(s_a)] == 0) and np.all(refl["id"][len(s_a):] == 1)
    _, angle, cell_err = compare(found[0].crystal, first.crystal)
    assert angle < 0.02 and cell_err < 5e-4
