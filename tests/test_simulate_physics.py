"""Simulated sweeps: truth agrees with gonio's own prediction and with the pixel counts."""

import gemmi
import numpy as np
import pytest

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.prediction import predict_rotation
from gonio.core.simulate import SimulationParams, simulate
from gonio.core.simulate.structure import orbit_keys

BASE = dict(image_size=(256, 256), n_images=12, osc=0.5, distance=110.0, seed=7,
            background=1.0, solvent_ring=0.0, sigma_m=0.08, nproc=1)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate(SimulationParams(output=str(out), format="cbf", **BASE)), out


@pytest.fixture(scope="module")
def in_memory():
    return simulate(SimulationParams(**BASE))


def _key(hkl, entering, ident):
    h = np.asarray(hkl, np.int64) + 512
    return (((h[:, 0] * 1024 + h[:, 1]) * 1024 + h[:, 2]) * 2 + entering) * 4 + ident


def test_true_centroids_lie_on_gonio_prediction(sweep):
    res, out = sweep
    expts = read_expt(out / "truth.expt")  # the written truth, read back
    truth = read_refl(out / "truth.refl")
    assert len(truth) == len(res.truth)
    strong = ((truth["intensity.recorded"] > 200) & (truth["partiality"] > 0.999)
              & (truth["fraction.on_detector"] > 0.999))
    assert strong.sum() > 50
    t = truth.select(strong)
    pred = predict_rotation(expts[0], d_min=t["d"].min() - 1e-6)
    kp = _key(pred["miller_index"], pred["entering"], 0)
    kt = _key(t["miller_index"], t["entering"], 0)
    order = np.argsort(kp)
    pos = np.clip(np.searchsorted(kp[order], kt), 0, len(kp) - 1)
    found = kp[order][pos] == kt
    # every strong, fully recorded reflection with its centre inside the scan is predicted
    inside = (t["xyztrue.px"][:, 2] >= 0) & (t["xyztrue.px"][:, 2] < 12)
    assert found[inside].all()
    d = pred["xyzcal.px"][order][pos[found]] - t["xyztrue.px"][found]
    assert np.abs(d[:, :2]).max() < 0.05  # px
    assert np.abs(d[:, 2]).max() < 0.05  # images


def test_noise_free_spot_centroids_match_truth():
    res = simulate(SimulationParams(noise=False, **{**BASE, "background": 0.0}))
    img = res.images[:, 0].astype(float)
    img[img < 0] = 0
    t = res.truth
    x, y, _ = t["xyztrue.px"].T
    sx, sy = t["sigma.px"].T
    sel = np.flatnonzero((t["intensity.recorded"] > 500) & (t["fraction.on_detector"] > 0.999)
                         & (x > 8) & (x < 248) & (y > 8) & (y < 248))
    part = res.partials
    live = part["counts"] > 0.5
    errs = []
    for i in sel:
        images = part["image"][live & (part["refl"] == i)]
        others = np.unique(part["refl"][live & np.isin(part["image"], images)])
        others = others[others != i]
        if np.any((np.abs(x[others] - x[i]) < 12) & (np.abs(y[others] - y[i]) < 12)):
            continue  # isolated spots only
        x0, x1 = int(x[i] - 5 * sx[i]), int(x[i] + 5 * sx[i]) + 1
        y0, y1 = int(y[i] - 5 * sy[i]), int(y[i] + 5 * sy[i]) + 1
        box = img[images - 1, y0:y1, x0:x1].sum(axis=0)
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        errs.append([(box * xx).sum() / box.sum() - x[i], (box * yy).sum() / box.sum() - y[i]])
    errs = np.array(errs)
    assert len(errs) > 20
    # counts are integers (rounded expectation), so allow a little
    assert np.abs(errs).max() < 0.03


def test_box_counts_match_intensity_times_partiality(in_memory):
    res = in_memory
    t, part = res.truth, res.partials
    img = res.images[:, 0].astype(float)
    x, y, _ = t["xyztrue.px"].T
    sx, sy = t["sigma.px"].T
    z = []
    for k in range(res.params.n_images):
        on = part["image"] == k + 1
        rows, counts = part["refl"][on], part["counts"][on]
        strong = rows[(counts > 100) & (t["fraction.on_detector"][rows] > 0.999)]
        for i in strong:
            others = rows[(rows != i) & (counts > 0.5)]
            if np.any((np.abs(x[others] - x[i]) < 14) & (np.abs(y[others] - y[i]) < 14)):
                continue
            x0, x1 = int(x[i] - 5 * sx[i]), int(x[i] + 5 * sx[i]) + 1
            y0, y1 = int(y[i] - 5 * sy[i]), int(y[i] + 5 * sy[i]) + 1
            if x0 < 0 or y0 < 0 or x1 > 256 or y1 > 256:
                continue
            box = img[k, y0:y1, x0:x1]
            if (box < 0).any():
                continue
            bg = res.params.background * box.size
            expected = t["intensity.true"][i] * part["fraction"][on][rows == i][0]
            z.append((box.sum() - bg - expected) / np.sqrt(expected + bg))
    z = np.array(z)
    assert len(z) > 30
    assert abs(z.mean()) < 0.35
    assert 0.7 < z.std() < 1.3


def test_partials_sum_to_partiality(in_memory):
    t, part = in_memory.truth, in_memory.partials
    total = np.bincount(part["refl"], weights=part["fraction"], minlength=len(t))
    strong = t["intensity.true"] > 1000
    assert np.abs(total[strong] - t["partiality"][strong]).max() < 1e-3
    full = strong & (t["xyzcal.px"][:, 2] > 3) & (t["xyzcal.px"][:, 2] < 9) \
        & (np.abs(t["zeta"]) > 0.2)
    assert np.abs(total[full] - 1).max() < 1e-3


