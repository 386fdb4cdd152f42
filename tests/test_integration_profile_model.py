"""The gaussian_rs profile model (gonio.core.integration.profile_model): the .expt entry,
bounding boxes and foreground against DIALS, and sigma_b / sigma_m estimated from strong
spots against DIALS and against a simulation's truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import erf

from gonio.core.integration.kabsch import kabsch_basis, kabsch_c12
from gonio.core.integration.profile_model import (
    ProfileModel,
    ProfileModelError,
    bbox_from_profile,
    estimate_profile_model,
    foreground_mask_xy,
    in_profile_ellipsoid,
    is_foreground,
    rocking_width_deg,
)
from gonio.core.reflection_table import Flags
from tests.conftest import data_path
from tests.integration_reference import dials_reference

# DIALS's profile for x4_xds is not stored (no integrated.expt). sigma_m follows exactly
# from its partiality column (every reflection with 0.02 < p < 0.98 gives the same value,
# test_x4_sigma_m_from_dials_partiality); sigma_b is the one value for which the bbox
# column is reproduced (a single scalar fitted against 2269 x 4 integer box edges).
X4_SIGMA_M = 0.227358239
X4_SIGMA_B = 0.049955


def _phi(expt, refl):
    return expt.scan.angle_from_frame(refl["xyzcal.px"][:, 2])


# -- the .expt entry --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["11_integrated.expt", "23_integrated.expt"])
def test_to_dict_is_the_dials_expt_profile_entry(name, tmp_path):
    from gonio.core.io.dials_expt import read_expt, write_expt

    path = data_path("l_cysteine_wedges", name)
    entry = json.loads(path.read_text())["profile"][0]
    model = ProfileModel.from_dict(entry)
    assert model.to_dict() == entry
    assert not model.scan_varying and model.n_sigma == 3.0
    # the experiment carries it through gonio's .expt writer unchanged
    expts = read_expt(path)
    expts[0].profile = model.to_dict()
    write_expt(expts, tmp_path / "out.expt")
    assert json.loads((tmp_path / "out.expt").read_text())["profile"][0] == entry


def test_scan_varying_model_round_trips_and_picks_the_image_value():
    expt, _ = dials_reference("lcys11")
    b = np.linspace(0.04, 0.05, 10)
    m = np.linspace(0.07, 0.09, 10)
    model = ProfileModel(b, m, 3.0)
    d = model.to_dict()
    assert d["sigma_b"] == list(b) and d["sigma_m"] == list(m)
    assert ProfileModel.from_dict(d) == model
    sb, sm = model.at_frames(expt, [-3.0, 0.2, 4.99, 9.5, 12.0])
    np.testing.assert_array_equal(sb, b[[0, 0, 4, 9, 9]])
    np.testing.assert_array_equal(sm, m[[0, 0, 4, 9, 9]])


@pytest.mark.parametrize("kw,words", [
    (dict(sigma_b_deg=0.05, sigma_m_deg=0.0), "sigma_m must be a positive"),
    (dict(sigma_b_deg=-0.05, sigma_m_deg=0.1), "sigma_b must be a positive"),
    (dict(sigma_b_deg=0.05, sigma_m_deg=float("nan")), "sigma_m must be a positive"),
    (dict(sigma_b_deg=[0.05, 0.05], sigma_m_deg=[0.1]), "both one value per image"),
    (dict(sigma_b_deg=0.05, sigma_m_deg=0.1, n_sigma=0.0), "n_sigma must be positive"),
])
def test_impossible_values_are_refused(kw, words):
    with pytest.raises(ProfileModelError, match=words):
        ProfileModel(**kw)


def test_resolution_term_round_trips_and_is_checked(tmp_path):
    model = ProfileModel(0.09, 0.08, 3.0, sigma_m_rlp=0.00116)
    d = model.to_dict()
    assert d["sigma_m_rlp"] == 0.00116 and d["sigma_m"] == 0.08
    assert ProfileModel.from_dict(d) == model
    assert "sigma_m_rlp" not in ProfileModel(0.09, 0.08).to_dict()  # DIALS's entry as it was
    assert ProfileModel.from_dict(ProfileModel(0.09, 0.08).to_dict()).sigma_m_rlp is None
    with pytest.raises(ProfileModelError, match="sigma_m_rlp must be a size"):
        ProfileModel(0.09, 0.08, sigma_m_rlp=-1e-3)
    expt, indexed = _x4_indexed()
    with pytest.raises(ProfileModelError, match="unknown sigma_m_model"):
        estimate_profile_model(expt, indexed, sigma_m_model="linear")


def test_rocking_width_is_the_lattice_points_crossing_time():
    """A lattice point of size sigma_rlp (1/A) diffracts while it is within sigma_rlp of the
    Ewald sphere: over dphi = sigma_rlp / (d|s0 + R(dphi) r| / dphi), i.e. |zeta| dphi in
    c3. The speed is measured here by rotating the real reflections' lattice points."""
    expt, refl = dials_reference("lcys11")
    s0 = np.asarray(expt.beam.s0)
    axis = np.asarray(expt.goniometer.rotation_axis)
    r = refl["s1"] - s0
    h = 1e-6

    def rotated(angle):
        return (r * math.cos(angle) + np.cross(axis, r) * math.sin(angle)
                + np.outer(r @ axis, axis) * (1 - math.cos(angle)))

    speed = (np.linalg.norm(s0 + rotated(h), axis=1)
             - np.linalg.norm(s0 + rotated(-h), axis=1)) / (2 * h)  # 1/A per rad
    zeta = kabsch_basis(s0, refl["s1"], axis)[3]
    sigma_rlp = 0.002
    expected = np.rad2deg(np.abs(zeta) * sigma_rlp / np.abs(speed))
    ok = np.abs(zeta) > 0.05
    model = ProfileModel(0.05, 1e-6, sigma_m_rlp=sigma_rlp)
    width = rocking_width_deg(model, expt, refl["s1"], refl["xyzcal.px"][:, 2])
    np.testing.assert_allclose(width[ok], expected[ok], rtol=1e-4)
    # with a mosaic spread the two add in quadrature; without the term, DIALS's sigma_m
    # widened at low angle by sigma_b / sin 2theta
    both = rocking_width_deg(ProfileModel(0.05, 0.1, sigma_m_rlp=sigma_rlp), expt,
                             refl["s1"], refl["xyzcal.px"][:, 2])
    np.testing.assert_allclose(both[ok], np.hypot(0.1, expected[ok]), rtol=1e-4)
    sin2t = np.linalg.norm(np.cross(refl["s1"], s0), axis=1) / np.linalg.norm(s0) ** 2
    const = rocking_width_deg(ProfileModel(0.05, 0.1), expt, refl["s1"], refl["xyzcal.px"][:, 2])
    np.testing.assert_allclose(const, np.hypot(0.1, 0.05 / sin2t), rtol=1e-6)


