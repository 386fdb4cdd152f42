"""Four L-cysteine sweeps scaled together by DIALS: export and merge against DIALS's own scale factors."""

from __future__ import annotations

from collections import defaultdict

import gemmi
import numpy as np
import pytest

from gonio.core.export.mtz import cambridge_frame, mosflm_u, unmerged_mtz
from gonio.core.export.prepare import prepare
from gonio.core.merge.merge import merge_scaled
from gonio.core.models.crystal import cell_from_real_vectors
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable
from tests.conftest import data_path


@pytest.fixture(scope="module")
def lcys():
    """The three .expt/.refl pairs as one experiment list and one table (ids renumbered)."""
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl

    folder = data_path("l_cysteine_4_sweeps_scaled")
    expts, tables = ExperimentList(), []
    for name in ("20_25", "30", "35"):
        el = read_expt(folder / f"scaled_{name}.expt")
        t = read_refl(folder / f"scaled_{name}.refl")
        t["id"] = t["id"] + len(expts)
        t.experiment_identifiers = {k + len(expts): v for k, v in t.experiment_identifiers.items()}
        expts.extend(el)
        tables.append(t)
    return expts, ReflectionTable.concatenate(tables)


def _dials_scaled(t: ReflectionTable, partiality_threshold: float):
    """DIALS's scaled intensities, computed here row by row from its scale factors."""
    good = ~t.get_flags(Flags.bad_for_scaling, all_bits=False)
    good &= (t["inverse_scale_factor"] > 0) & (t["intensity.scale.variance"] > 0)
    good &= t["partiality"] > 0
    groups = defaultdict(list)
    for i in np.flatnonzero(good):
        key = (int(t["id"][i]), float(t["partial_id"][i])) if t["partiality"][i] < 0.99 else i
        groups[key].append(i)
    out = []  # (hkl, I, V, partiality)
    for rows in groups.values():
        g = t["inverse_scale_factor"][rows]
        I = t["intensity.scale.value"][rows] / g
        V = t["intensity.scale.variance"][rows] / g**2
        w = 1 / V
        p = t["partiality"][rows].sum()
        if p >= partiality_threshold:
            out.append((tuple(t["miller_index"][rows[0]].tolist()), (w * I).sum() / w.sum(),
                        1 / w.sum(), p))
    return out


def test_export_mtz_batches_and_scaled_intensities(lcys, tmp_path):
    expts, table = lcys
    path = tmp_path / "scaled.mtz"
    path.write_bytes(bytes(unmerged_mtz(prepare(expts, table)).write_to_bytes()))
    m = gemmi.read_mtz_file(str(path))
    numbers = np.array([b.number for b in m.batches])
    assert len(numbers) == len(set(numbers)) == 1800 + 3 * 1700
    firsts = [1, 1901, 3701, 5501]
    assert [numbers[0], numbers[1800], numbers[3500], numbers[5200]] == firsts
    assert m.spacegroup.hm == "P 2 2 2"
    by_number = {b.number: b for b in m.batches}
    for e, first in zip(expts, firsts):
        f = list(by_number[first].floats)
        assert (f[36], f[37]) == pytest.approx((e.scan.oscillation[0], e.scan.oscillation[0] + 0.1),
                                               abs=1e-4)
        A = e.crystal.A_at_scan_points
        U = np.array(f[6:15]).reshape(3, 3).T
        Ac = (A[0] + A[1]) / 2  # the crystal at the centre of the first image
        Ucentre = mosflm_u(cambridge_frame(e) @ e.goniometer.setting_rotation
                           @ e.goniometer.fixed_rotation @ Ac, cell_from_real_vectors(np.linalg.inv(Ac)))
        assert U == pytest.approx(Ucentre, abs=2e-5)
        assert U @ U.T == pytest.approx(np.eye(3), abs=1e-5)
        assert f[0:6] == pytest.approx(cell_from_real_vectors(np.linalg.inv(Ac)).parameters, abs=1e-3)
    u_first = [np.array(list(by_number[f].floats)[6:15]) for f in firsts]
    assert min(np.abs(a - b).max() for i, a in enumerate(u_first) for b in u_first[i + 1:]) > 0.01
    batch = m.column_with_label("BATCH").array.astype(int)
    assert set(batch) <= set(numbers.tolist())
    for lo, hi in [(1, 1800), (1901, 3600), (3701, 5400), (5501, 7200)]:
        assert ((batch >= lo) & (batch <= hi)).sum() > 1000
    expected = _dials_scaled(table, 0.99)
    I = m.column_with_label("I").array
    exp_I = np.array([x[1] for x in expected])
    exp_sig = np.sqrt([x[2] for x in expected])
    keep = exp_I / exp_sig >= -5  # mtz.min_isigi
    assert len(I) == keep.sum()
    assert np.sort(I) == pytest.approx(np.sort(exp_I[keep]), rel=2e-6, abs=1e-3)


