"""merge (dials.merge) on synthetic scaled data with known truth; the merged MTZ read by gemmi."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.merge.merge import MergeInputError, merge_scaled
from gonio.core.merge.merged_mtz import merged_mtz
from gonio.core.merge.params import MergeParams
from tests.merge_export_data import dataset


@pytest.fixture(scope="module")
def data():
    return dataset(n_sweeps=2, space_group="C 1 2 1", cell=(53.2, 61.3, 69.3, 90, 93.05, 90),
                   n_unique_dmin=2.2, seed=11, n_obs=4)


def _truth_of(merged, truth):
    lookup = dict(zip(map(tuple, truth["hkl"].tolist()), truth["I"]))
    return np.array([lookup[tuple(h)] for h in merged.miller_index.tolist()])


def test_merged_intensities_and_amplitudes_against_truth(data):
    expts, table, truth = data
    r = merge_scaled(expts, table)
    ds = r.datasets[0]
    assert len(ds.merged) == len(truth["hkl"])
    I_true = _truth_of(ds.merged, truth)
    assert np.corrcoef(I_true, ds.merged.intensity)[0, 1] >= 0.998
    F, Ft = ds.mean.F, np.sqrt(I_true)
    k = (F @ Ft) / (F @ F)
    assert np.abs(k * F - Ft).sum() / Ft.sum() < 0.03
    assert ds.wilson_b == pytest.approx(20.0, abs=2.0)
    assert 0 < ds.fraction_changed < 0.5
    # the weighted mean of the scaled observations, computed here without the merging code
    asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup("C 1 2 1"))
    I = table["intensity.scale.value"] / table["inverse_scale_factor"]
    w = table["inverse_scale_factor"] ** 2 / table["intensity.scale.variance"]
    sums: dict = {}
    for h, i, wi in zip(table["miller_index"].tolist(), I, w):
        key = tuple(asu.to_asu(h, gemmi.SpaceGroup("C 1 2 1").operations())[0])
        s = sums.setdefault(key, [0.0, 0.0])
        s[0] += wi * i
        s[1] += wi
    direct = np.array([sums[tuple(h)][0] / sums[tuple(h)][1] for h in ds.merged.miller_index.tolist()])
    assert ds.merged.intensity == pytest.approx(direct, rel=1e-9)


def test_anomalous_columns_and_counts(data):
    expts, table, _ = data
    ds = merge_scaled(expts, table).datasets[0]
    m = ds.merged
    acentric = ~m.centric
    assert np.all(m.n_plus + m.n_minus == m.multiplicity)
    assert np.all(np.isnan(m.i_minus[m.centric]))
    both = acentric & (m.n_plus > 0) & (m.n_minus > 0)
    # no anomalous signal in the data: DANO scatters around 0 with SIGDANO
    z = ds.dano[both] / ds.sigdano[both]
    assert abs(np.mean(z)) < 0.1 and np.std(z) == pytest.approx(1.0, abs=0.25)


def test_merged_mtz_read_back(data, tmp_path):
    expts, table, _ = data
    r = merge_scaled(expts, table)
    path = tmp_path / "merged.mtz"
    path.write_bytes(bytes(merged_mtz(r, ["XTAL"], ["NATIVE"], "AUTOMATIC").write_to_bytes()))
    m = gemmi.read_mtz_file(str(path))
    labels = ["H", "K", "L", "IMEAN", "SIGIMEAN", "N", "F", "SIGF", "I(+)", "SIGI(+)", "I(-)",
              "SIGI(-)", "N(+)", "N(-)", "F(+)", "SIGF(+)", "F(-)", "SIGF(-)", "DANO", "SIGDANO"]
    assert m.column_labels() == labels
    assert [c.type for c in m.columns] == list("HHHJQIFQKMKMIIGLGLDQ")
    assert m.spacegroup.hm == "C 1 2 1"
    ds = m.datasets[1]
    assert (ds.project_name, ds.crystal_name, ds.dataset_name) == ("AUTOMATIC", "XTAL", "NATIVE")
    assert ds.cell.parameters == pytest.approx((53.2, 61.3, 69.3, 90, 93.05, 90), abs=1e-3)
    assert m.nreflections == len(r.datasets[0].merged)
    imean = m.column_with_label("IMEAN").array
    order = np.lexsort(m.make_miller_array().T[::-1])
    ref = r.datasets[0].merged
    ref_order = np.lexsort(ref.miller_index.T[::-1])
    assert imean[order] == pytest.approx(ref.intensity[ref_order].astype(np.float32), rel=1e-6)
    assert np.all(np.isfinite(m.column_with_label("F").array))
    assert m.resolution_high() == pytest.approx(2.2, abs=0.01)


def test_truncate_false_and_anomalous_false(data):
    expts, table, _ = data
    ds = merge_scaled(expts, table, MergeParams(truncate=False, anomalous=False)).datasets[0]
    assert ds.mean is None and ds.merged.i_plus is None
    m = merged_mtz(merge_scaled(expts, table, MergeParams(truncate=False, anomalous=False)))
    assert m.column_labels() == ["H", "K", "L", "IMEAN", "SIGIMEAN", "N"]


def test_resolution_limits(data):
    expts, table, _ = data
    ds = merge_scaled(expts, table, MergeParams(d_min=3.0, d_max=20.0)).datasets[0]
    assert ds.d.min() >= 3.0 and ds.d.max() <= 20.0
    with pytest.raises(MergeInputError, match="leave no reflections.*extend from"):
        merge_scaled(expts, table, MergeParams(d_min=100.0))


def test_unscaled_data_are_refused(data):
    expts, table, _ = data
    t = table.copy()
    del t["inverse_scale_factor"]
    with pytest.raises(MergeInputError, match="run scale first"):
        merge_scaled(expts, t)


def test_two_wavelengths_make_two_datasets(data):
    expts, table, _ = data
    from gonio.core.models.experiment import ExperimentList

    two = ExperimentList([expts[0], expts[1].replace(beam=expts[1].beam.replace(wavelength=1.2))])
    r = merge_scaled(two, table)
    assert [d.wavelength for d in r.datasets] == pytest.approx([0.9795, 1.2])
    m = merged_mtz(r, ["XTAL"], ["NATIVE"])
    labels = m.column_labels()
    assert {"IMEAN_WAVE1", "IMEAN_WAVE2", "SIGI_WAVE2(-)", "F_WAVE1(+)", "DANO_WAVE2"} <= set(labels)
    assert [d.wavelength for d in m.datasets[1:]] == pytest.approx([0.9795, 1.2])


def test_f_is_the_weighted_mean_of_the_mates_as_dials(data):
    expts, table, _ = data
    ds = merge_scaled(expts, table).datasets[0]
    both = np.isfinite(ds.plus.F) & np.isfinite(ds.minus.F)
    wp, wm = 1 / ds.plus.sigF[both] ** 2, 1 / ds.minus.sigF[both] ** 2
    assert ds.mean.F[both] == pytest.approx((wp * ds.plus.F[both] + wm * ds.minus.F[both])
                                            / (wp + wm))
    centric = ds.merged.centric
    assert ds.mean.F[centric] == pytest.approx(ds.plus.F[centric])
    # without anomalous, F comes from IMEAN: the two agree for strong reflections
    mean = merge_scaled(expts, table, MergeParams(anomalous=False)).datasets[0].mean
    strong = ds.merged.intensity / ds.merged.sigma > 20
    assert mean.F[strong] == pytest.approx(ds.mean.F[strong], rel=0.01)