def test_other_profile_models_are_refused():
    with pytest.raises(ProfileModelError, match="ellipsoid"):
        ProfileModel.from_dict({"__id__": "ellipsoid", "sigma_b": 1, "sigma_m": 1})


# -- bounding boxes ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["lcys11", "lcys23"])
def test_bbox_equals_dials_bbox_column(case):
    """Multi-axis goniometer, parallax-corrected Pilatus: every box edge as DIALS's."""
    expt, refl = dials_reference(case)
    model = ProfileModel.from_dict(expt.profile)
    bbox = bbox_from_profile(expt, refl["s1"], _phi(expt, refl), refl["panel"], model)
    equal = np.all(bbox == refl["bbox"], axis=1)
    assert equal.mean() == 1.0, f"{equal.mean():.3f} of the boxes equal DIALS's"
    assert len(np.unique(refl["bbox"][:, 4:], axis=0)) > 10  # many frame ranges tested


def test_x4_sigma_m_from_dials_partiality():
    """Every DIALS partiality of x4 follows from one sigma_m through DIALS's formula."""
    from scipy.optimize import brentq

    expt, refl = dials_reference("x4")
    scan = expt.scan
    phi = _phi(expt, refl)
    pa, pb = scan.angle_from_frame(refl["bbox"][:, 4]), scan.angle_from_frame(refl["bbox"][:, 5])
    z, p = np.abs(refl["zeta"]), refl["partiality"]
    rows = np.flatnonzero((p > 0.02) & (p < 0.98))[::20]

    def misfit(s, i):
        c = z[i] / (math.sqrt(2) * s)
        return 0.5 * (erf(c * (pb[i] - phi[i])) - erf(c * (pa[i] - phi[i]))) - p[i]

    sig = [brentq(misfit, 1e-3, 5.0, args=(i,), xtol=1e-12) for i in rows]
    np.testing.assert_allclose(sig, X4_SIGMA_M, rtol=1e-8)


