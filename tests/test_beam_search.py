"""Beam-centre search (search_beam_position) on the x4 XDS files and on predicted spots."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from gonio.core.errors import GonioError
from gonio.core.indexing import IndexParams, index
from gonio.core.indexing.beam_search import BeamSearchParams, search_beam_position
from gonio.core.io.dials_expt import read_expt
from gonio.core.io.xds import read_spot_xds, read_xds_inp
from gonio.core.models.experiment import ExperimentList
from gonio.core.prediction.rotation import predict_rotation
from gonio.core.reflection_table import Flags, ReflectionTable

# where DIALS's refined x4_xds/indexed.expt puts the beam on the detector (px)
X4_TRUE_CENTRE = np.array([1236.108, 1278.301])
X4_CELL = np.array([39.80, 42.45, 42.45])


def _centre_px(experiment) -> np.ndarray:
    panel = experiment.detector[0]
    return panel.millimeter_to_pixel(panel.beam_centre_mm(experiment.beam.s0)[None])[0]


def _move_beam(experiment, d_px):
    """The experiment with the detector moved so the beam centre moves by d_px (px)."""
    p = experiment.detector[0]
    shift = -(d_px[0] * p.fast_axis * p.pixel_size[0] + d_px[1] * p.slow_axis * p.pixel_size[1])
    det = experiment.detector.replace(panels=[q.replace(origin=q.origin + shift)
                                              for q in experiment.detector])
    return experiment.replace(detector=det)


@pytest.fixture(scope="module")
def x4_xds():
    el = read_xds_inp(data_path("x4_xds", "XDS.INP")).experiments
    return el, read_spot_xds(data_path("x4_xds", "SPOT.XDS"), el)


def test_x4_swapped_orgx_orgy_is_found_and_then_indexes(x4_xds):
    el, strong = x4_xds
    start = _centre_px(el[0])
    assert np.abs(start - X4_TRUE_CENTRE).min() > 40  # XDS.INP's ORGX/ORGY are swapped
    out, res = search_beam_position(el, strong, BeamSearchParams())
    found = _centre_px(out[0])
    assert np.hypot(*(found - X4_TRUE_CENTRE)) < 1.5
    assert np.allclose(res.new_centre_px, found)
    assert np.allclose(res.shift_px, found - start)
    px = el[0].detector[0].pixel_size[0]
    assert np.allclose(res.shift_mm, np.asarray(res.shift_px) * px, atol=0.02)
    assert res.score_new > 3 * res.score_old
    assert res.landscape["contrast"] > 0.3  # a clear maximum
    assert len(res.best_positions) == 10
    assert "New beam centre" in res.format_text()
    # only the detector moved: same distance, beam and scan
    assert out[0].detector[0].distance == pytest.approx(el[0].detector[0].distance, abs=1e-9)
    assert np.allclose(out[0].beam.s0, el[0].beam.s0)

    _, _, before = index(el, strong, IndexParams())
    _, _, after = index(out, strong, IndexParams())
    assert before.percent_indexed < 75
    assert after.percent_indexed > 90
    cell = np.sort(after.crystals[0]["unit_cell"][:3])
    assert np.allclose(cell, X4_CELL, rtol=0.005)
    assert np.allclose(after.crystals[0]["unit_cell"][3:], 90, atol=0.5)


def test_x4_right_centre_stays_put(x4_xds):
    el, strong = x4_xds
    right = ExperimentList([_move_beam(el[0], X4_TRUE_CENTRE - _centre_px(el[0]))])
    _, res = search_beam_position(right, strong, BeamSearchParams(mm_search_scope=3.5))
    assert np.hypot(*res.shift_px) < 1.0


@pytest.fixture(scope="module")
def predicted_sweep():
    """The x4 crystal and geometry (DIALS) over 20 deg: predicted centroids + 0.3 px noise."""
    e = read_expt(data_path("x4_xds", "indexed.expt"))[0]
    e = e.replace(scan=e.scan.replace(image_range=(1, 100)))
    pred = predict_rotation(e, d_min=3.0)
    n = len(pred)
    rng = np.random.default_rng(7)
    xyz = pred["xyzcal.px"] + rng.normal(0.0, 0.3, (n, 3)) * [1.0, 1.0, 0.3]
    strong = ReflectionTable({"xyzobs.px.value": xyz,
                              "xyzobs.px.variance": np.full((n, 3), 0.25),
                              "id": np.zeros(n, np.int32), "panel": pred["panel"],
                              "flags": np.full(n, Flags.strong, np.uint64)})
    return e.replace(crystal=None), strong


@pytest.mark.slow
def test_predicted_sweep_recovers_true_centre(predicted_sweep):
    truth, strong = predicted_sweep
    assert len(strong) > 500
    header = _move_beam(truth, np.array([9.0, -7.0]))
    out, res = search_beam_position(ExperimentList([header]), strong)
    assert np.hypot(*(_centre_px(out[0]) - _centre_px(truth))) < 1.0
    assert np.hypot(*(np.asarray(res.shift_px) - [-9.0, 7.0])) < 1.0
    assert res.n_spots == len(strong)


@pytest.mark.slow
def test_predicted_sweep_true_centre_stays_put(predicted_sweep):
    truth, strong = predicted_sweep
    _, res = search_beam_position(ExperimentList([truth]), strong)
    assert np.hypot(*res.shift_px) < 1.0


def test_no_strong_spots_is_a_clear_error(x4_xds):
    el, strong = x4_xds
    with pytest.raises(GonioError, match="run findspots first"):
        search_beam_position(el, strong.select(np.zeros(len(strong), bool)))
    with pytest.raises(GonioError, match="run findspots first"):
        search_beam_position(el, None)


def test_beam_off_the_detector_is_a_clear_error(x4_xds):
    el, strong = x4_xds
    off = ExperimentList([_move_beam(el[0], np.array([5000.0, 0.0]))])
    with pytest.raises(GonioError, match="does not meet the detector"):
        search_beam_position(off, strong)


def test_params_carry_dials_names():
    from dataclasses import fields

    for f in fields(BeamSearchParams):
        assert set(f.metadata) >= {"dials", "help", "units"}
    assert {f.name: f.metadata["dials"] for f in fields(BeamSearchParams)}[
        "n_macro_cycles"] == "default.n_macro_cycles"


def test_bad_params_are_a_clear_error(x4_xds):
    el, strong = x4_xds
    with pytest.raises(GonioError, match="mm_search_scope=-5"):
        search_beam_position(el, strong, BeamSearchParams(mm_search_scope=-5))
    with pytest.raises(GonioError, match="n_vectors=0"):
        search_beam_position(el, strong, BeamSearchParams(n_vectors=0))
    with pytest.raises(GonioError, match="at most 1000 candidate vectors"):
        search_beam_position(el, strong, BeamSearchParams(n_vectors=10**9))
    with pytest.raises(GonioError, match="and 20 widenings"):
        search_beam_position(el, strong, BeamSearchParams(max_widenings=100))


def test_a_search_wider_than_the_detector_is_a_clear_error(x4_xds):
    """mm_search_scope=1e9 once searched a grid of (2e9 mm / step)^2 trials for ever."""
    el, strong = x4_xds
    with pytest.raises(GonioError, match="larger than the detector panel"):
        search_beam_position(el, strong, BeamSearchParams(mm_search_scope=1e9))


@pytest.mark.slow
def test_macro_cycles_stop_once_the_centre_no_longer_moves(predicted_sweep):
    """A cycle that leaves the centre where its vectors were computed (within fine_step /
    100) would be repeated by every later one: the search stops there (n_macro_cycles=10**9
    once ran for ever), with the centre of a search of a few cycles."""
    truth, strong = predicted_sweep
    header = ExperimentList([_move_beam(truth, np.array([9.0, -7.0]))])
    few, res_few = search_beam_position(header, strong, BeamSearchParams(n_macro_cycles=4))
    many, res_many = search_beam_position(header, strong, BeamSearchParams(n_macro_cycles=10**9))
    assert len(res_many.cycles) < 20
    assert np.hypot(*(_centre_px(many[0]) - _centre_px(few[0]))) < 0.01
    assert np.hypot(*(_centre_px(many[0]) - _centre_px(truth))) < 1.0
