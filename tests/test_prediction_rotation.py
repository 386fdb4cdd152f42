"""Rotation-geometry prediction against DIALS's own predictions (shared/data)."""

from pathlib import Path

import gemmi
import numpy as np
import pytest

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.models.crystal import Crystal
from gonio.core.prediction import (
    generate_indices,
    predict_observed,
    predict_rotation,
    rotation_angles,
)
from gonio.core.prediction.rotation import PredictionError
from gonio.core.reflection_table import Flags

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(*parts):
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data {p} is absent (shared/data not mounted)")
    return p


def _key(hkl, entering):
    hkl = np.asarray(hkl, dtype=np.int64) + 512
    return ((hkl[:, 0] * 1024 + hkl[:, 1]) * 1024 + hkl[:, 2]) * 2 + np.asarray(entering)


def test_x4_predict_observed_matches_dials_xyzcal():
    expt = read_expt(_need("x4_xds", "indexed.expt"))[0]
    refl = read_refl(_need("x4_xds", "indexed.refl"))
    refl = refl.select(refl["id"] >= 0)
    t = predict_observed(expt, refl["miller_index"], refl["xyzcal.mm"][:, 2])
    ref = refl.select(t["_source_index"])
    assert len(t) >= len(refl) - 1  # 569 indexed rows, all but at most one predicted
    dpx = t["xyzcal.px"] - ref["xyzcal.px"]
    # DIALS predicted these with the same (final) model: agreement is to rounding
    assert np.abs(dpx).max() < 1e-6
    assert np.array_equal(t["entering"], ref["entering"])
    assert np.abs(t["xyzcal.mm"] - ref["xyzcal.mm"]).max() < 1e-8


def test_x4_predict_rotation_finds_every_dials_prediction():
    expt = read_expt(_need("x4_xds", "indexed.expt"))[0]
    refl = read_refl(_need("x4_xds", "indexed.refl"))
    refl = refl.select(refl["id"] >= 0)
    z0, z1 = expt.scan.array_range
    inside = (refl["xyzcal.px"][:, 2] >= z0) & (refl["xyzcal.px"][:, 2] < z1)
    refl = refl.select(inside)
    d = 1.0 / np.linalg.norm(refl["miller_index"] @ expt.crystal.A.T, axis=1)
    pred = predict_rotation(expt, d_min=d.min() - 1e-6)
    assert np.all(pred.get_flags(Flags.predicted))
    k_pred, k_ref = _key(pred["miller_index"], pred["entering"]), _key(refl["miller_index"],
                                                                           refl["entering"])
    order = np.argsort(k_pred)
    pos = np.searchsorted(k_pred[order], k_ref)
    found = (pos < len(k_pred)) & (k_pred[order][np.minimum(pos, len(k_pred) - 1)] == k_ref)
    assert found.mean() > 0.99, found.mean()
    rows = order[pos[found]]
    dpx = pred["xyzcal.px"][rows] - refl["xyzcal.px"][found]
    assert np.abs(dpx).max() < 1e-6
    # predicted rows satisfy the Ewald condition |s1| = |s0|
    s0 = np.linalg.norm(expt.beam.s0)
    assert np.abs(np.linalg.norm(pred["s1"], axis=1) - s0).max() < 1e-9
    z = pred["xyzcal.px"][:, 2]
    assert z.min() >= z0 and z.max() < z1 and np.all(np.diff(z) >= 0)


@pytest.mark.parametrize("name", ["11", "23"])
def test_l_cysteine_multi_axis_matches_dials(name):
    expt = read_expt(_need("l_cysteine_wedges", f"{name}_integrated.expt"))[0]
    refl = read_refl(_need("l_cysteine_wedges", f"{name}_integrated.refl"))
    assert expt.goniometer.is_multi_axis
    good = ~refl.get_flags(Flags.centroid_outlier)  # DIALS leaves d/zeta stale on these
    refl = refl.select(good & (np.abs(refl["miller_index"]).sum(axis=1) > 0))
    t = predict_observed(expt, refl["miller_index"], refl["xyzcal.mm"][:, 2])
    ref = refl.select(t["_source_index"])
    assert len(t) == len(refl)
    assert np.abs(t["xyzcal.px"] - ref["xyzcal.px"]).max() < 1e-6
    assert np.abs(t["zeta"] - ref["zeta"]).max() < 1e-9
    assert np.abs(t["d"] - ref["d"]).max() < 1e-9
    assert np.array_equal(t["entering"], ref["entering"])


def test_generate_indices_sphere_and_absences():
    cell = gemmi.UnitCell(79.1, 79.1, 37.9, 90, 90, 90)
    cryst = Crystal.from_cell_and_U(cell, np.eye(3), "P 43 21 2")
    hkl = generate_indices(cryst, d_min=3.0)
    d = 1.0 / np.linalg.norm(hkl @ cryst.A.T, axis=1)
    assert d.min() >= 3.0 and not np.any(np.all(hkl == 0, axis=1))
    # 43 screw: 0 0 l only with l = 4n; 21: h 0 0 only with h even
    h00 = hkl[(hkl[:, 1] == 0) & (hkl[:, 2] == 0)]
    assert np.all(h00[:, 0] % 2 == 0)
    l00 = hkl[(hkl[:, 0] == 0) & (hkl[:, 1] == 0)]
    assert np.all(l00[:, 2] % 4 == 0) and len(l00) == 6  # l = +-4, +-8, +-12
    all_hkl = generate_indices(cryst, d_min=3.0, remove_absent=False)
    n_in_sphere = 4 * np.pi / 3 / 3.0**3 * cell.volume  # reciprocal-sphere volume x cell volume
    assert abs(len(all_hkl) / n_in_sphere - 1) < 0.02
    with pytest.raises(PredictionError):
        generate_indices(cryst, d_min=0)


def test_rotation_angles_solve_ewald_condition():
    rng = np.random.default_rng(1)
    s0 = np.array([0.0, 0.0, -1.0])
    axis = np.array([1.0, 0.0, 0.0])
    p = rng.uniform(-1.2, 1.2, size=(500, 3))
    phi, ok = rotation_angles(s0, axis, p)
    assert 0.3 < ok.mean() < 1.0
    from gonio.core.models.rotation import rotate_vectors
    for j in range(2):
        r = rotate_vectors(p[ok], axis, phi[ok, j])
        assert np.abs(np.linalg.norm(s0 + r, axis=1) - 1.0).max() < 1e-12
    # a point too far out (|p| > 2|s0|) never diffracts
    _, ok2 = rotation_angles(s0, axis, np.array([[0.0, 2.5, 0.0]]))
    assert not ok2[0]