def test_bbox_equals_dials_bbox_column_x4():
    expt, refl = dials_reference("x4")
    model = ProfileModel(X4_SIGMA_B, X4_SIGMA_M)
    bbox = bbox_from_profile(expt, refl["s1"], _phi(expt, refl), refl["panel"], model)
    assert np.all(bbox[:, 4:] == refl["bbox"][:, 4:])  # frames: sigma_m from partiality
    equal = np.all(bbox == refl["bbox"], axis=1).mean()
    within_1 = np.all(np.abs(bbox - refl["bbox"]) <= 1, axis=1).mean()
    assert equal >= 0.99 and within_1 == 1.0, (equal, within_1)


def test_bbox_is_the_projected_box_of_the_model():
    """Box edges from the corners at +-2 n_sigma sigma_b and +-n_sigma sigma_m/|zeta|."""
    expt, refl = dials_reference("lcys11")
    model = ProfileModel(0.05, 0.02)
    phi = _phi(expt, refl)
    bbox = bbox_from_profile(expt, refl["s1"], phi, refl["panel"], model)
    wide = bbox_from_profile(expt, refl["s1"], phi, refl["panel"], ProfileModel(0.10, 0.02))
    w, ww = bbox[:, 1] - bbox[:, 0], wide[:, 1] - wide[:, 0]
    assert np.all(ww >= 2 * w - 4) and np.all(ww <= 2 * w + 2)  # floor/ceil: +0..2 px
    # along phi: half-width n_sigma sigma_m / |zeta| deg, in frames of 0.1 deg
    half = 3 * 0.02 / np.abs(refl["zeta"]) / expt.scan.oscillation[1]
    z = refl["xyzcal.px"][:, 2]
    inside = (z - half > 0) & (z + half < expt.scan.num_images)
    np.testing.assert_array_equal(bbox[inside, 4], np.floor(z - half)[inside])
    np.testing.assert_array_equal(bbox[inside, 5], np.ceil(z + half)[inside])


# -- foreground -------------------------------------------------------------------------


def test_foreground_is_the_disc_of_radius_n_sigma_sigma_b():
    expt, refl = dials_reference("lcys11")
    model = ProfileModel(0.05, 0.08)
    i = int(np.argmax(refl["d"]))
    s1, panel = refl["s1"][i], int(refl["panel"][i])
    bbox = bbox_from_profile(expt, s1[None], _phi(expt, refl)[[i]], [panel], model)[0]
    delta_b = model.n_sigma * model.sigma_b_deg
    fg = foreground_mask_xy(expt, s1, panel, bbox, delta_b)
    # brute force: a pixel is foreground when one of its four corners is within delta_b
    pan = expt.detector[panel]
    e1, e2, _, _ = kabsch_basis(expt.beam.s0, s1[None], expt.goniometer.rotation_axis)
    want = np.zeros_like(fg)
    for j in range(bbox[3] - bbox[2]):
        for k in range(bbox[1] - bbox[0]):
            corners = np.array([[bbox[0] + k + a, bbox[2] + j + b] for a in (0, 1) for b in (0, 1)],
                               float)
            lab = pan.lab_coord(pan.pixel_to_millimeter(corners))
            c1, c2 = kabsch_c12(lab, np.repeat(s1[None], 4, 0), np.repeat(e1, 4, 0),
                                np.repeat(e2, 4, 0))
            want[j, k] = is_foreground(c1, c2, delta_b).any()
    np.testing.assert_array_equal(fg, want)
    # the box is twice the foreground: background all round it
    assert fg.any() and not fg[0].any() and not fg[-1].any()
    assert not fg[:, 0].any() and not fg[:, -1].any()


def test_profile_ellipsoid():
    assert in_profile_ellipsoid(0.1, 0.0, 0.0, 0.1, 0.3)
    assert not in_profile_ellipsoid(0.08, 0.0, 0.2, 0.1, 0.3)
    assert in_profile_ellipsoid(0.0, 0.0, 0.3, 0.1, 0.3)
    assert is_foreground(0.06, 0.08, 0.1) and not is_foreground(0.061, 0.08, 0.1)


