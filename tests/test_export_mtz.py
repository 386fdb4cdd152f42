"""Unmerged MTZ export (dials.export format=mtz), read back with gemmi."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.export.batches import calculate_batch_offsets
from gonio.core.export.mtz import cambridge_frame, mosflm_u, unmerged_mtz
from gonio.core.export.prepare import prepare
from gonio.core.merge.merge import merge_scaled
from gonio.core.reflection_table import Flags
from tests.merge_export_data import dataset


@pytest.fixture(scope="module")
def scaled():
    return dataset(n_sweeps=3, seed=5)


def _read(m: gemmi.Mtz, tmp_path) -> gemmi.Mtz:
    path = tmp_path / "x.mtz"
    path.write_bytes(bytes(m.write_to_bytes()))
    return gemmi.read_mtz_file(str(path))


def test_columns_types_symmetry_and_cell(scaled, tmp_path):
    expts, table, _ = scaled
    m = _read(unmerged_mtz(prepare(expts, table)), tmp_path)
    assert m.column_labels() == ["H", "K", "L", "M/ISYM", "BATCH", "I", "SIGI", "SCALEUSED",
                                 "SIGSCALEUSED", "FRACTIONCALC", "XDET", "YDET", "ROT", "LP", "QE"]
    assert [c.type for c in m.columns] == list("HHHYBJQRRRRRRRR")
    assert m.spacegroup.hm == "P 21 21 21"
    assert m.cell.parameters == pytest.approx((40, 50, 60, 90, 90, 90), abs=1e-4)
    ds = m.datasets[1]
    assert (ds.project_name, ds.crystal_name, ds.dataset_name) == ("DIALS", "XTAL", "FROMDIALS")
    assert ds.cell.parameters == pytest.approx((40, 50, 60, 90, 90, 90), abs=1e-4)
    assert ds.wavelength == pytest.approx(0.9795)
    # the scaled intensity is intensity.scale / inverse_scale_factor, row for row
    I = m.column_with_label("I").array
    expected = table["intensity.scale.value"] / table["inverse_scale_factor"]
    assert np.sort(I) == pytest.approx(np.sort(expected.astype(np.float32)), rel=1e-6)
    assert m.nreflections == len(table)


def test_original_indices_are_recovered_from_m_isym(scaled, tmp_path):
    expts, table, _ = scaled
    m = _read(unmerged_mtz(prepare(expts, table)), tmp_path)
    asu = gemmi.ReciprocalAsu(m.spacegroup)
    hkl = m.make_miller_array()
    assert all(asu.is_in(list(h)) for h in hkl[:500])
    m.switch_to_original_hkl()
    orig = {tuple(h) for h in m.make_miller_array().tolist()}
    assert orig == {tuple(h) for h in table["miller_index"].tolist()}


def test_batches_never_collide_and_carry_their_sweep(scaled, tmp_path):
    expts, table, _ = scaled
    m = _read(unmerged_mtz(prepare(expts, table)), tmp_path)
    numbers = [b.number for b in m.batches]
    assert len(numbers) == len(set(numbers)) == 150
    assert numbers[:50] == list(range(1, 51))
    assert numbers[50:100] == list(range(101, 151)) and numbers[100:] == list(range(201, 251))
    batch = m.column_with_label("BATCH").array.astype(int)
    assert set(batch) <= set(numbers)
    by_number = {b.number: b for b in m.batches}
    for i, e in enumerate(expts):
        first = by_number[1 + 100 * i]
        f = list(first.floats)
        start = e.scan.oscillation[0]
        assert (f[36], f[37], f[47]) == pytest.approx((start, start + 0.5, 0.5))
        last = list(by_number[50 + 100 * i].floats)
        assert last[36] == pytest.approx(start + 49 * 0.5)
        # the orientation: MOSFLM U of this sweep's crystal in the Cambridge frame
        U = np.array(f[6:15]).reshape(3, 3).T
        expected = mosflm_u(cambridge_frame(e) @ e.crystal.A, e.crystal.unit_cell)
        assert U == pytest.approx(expected, abs=1e-6)
        assert U @ U.T == pytest.approx(np.eye(3), abs=1e-6)
        assert f[0:6] == pytest.approx((40, 50, 60, 90, 90, 90), abs=1e-4)
        assert f[111] == pytest.approx(200.0)  # detector distance (mm)
        assert f[38:41] == pytest.approx((0, 0, 1), abs=1e-6)  # scan axis along Cambridge Z
        assert first.dataset_id == 1 and first.wavelength == pytest.approx(0.9795)
    rows = batch > 200
    assert m.column_with_label("ROT").array[rows] == pytest.approx(
        20 + (batch[rows] - 201 + 0.5) * 0.5, abs=0.25 + 1e-4)


def test_batch_offsets_dials_rule():
    assert calculate_batch_offsets([(1, 1800), (1, 1700), (1, 1700)]) == [0, 1900, 3700]
    assert calculate_batch_offsets([(1, 50), (101, 150)]) == [0, 0]  # no overlap: kept
    assert calculate_batch_offsets([(1, 99), (1, 10)]) == [0, 100]  # 99 -> 101
    assert calculate_batch_offsets([(0, 0), (0, 0)]) == [1, 101]  # never batch 0


def test_scan_varying_orientation_at_image_centre(tmp_path):
    expts, table, _ = dataset(n_sweeps=1, seed=7, scan_varying=True)
    m = _read(unmerged_mtz(prepare(expts, table)), tmp_path)
    e = expts[0]
    for k in (0, 25, 49):
        A = e.crystal.A_at_scan_points
        Ak = (A[k] + A[k + 1]) / 2  # a small rotation: the mean is the centre to 1e-7
        U = np.array(list(m.batches[k].floats)[6:15]).reshape(3, 3).T
        assert U == pytest.approx(mosflm_u(cambridge_frame(e) @ Ak, e.crystal.unit_cell),
                                  abs=1e-6)
    U0 = np.array(list(m.batches[0].floats)[6:15]).reshape(3, 3).T
    U49 = np.array(list(m.batches[49].floats)[6:15]).reshape(3, 3).T
    assert np.degrees(np.arccos((np.trace(U49 @ U0.T) - 1) / 2)) == pytest.approx(
        np.degrees(49e-3), rel=1e-3)


def test_gemmi_merging_of_the_mtz_equals_merge(scaled, tmp_path):
    expts, table, _ = scaled
    prep = prepare(expts, table, ["scale"], partiality_threshold=0.4)
    m = _read(unmerged_mtz(prep), tmp_path)
    intens = gemmi.Intensities()
    intens.import_mtz(m, gemmi.DataType.Unmerged)
    intens.merge_in_place(gemmi.DataType.Mean)
    ours = merge_scaled(expts, table).datasets[0].merged
    theirs = dict(zip(map(tuple, intens.miller_array.tolist()), intens.value_array))
    assert len(theirs) == len(ours)
    got = np.array([theirs[tuple(h)] for h in ours.miller_index.tolist()])
    rel = np.abs(got - ours.intensity) / np.maximum(np.abs(ours.intensity), 1.0)
    assert np.max(rel) < 1e-4


def test_unscaled_export_has_ipr_and_corrections(tmp_path):
    expts, table, _ = dataset(n_sweeps=1, seed=8)
    for c in ("intensity.scale.value", "intensity.scale.variance", "inverse_scale_factor",
              "inverse_scale_factor_variance"):
        del table[c]
    prep = prepare(expts, table)
    assert prep.intensity_choice == ["profile", "sum"]
    m = _read(unmerged_mtz(prep), tmp_path)
    assert m.column_labels()[5:9] == ["IPR", "SIGIPR", "I", "SIGI"]
    # profile: times LP/QE; summation: times LP/(QE * partiality); LP = 0.8 in the data
    order = np.argsort(m.column_with_label("I").array)
    I = m.column_with_label("I").array[order]
    assert I == pytest.approx(np.sort((table["intensity.sum.value"] * 0.8).astype(np.float32)),
                              rel=1e-6)


def test_partials_are_combined_then_thresholded():
    expts, table, _ = dataset(n_sweeps=1, seed=9)
    t = table.select(np.arange(6))
    t["partial_id"] = np.array([0, 0, 1, 2, 2, 3], float)
    t["partiality"] = np.array([0.6, 0.45, 0.5, 0.3, 0.2, 1.0])
    t["intensity.scale.value"] = np.array([60.0, 40.0, 50.0, 30.0, 20.0, 100.0])
    t["intensity.scale.variance"] = np.array([4.0, 4.0, 4.0, 1.0, 4.0, 4.0])
    t["inverse_scale_factor"] = np.ones(6)
    prep = prepare(expts, t, ["scale"], partiality_threshold=0.99, min_isigi=None)
    assert len(prep.table) == 2  # (0: 0.6+0.45) and 3; 1 and (2: 0.5) are below 0.99
    assert prep.table["fractioncalc"] == pytest.approx([1.05, 1.0])
    assert prep.table["intensity.scale.value"][0] == pytest.approx(50.0)  # 1/V weighted
    assert prep.table["intensity.scale.variance"][0] == pytest.approx(2.0)
    prep = prepare(expts, t, ["scale"], partiality_threshold=0.4, min_isigi=None)
    assert len(prep.table) == 4


def test_excluded_and_outlier_reflections_are_not_exported():
    expts, table, _ = dataset(n_sweeps=1, seed=10)
    table.set_flags(np.arange(len(table)) < 100, Flags.outlier_in_scaling)
    assert len(prepare(expts, table).table) == len(table) - 100


def test_triclinic_scan_varying_batch_cell_and_u():
    from gonio.core.export.mtz import batch_orientations
    from gonio.core.models.crystal import cell_from_real_vectors
    from tests.merge_export_data import experiments

    e = experiments(1, "P 1", (10, 20, 30, 80, 100, 110), n_images=5, scan_varying=True)[0]
    cells, Us = batch_orientations(e, (1, 5))
    for k in range(5):
        Ac = (e.crystal.A_at_scan_points[k] + e.crystal.A_at_scan_points[k + 1]) / 2
        # the cell does not change (a pure rotation): the mean of the two A is 1e-7 off
        assert cells[k] == pytest.approx(cell_from_real_vectors(np.linalg.inv(Ac)).parameters,
                                         abs=1e-5)
        assert cells[k] == pytest.approx((10, 20, 30, 80, 100, 110), abs=1e-9)
        assert Us[k] @ Us[k].T == pytest.approx(np.eye(3), abs=1e-9)