def test_merge_agrees_with_dials_scale_factors(lcys):
    expts, table = lcys
    ds = merge_scaled(expts, table).datasets[0]
    sg = gemmi.SpaceGroup("P 2 2 2")
    asu = gemmi.ReciprocalAsu(sg)
    sums = defaultdict(lambda: [0.0, 0.0, 0])
    for hkl, I, V, _ in _dials_scaled(table, 0.4):
        s = sums[tuple(asu.to_asu(list(hkl), sg.operations())[0])]
        s[0] += I / V
        s[1] += 1 / V
        s[2] += 1
    assert len(ds.merged) == len(sums)
    got = {tuple(h): (i, n) for h, i, n in zip(ds.merged.miller_index.tolist(),
                                               ds.merged.intensity, ds.merged.multiplicity)}
    for key, (swi, sw, n) in sums.items():
        i, nn = got[key]
        assert i == pytest.approx(swi / sw, rel=1e-9, abs=1e-9) and nn == n
    assert np.all(np.isfinite(ds.mean.F[~ds.mean.rejected]))
    assert 0 < ds.wilson_b < 10  # a small-molecule crystal at room temperature scale: few A^2
    assert ds.statistics is not None and ds.statistics.overall.cc_half > 0.99


def test_gemmi_merge_of_exported_mtz_equals_merge(lcys, tmp_path):
    expts, table = lcys
    prep = prepare(expts, table, ["scale"], partiality_threshold=0.4, min_isigi=None)
    path = tmp_path / "scaled.mtz"
    path.write_bytes(bytes(unmerged_mtz(prep).write_to_bytes()))
    intens = gemmi.Intensities()
    intens.import_mtz(gemmi.read_mtz_file(str(path)), gemmi.DataType.Unmerged)
    intens.merge_in_place(gemmi.DataType.Mean)
    theirs = dict(zip(map(tuple, intens.miller_array.tolist()), intens.value_array))
    ours = merge_scaled(expts, table).datasets[0].merged
    assert len(theirs) == len(ours)
    got = np.array([theirs[tuple(h)] for h in ours.miller_index.tolist()])
    assert np.max(np.abs(got - ours.intensity) / np.maximum(np.abs(ours.intensity), 1.0)) < 1e-4


def test_session_import_export_merge(session):
    """The three DIALS pairs imported in one command, then export and merge in the shell."""
    folder = data_path("l_cysteine_4_sweeps_scaled")
    files = " ".join(f"{folder}/scaled_{n}.{ext}" for n in ("20_25", "30", "35")
                     for ext in ("expt", "refl"))
    r = session.run_line(f"import {files}")
    assert r.ok, r.text
    r = session.run_line("export")
    assert r.ok, r.text
    assert "Batches: 1-1800, 1901-3600, 3701-5400, 5501-7200" in r.text
    m = gemmi.read_mtz_file(str(session.folder / "scaled.mtz"))
    assert len(m.batches) == 6900 and "SCALEUSED" in m.column_labels()
    r = session.run_line("merge")
    assert r.ok, r.text
    merged = gemmi.read_mtz_file(str(session.folder / "merged.mtz"))
    assert merged.spacegroup.hm == "P 2 2 2" and merged.nreflections > 1500
    assert session.history.step(session.head).metrics["cc_half"] > 0.99