# -- estimation -------------------------------------------------------------------------


def _x4_indexed():
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl

    expt = read_expt(data_path("x4_xds", "indexed.expt"))[0]
    return expt, read_refl(data_path("x4_xds", "indexed.refl"))


def test_x4_estimate_against_dials():
    """DIALS's strong spots and shoeboxes (indexed.refl): sigma_b within 3% of the
    sigma_b DIALS integrated with, sigma_m by the ``basic`` likelihood within 5%
    (DIALS refined further before integrating; its refined predictions are not kept)."""
    expt, indexed = _x4_indexed()
    ext = estimate_profile_model(expt, indexed)
    basic = estimate_profile_model(expt, indexed, algorithm="basic")
    assert ext.n_used == basic.n_used == 439
    assert ext.sigma_b_deg == basic.sigma_b_deg
    assert abs(ext.sigma_b_deg / X4_SIGMA_B - 1) < 0.03, ext
    assert abs(basic.sigma_m_deg / X4_SIGMA_M - 1) < 0.05, basic
    assert 0.8 < ext.sigma_m_deg / X4_SIGMA_M < 1.0, ext


def test_estimate_needs_enough_indexed_spots_with_pixels():
    expt, indexed = _x4_indexed()
    few = indexed.select(np.flatnonzero(indexed.get_flags(Flags.indexed))[:8])
    with pytest.raises(ProfileModelError, match="too few indexed strong spots"):
        estimate_profile_model(expt, few)
    bare = indexed.copy()
    del bare["shoebox"]
    with pytest.raises(ProfileModelError, match="lack shoebox"):
        estimate_profile_model(expt, bare)
    with pytest.raises(ProfileModelError, match="unknown sigma_m algorithm"):
        estimate_profile_model(expt, indexed, algorithm="fancy")
    with pytest.raises(ProfileModelError, match="index"):
        estimate_profile_model(expt.replace(crystal=None), indexed)


@pytest.fixture(scope="module", params=[(0.02, 0.05, 0.5), (0.08, 0.15, 0.01)],
                ids=["narrow", "wide"])
def simulated_spots(request):
    """Strong spots found on a simulated sweep, given the true Miller index, s1 and phi of
    the reflection each belongs to (an ideal indexing and refinement)."""
    from scipy.spatial import cKDTree

    from gonio.core.formats.reader import InMemoryReader
    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.spotfinding import SpotFinderParams, find_spots

    sigma_b, sigma_m, spot_sigma = request.param
    p = SimulationParams.from_preset("lysozyme", n_images=12, image_size=(512, 512),
                                     d_min=2.2, output=None, seed=11, sigma_b=sigma_b,
                                     sigma_m=sigma_m, spot_sigma=spot_sigma)
    sweep = simulate(p)
    strong, _ = find_spots(sweep.header_experiments,
                           [InMemoryReader([tuple(i) for i in sweep.images])],
                           SpotFinderParams(nproc=1))
    truth = sweep.truth.select(np.isfinite(sweep.truth["xyztrue.px"]).all(axis=1))
    d, j = cKDTree(truth["xyztrue.px"] * [1, 1, 4]).query(strong["xyzobs.px.value"] * [1, 1, 4])
    spots = strong.select(d < 2).copy()
    for c in ("s1", "miller_index", "xyzcal.mm"):
        spots[c] = truth[c][j[d < 2]]
    spots["flags"] = spots["flags"] | Flags.indexed
    return sweep, spots


def test_sigma_m_recovers_the_simulated_mosaicity(simulated_spots):
    """The simulator draws each reflecting range as a Gaussian of sigma_m / |zeta|: the
    extended likelihood gets sigma_m back to 5%."""
    sweep, spots = simulated_spots
    model = estimate_profile_model(sweep.experiments[0], spots)
    assert model.n_used > 300
    assert abs(model.sigma_m_deg / sweep.params.sigma_m - 1) < 0.05, model
    # the simulated rocking width is one angle at every resolution: auto keeps DIALS's model
    auto = estimate_profile_model(sweep.experiments[0], spots, sigma_m_model="auto")
    assert auto.sigma_m_rlp is None and auto == model


