"""search_beam_position against the truth of gonio's simulator: several crystals, detectors,
distances, header beam-centre errors up to 20 px in every direction, and a two-lattice
sweep. Spots are the simulator's true centroids (its own prediction of every recorded
reflection) with centroid noise, 30% of them missing (weak) and 3% random false spots."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gonio.core.indexing.beam_search import BeamSearchParams, search_beam_position
from gonio.core.models.experiment import ExperimentList
from gonio.core.prediction.rotation import predict_rotation
from gonio.core.reflection_table import Flags, ReflectionTable
from gonio.core.simulate.models import header_models, true_models
from gonio.core.simulate.params import SimulationParams


def _centre_px(experiment) -> np.ndarray:
    panel = experiment.detector[0]
    return panel.millimeter_to_pixel(panel.beam_centre_mm(experiment.beam.s0)[None])[0]


def sweep(offset_px, seed=1, d_min=None, **sim):
    """(header ExperimentList, strong spots, true beam centre px) of a simulated sweep."""
    p = SimulationParams(header_beam_centre_offset=tuple(offset_px), seed=seed, **sim)
    truth, _, header_axis = true_models(p, np.random.default_rng([seed, 0]))
    header = header_models(truth, p, header_axis)
    rng = np.random.default_rng(seed)
    tables = [predict_rotation(e, d_min=d_min) for e in truth]
    xyz = np.concatenate([t["xyzcal.px"] for t in tables])
    panel = np.concatenate([t["panel"] for t in tables])
    keep = rng.random(len(xyz)) < 0.7
    keep &= (xyz[:, 2] > 0) & (xyz[:, 2] < p.n_images)
    xyz, panel = xyz[keep], panel[keep]
    xyz = xyz + rng.normal(0.0, 0.3, xyz.shape) * [1.0, 1.0, 0.3]
    n_false = len(xyz) // 33
    size = np.asarray(truth[0].detector[0].image_size, float)
    false = np.column_stack([rng.random((n_false, 2)) * size, rng.random(n_false) * p.n_images])
    xyz = np.concatenate([xyz, false])
    panel = np.concatenate([panel, np.zeros(n_false, panel.dtype)])
    n = len(xyz)
    strong = ReflectionTable({"xyzobs.px.value": xyz, "xyzobs.px.variance": np.full((n, 3), 0.1),
                              "id": np.zeros(n, np.int32), "panel": panel,
                              "flags": np.full(n, Flags.strong, np.uint64)})
    return header, strong, _centre_px(truth[0])


LYSO = dict(unit_cell=(79.1, 79.1, 37.9, 90, 90, 90), space_group="P 43 21 2", distance=135.0,
            n_images=20, osc=0.5)
CASES = [
    # the issue's case: 1M Pilatus-like, 135 mm, header off by (+12, -9) px
    ("lysozyme 1M", (12, -9), 1, LYSO),
    ("lysozyme 1M", (-20, 20), 2, LYSO),
    ("lysozyme 1M", (20, 20), 3, LYSO),
    ("lysozyme 1M", (-18, -16), 4, LYSO),
    ("lysozyme 1M", (0, 19), 5, LYSO),
    ("orthorhombic Eiger 2k", (-20, -15), 6,
     dict(unit_cell=(54.9, 58.6, 67.6, 90, 90, 90), space_group="P 21 21 21", distance=180.0,
          detector="eiger", image_size=(2048, 2048), n_images=50, osc=0.2, wavelength=1.0332)),
    ("cubic Pilatus 1.5k x 1.7k", (17, -20), 7,
     dict(unit_cell=(78.9, 78.9, 78.9, 90, 90, 90), space_group="I 2 3", distance=220.0,
          image_size=(1475, 1679), n_images=20, osc=0.5, wavelength=0.9763)),
    ("monoclinic 512 px, 300 mm", (14, 11), 8,
     dict(unit_cell=(60.2, 35.1, 48.3, 90, 103.5, 90), space_group="P 1 21 1",
          distance=300.0, image_size=(512, 512), pixel_size=0.172, n_images=40, osc=0.5)),
]


@pytest.mark.parametrize("name,offset,seed,sim", [
    pytest.param(*c, marks=() if i == 0 else pytest.mark.slow) for i, c in enumerate(CASES)],
    ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_default_search_finds_the_true_centre(name, offset, seed, sim):
    header, strong, true_centre = sweep(offset, seed=seed, **sim)
    start = _centre_px(header[0])
    assert np.allclose(start - true_centre, offset, atol=1e-6)
    out, res = search_beam_position(header, strong)
    found = _centre_px(out[0])
    assert np.hypot(*(found - true_centre)) < 1.0, (name, offset, found, true_centre)
    assert np.allclose(res.new_centre_px, found)
    # how sure: a clear best peak, well above the runner-up
    land = res.landscape
    assert land["contrast"] > 0.05
    assert land["peaks"][0]["score"] > land["peaks"][1]["score"]


@pytest.mark.slow
def test_two_lattice_sweep():
    sim = dict(unit_cell=(54.9, 58.6, 67.6, 90, 90, 90), space_group="P 21 21 21",
               distance=200.0, n_images=40, osc=0.5, n_lattices=2, d_min=2.2)
    header, strong, true_centre = sweep((-13, 16), seed=9, **sim)
    out, res = search_beam_position(header, strong)
    assert np.hypot(*(_centre_px(out[0]) - true_centre)) < 1.0


@pytest.mark.slow
def test_right_centre_stays_put_and_is_confident():
    header, strong, true_centre = sweep((0, 0), seed=11, **LYSO)
    out, res = search_beam_position(header, strong)
    assert np.hypot(*(_centre_px(out[0]) - true_centre)) < 0.7
    text = res.format_text()
    assert "runner-up" in text and "contrast" in text


@pytest.mark.slow
def test_error_beyond_the_scope_is_followed_to_the_edge_maximum():
    """35 px (6 mm) each way is outside mm_search_scope=4: the square moves there."""
    header, strong, true_centre = sweep((35, -35), seed=12, **LYSO)
    out, res = search_beam_position(header, strong)
    assert np.hypot(*(_centre_px(out[0]) - true_centre)) < 1.0
    out, _ = search_beam_position(header, strong, BeamSearchParams(max_widenings=0))
    assert np.hypot(*(_centre_px(out[0]) - true_centre)) > 5.0


def test_speed_10k_spots():
    header, strong, _ = sweep((12, -9), seed=13, **LYSO)
    assert len(strong) > 10000
    search_beam_position(header, strong.select(np.arange(500)))  # compile the kernel
    t0, c0 = time.perf_counter(), time.process_time()
    out, res = search_beam_position(header, strong)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the goal is 2 s of one core (DIALS: 4.5 s); measured 2.4-3.1 s CPU on a loaded machine
    assert cpu < 4.0
    assert res.timings["search"] <= elapsed


def test_experiment_list_of_one_is_accepted():
    header, strong, _ = sweep((5, 5), seed=14, **LYSO)
    out, _ = search_beam_position(ExperimentList([header[0]]), strong)
    assert len(out) == 1


@pytest.mark.slow
def test_issue_case_from_images_through_the_shell(session, tmp_path):
    """The issue's case end to end: images simulated with the header beam centre off by
    (+12, -9) px, spots found on them, the search, then index."""
    from gonio.core.io.dials_expt import read_expt

    out = tmp_path / "img"
    for line in (f"simulate output={out} n_images=20 osc=0.5 unit_cell=79,79,38,90,90,90 "
                 "distance=135 header.beam_centre_offset=12,-9",
                 f"import {out}/image_#####.cbf", "findspots"):
        r = session.run_line(line)
        assert r.ok, r.text
    assert len(session.state.reflections["strong"]) > 5000
    r = session.run_line("search_beam_position")
    assert r.ok and "runner-up" in r.text, r.text
    true_centre = _centre_px(read_expt(out / "truth.expt")[0])
    assert np.hypot(*(_centre_px(session.state.experiments[0]) - true_centre)) < 1.0
    r = session.run_line("index")
    assert r.ok, r.text
    m = session.history.step(session.head).metrics
    assert m["percent_indexed"] > 95
    assert np.allclose(sorted(m["cell_1"][:3]), [38.0, 79.0, 79.0], rtol=0.005)