def test_deterministic_for_a_seed(in_memory):
    again = simulate(SimulationParams(**{**BASE, "nproc": 2}))  # threads do not matter
    assert np.array_equal(again.images, in_memory.images)
    assert np.array_equal(again.truth["intensity.true"], in_memory.truth["intensity.true"])
    other = simulate(SimulationParams(**{**BASE, "seed": 8}))
    assert other.images.shape == in_memory.images.shape
    assert not np.array_equal(other.images, in_memory.images)
    assert not np.allclose(other.experiments[0].crystal.U, in_memory.experiments[0].crystal.U)


def test_intensities_obey_laue_symmetry_and_absences(in_memory):
    t = in_memory.truth
    sg = in_memory.experiments[0].crystal.space_group
    keys = orbit_keys(t["miller_index"], sg)
    order = np.argsort(keys)
    k, f2 = keys[order], t["F2"][order]
    same = k[1:] == k[:-1]
    assert same.sum() > 20  # symmetry mates were recorded
    assert np.array_equal(f2[1:][same], f2[:-1][same])
    absent = np.asarray(sg.operations().systematic_absences(t["miller_index"]), bool)
    assert not absent.any()  # never predicted, hence never simulated
    # Wilson statistics: acentric <I^2>/<I>^2 = 2 in thin shells (here pooled after scaling)
    d = t["d"]
    ratio = f2 / np.exp(-20.0 / (2 * d[order] ** 2))
    eps = np.asarray(sg.operations().epsilon_factor_without_centering_array(
        t["miller_index"][order]), float)
    centric = np.asarray(sg.operations().centric_flag_array(t["miller_index"][order]), bool)
    e2 = ratio[~centric] / eps[~centric]
    assert 0.8 < e2.mean() < 1.2


def test_header_errors_keep_the_truth(tmp_path):
    res = simulate(SimulationParams(
        output=str(tmp_path), format="smv", header_distance=150.0,
        header_beam_centre_offset=(5.0, -3.0), header_wavelength=1.0,
        header_axis_reversed=True, **{**BASE, "n_images": 2}))
    true, head = res.experiments[0], res.header_experiments[0]
    assert true.detector[0].distance == pytest.approx(110.0)
    assert head.detector[0].distance == pytest.approx(150.0)
    bc_true = true.detector[0].beam_centre_mm(true.beam.s0) / 0.172
    bc_head = head.detector[0].beam_centre_mm(head.beam.s0) / 0.172
    assert np.allclose(bc_head - bc_true, [5.0, -3.0])
    assert true.beam.wavelength == pytest.approx(0.9795) and head.beam.wavelength == 1.0
    # SMV headers imply a +x axis: a reversed header axis means the truth rotates about -x
    assert np.allclose(true.goniometer.rotation_axis, [-1, 0, 0])
    assert np.allclose(head.goniometer.rotation_axis, [1, 0, 0])
    written = read_expt(tmp_path / "header.expt")[0]
    assert written.detector[0].distance == pytest.approx(150.0)


def test_two_lattices():
    res = simulate(SimulationParams(n_lattices=2, space_group="P 21 21 21",
                                    unit_cell=(54.9, 58.6, 67.6, 90, 90, 90),
                                    **{**BASE, "n_images": 4}))
    a, b = res.experiments
    assert a.beam is b.beam and a.detector is b.detector and a.crystal is not b.crystal
    rel = b.crystal.U @ a.crystal.U.T
    angle = np.degrees(np.arccos((np.trace(rel) - 1) / 2))
    assert 10 < angle < 60
    ids = res.truth["id"]
    assert set(np.unique(ids)) == {0, 1} and (ids == 1).sum() > 100
    assert set(res.truth.experiment_identifiers.values()) == {a.identifier, b.identifier}
    assert gemmi.UnitCell(*b.crystal.unit_cell.parameters).approx(
        gemmi.UnitCell(54.9, 58.6, 67.6, 90, 90, 90), 1e-6)


def test_overloads_gaps_and_gain():
    res = simulate(SimulationParams(overload=400.0, gain=2.0, mean_intensity=20000.0,
                                    **{**BASE, "n_images": 3}))
    img = res.images[:, 0]
    gaps = ~res.valid[0]
    assert gaps[195:212].all() and not gaps[:195].any()  # Pilatus-like module gap rows
    assert np.all(img[:, gaps] == -1)
    good = img[:, ~gaps]
    assert good.max() == 400 and (good == 400).sum() > 10  # saturated at the overload
    assert np.all(good[good < 400] % 2 == 0)  # gain 2 ADU per photon
    assert res.experiments[0].detector[0].trusted_range == (-1.0, 400.0)


@pytest.mark.parametrize("name", ["11", "23"])
def test_lorentz_polarisation_is_the_dials_one(name):
    from pathlib import Path

    from gonio.core.simulate.physics import ZETA_MIN, lorentz_polarisation

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "l_cysteine_wedges"
    if not data.exists():
        pytest.skip(f"real test data {data} is absent (shared/data not mounted)")
    expt = read_expt(data / f"{name}_integrated.expt")[0]
    refl = read_refl(data / f"{name}_integrated.refl")
    ok = (np.abs(refl["zeta"]) > ZETA_MIN) & (refl["lp"] > 0)
    lp = 1.0 / lorentz_polarisation(expt, refl)
    assert ok.sum() > 50
    assert np.abs(lp[ok] / refl["lp"][ok] - 1).max() < 1e-9
