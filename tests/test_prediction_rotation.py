"""Rotation-geometry prediction against DIALS's own predictions (shared/data)."""

from pathlib import Path

import gemmi
import numpy as np
import pytest

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.models.crystal import Crystal
from gonio.core.prediction import (
    detector_d_min,
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


def test_l_cysteine_predict_rotation_finds_dials_predictions_in_the_scan():
    expt = read_expt(_need("l_cysteine_wedges", "11_integrated.expt"))[0]
    refl = read_refl(_need("l_cysteine_wedges", "11_integrated.refl"))
    refl = refl.select(~refl.get_flags(Flags.centroid_outlier)
                       & (np.abs(refl["miller_index"]).sum(axis=1) > 0))
    z = refl["xyzcal.px"][:, 2]
    refl = refl.select((z >= 0) & (z < expt.scan.num_images))
    assert len(refl) == 28
    pred = predict_rotation(expt)  # d_min: the detector corner
    assert pred["d"].min() >= detector_d_min(expt) - 1e-9
    kp, kr = _key(pred["miller_index"], pred["entering"]), _key(refl["miller_index"],
                                                                    refl["entering"])
    order = np.argsort(kp)
    pos = np.clip(np.searchsorted(kp[order], kr), 0, len(kp) - 1)
    assert np.all(kp[order][pos] == kr)
    assert np.abs(pred["xyzcal.px"][order][pos] - refl["xyzcal.px"]).max() < 1e-6


def _scan_varying_copy(expt, drift_deg_per_image):
    """``expt`` with A at each image boundary turned by a slow drift about (0, 1, 1)."""
    from gonio.core.models.rotation import axis_angle_matrix

    n = expt.scan.num_images
    angles = np.deg2rad(drift_deg_per_image) * np.arange(n + 1)
    A_sp = axis_angle_matrix([0.0, 1.0, 1.0], angles) @ expt.crystal.A
    return expt.replace(crystal=expt.crystal.replace(A_at_scan_points=A_sp))


def test_scan_varying_with_constant_A_equals_static():
    expt = read_expt(_need("x4_xds", "indexed.expt"))[0]
    static = predict_rotation(expt, d_min=1.5)
    sv = predict_rotation(_scan_varying_copy(expt, 0.0), d_min=1.5)
    assert len(sv) == len(static) == 854
    ks, kv = _key(static["miller_index"], static["entering"]), _key(sv["miller_index"],
                                                                     sv["entering"])
    order = np.argsort(ks)
    pos = np.searchsorted(ks[order], kv)
    assert np.array_equal(ks[order][pos], kv)
    d = sv["xyzcal.px"] - static["xyzcal.px"][order][pos]
    assert np.abs(d[:, :2]).max() < 0.005 and np.abs(d[:, 2]).max() < 0.002  # chord vs arc


def test_scan_varying_follows_a_drifting_crystal():
    from gonio.core.models.rotation import rotate_vectors

    expt = _scan_varying_copy(read_expt(_need("x4_xds", "indexed.expt"))[0], 0.05)
    sv = predict_rotation(expt, d_min=1.5)
    static = predict_rotation(expt, d_min=1.5, scan_varying=False)
    assert len(sv) > 800
    # the drift moves spots: scan-varying and static differ by up to ~0.4 deg of crystal turn
    ks, kv = _key(static["miller_index"], static["entering"]), _key(sv["miller_index"],
                                                                     sv["entering"])
    order = np.argsort(ks)
    pos = np.clip(np.searchsorted(ks[order], kv), 0, len(ks) - 1)
    same = ks[order][pos] == kv
    assert np.abs(sv["xyzcal.px"][same] - static["xyzcal.px"][order][pos[same]]).max() > 1.0
    # exact crossing of the continuous model A(z) linear between scan points, by bisection
    g, s0, A_sp = expt.goniometer, expt.beam.s0, expt.crystal.A_at_scan_points
    h = sv["miller_index"].astype(float)
    img = np.floor(sv["xyzcal.px"][:, 2]).astype(int)

    def f(z):
        t = (z - img)[:, None, None]
        A = A_sp[img] + t * (A_sp[img + 1] - A_sp[img])
        phi = np.deg2rad(expt.scan.angle_from_frame(z))
        r = rotate_vectors(np.einsum("nij,nj->ni", A, h), g.rotation_axis_datum, phi)
        return np.linalg.norm(s0 + r, axis=1) - np.linalg.norm(s0)

    lo, hi = img.astype(float), img + 1.0
    f_lo = f(lo)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        left = np.sign(f_mid) == np.sign(f_lo)
        lo, f_lo = np.where(left, mid, lo), np.where(left, f_mid, f_lo)
        hi = np.where(left, hi, mid)
    dz = np.abs(0.5 * (lo + hi) - sv["xyzcal.px"][:, 2])  # images; the path is a chord
    assert dz.max() < 0.01 and np.median(dz) < 1e-4


def test_scan_varying_needs_one_A_per_image_boundary():
    expt = read_expt(_need("x4_xds", "indexed.expt"))[0]
    bad = expt.replace(crystal=expt.crystal.replace(A_at_scan_points=np.repeat(
        expt.crystal.A[None], 3, axis=0)))
    with pytest.raises(PredictionError, match="needs 10"):
        predict_rotation(bad, d_min=2.0)
    with pytest.raises(PredictionError, match="no crystal"):
        predict_rotation(expt.replace(crystal=None), d_min=2.0)