def test_sigma_b_measures_the_simulated_spot_size(simulated_spots):
    """DIALS's sigma_b is the rms 2D angle of the spot pixels about s1: sqrt(2) times the
    per-axis spread for a full Gaussian, less the tails below the spot finder's threshold.
    The per-axis spread of a simulated spot is its divergence sigma_b, its extra
    spot_sigma and the pixel's own 1/sqrt(12), all as angles."""
    sweep, spots = simulated_spots
    p, e = sweep.params, sweep.experiments[0]
    pan = e.detector[0]
    px_deg = math.degrees(pan.pixel_size[0] / pan.distance)
    per_axis = math.sqrt(p.sigma_b**2 + (p.spot_sigma**2 + 1 / 12) * px_deg**2)
    model = estimate_profile_model(e, spots)
    assert 1.1 * per_axis < model.sigma_b_deg < math.sqrt(2) * per_axis, (model, per_axis)


def test_scan_varying_model_follows_the_scan(simulated_spots):
    sweep, spots = simulated_spots
    e = sweep.experiments[0]
    model = estimate_profile_model(e, spots, scan_varying=True)
    static = estimate_profile_model(e, spots, algorithm="basic")
    assert model.scan_varying and len(model.sigma_b_deg) == e.scan.num_images
    # one crystal, one beam: the per-image values scatter little about the static ones
    assert np.all(np.abs(model.sigma_b_deg / static.sigma_b_deg - 1) < 0.1)
    assert np.all(np.abs(model.sigma_m_deg / static.sigma_m_deg - 1) < 0.2)
    assert ProfileModel.from_dict(model.to_dict()) == model


def test_estimate_uses_only_its_experiment_and_at_most_ten_thousand_spots():
    from gonio.core.integration.profile_model import _select_for_estimate
    from gonio.core.reflection_table import ReflectionTable

    expt, indexed = _x4_indexed()
    alone = estimate_profile_model(expt, indexed)
    other = indexed.copy()
    other["id"] = np.ones(len(other), np.int32)
    other["s1"] = other["s1"][::-1].copy()  # nonsense for this experiment
    both = ReflectionTable.concatenate([indexed, other])
    assert estimate_profile_model(expt, both, experiment_id=0) == alone
    # DIALS: with >= 10000 spots, those used in refinement, topped up with every n-th other
    flags = np.zeros(25000, np.uint64)
    flags[:3000] = Flags.used_in_refinement
    picked = _select_for_estimate(ReflectionTable({"flags": flags, "row": np.arange(25000)}))
    step = 22000 // 7000
    np.testing.assert_array_equal(picked["row"], np.concatenate(
        [np.arange(3000), np.arange(3000, 25000)[::step]]))


def test_fraction_shares_boundaries_and_its_slope_is_the_derivative():
    """The recorded fraction per image: one erf per boundary (an image's upper edge is
    the next image's lower edge) gives (erf(hi) - erf(lo)) / 2 image by image, and the
    slope the likelihood fit follows is its derivative in the spot's width."""
    from gonio.core.integration.profile_model import _Fraction

    rng = np.random.default_rng(1)
    spot = np.repeat(np.arange(40), 3)
    frame = np.tile(np.arange(3), 40)
    frame[5] = 7  # a gap: this image's lower edge is not the one before's upper edge
    dphi2 = 0.001  # rad, half the oscillation
    phi_c = 0.003 + rng.normal(size=40) * 1e-3  # rad, each spot's predicted angle
    tau = (frame + 0.5) * 2 * dphi2 - phi_c[spot]  # image centre - phi_c
    zeta = (np.abs(rng.normal(size=40)) + 0.2)[spot]
    fraction = _Fraction(tau, zeta, dphi2, spot, frame)
    assert len(fraction.edge) == len(spot) + 40 + 1
    width = (0.0015 * (1 + rng.random(40)))[fraction.spot]
    per_image = width[:len(spot)]
    direct = (erf((tau + dphi2) * zeta / (math.sqrt(2) * per_image))
              - erf((tau - dphi2) * zeta / (math.sqrt(2) * per_image))) / 2
    z, slope = fraction.with_slope(width)
    np.testing.assert_allclose(z, direct, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(z, fraction(width))
    h = 1e-9
    numeric = (fraction(width + h) - fraction(width - h)) / (2 * h)
    np.testing.assert_allclose(slope, numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())
