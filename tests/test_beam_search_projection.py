"""search_beam_position method=midpoint|maximum|inversion (the projection methods of
dials.search_beam_position) against the simulator's true beam centre: X-ray sweeps on a 1024 px
Pilatus-like panel and electron diffraction sweeps on a 516 px Timepix-like panel (flat Ewald
sphere), beams off the image centre, header errors in several directions; with and without a
visible direct beam (the simulator draws none: the tests add one, a Gaussian spot and a diffuse
halo, as an unobstructed electron beam gives)."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.indexing.beam_search import BeamSearchParams, search_beam_position
from gonio.core.indexing.beam_search_projection import ProjectionParams, beam_position
from gonio.core.simulate.params import SimulationParams
from gonio.core.simulate.simulate import simulate

LYSO = dict(unit_cell=(79.1, 79.1, 37.9, 90, 90, 90), space_group="P 43 21 2", distance=135.0,
            n_images=20, osc=0.5)
# header error px, seed, true beam centre px (None: the image centre; the case)
XRAY = [((12, -9), 1, (450, 560)), ((-20, 20), 2, (590, 470)), ((12, -9), 1, None)]
ED = [((12, -9), 1, (230, 290)), ((-20, 15), 2, (290, 240))]


def _centre_px(experiment) -> np.ndarray:
    panel = experiment.detector[0]
    return panel.millimeter_to_pixel(panel.beam_centre_mm(experiment.beam.s0)[None])[0]


def direct_beam(shape, centre, peak=3000.0, sigma=2.0, diffuse=30.0, r0=25.0) -> np.ndarray:
    """Counts of a direct beam (Gaussian, sigma px) and its diffuse halo (Lorentzian, r0 px)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    r2 = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2
    return peak * np.exp(-0.5 * r2 / sigma**2) + diffuse / (1.0 + r2 / r0**2)


_CASES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _drop_cases():
    yield
    _CASES.clear()  # the simulated images are not kept for the rest of the test run


def case(kind: str, index: int):
    """(average image, valid pixels, true centre px, header centre px) of a simulated sweep,
    simulated once per module."""
    if (kind, index) not in _CASES:
        _CASES[kind, index] = _simulate(kind, index)
    return _CASES[kind, index]


def _simulate(kind: str, index: int):
    offset, seed, centre = (XRAY if kind == "xray" else ED)[index]
    if kind == "xray":
        p = SimulationParams(header_beam_centre_offset=offset, seed=seed, beam_centre=centre,
                             **LYSO)
    else:
        p = SimulationParams.from_preset("ed_c2", header_beam_centre_offset=offset, seed=seed,
                                         beam_centre=centre, n_images=20)
    r = simulate(p)
    frames = np.asarray(r.images)[:, 0].astype(float)
    valid = (frames > -1).all(axis=0)
    truth, header = _centre_px(r.experiments[0]), _centre_px(r.header_experiments[0])
    assert np.allclose(header - truth, offset)
    return frames.mean(axis=0), valid, truth, header


def _error(image, valid, header, methods, **kw) -> np.ndarray:
    ax, ay = beam_position(image, valid, methods, ProjectionParams(**kw), header)
    return np.array([ax.position, ay.position])


@pytest.mark.parametrize("kind,index", [("xray", 0), ("xray", 1), ("xray", 2), ("ed", 0),
                                        ("ed", 1)])
def test_midpoint_from_the_scattering_around_the_beam(kind, index):
    """On the issue's X-ray case (1M Pilatus, 135 mm, header off by (+12, -9) px) DIALS's
    midpoint ends 3.8 px off, gonio's 1.95 px; over seven X-ray cases gonio's ends 0.6 to
    3.9 px off, over five ED cases 1.4 to 3.1 px (docs/troubleshooting.md)."""
    image, valid, truth, header = case(kind, index)
    found = _error(image, valid, header, ("midpoint", "midpoint"))
    assert np.hypot(*(found - truth)) < (2.5 if index == 2 else 3.5 if kind == "ed" else 4.0)
    assert np.hypot(*(found - truth)) < 0.5 * np.hypot(*(header - truth))


@pytest.mark.parametrize("index", [0, 1])
def test_inversion_on_flat_ewald_sphere_data(index):
    """Electron diffraction: Friedel mates lie opposite through the beam, so the pattern
    overlays its inversion there (measured 0.01-0.05 px)."""
    image, valid, truth, header = case("ed", index)
    found = _error(image, valid, header, ("inversion", "inversion"))
    assert np.hypot(*(found - truth)) < 0.3, (found, truth)


@pytest.mark.parametrize("kind,index", [("xray", 0), ("xray", 1), ("ed", 0), ("ed", 1)])
def test_visible_direct_beam_maximum_inversion_midpoint(kind, index):
    image, valid, truth, header = case(kind, index)
    image = image + direct_beam(image.shape, truth)
    for methods, tol in ((("maximum", "maximum"), 0.3), (("inversion", "inversion"), 0.5),
                         (("maximum", "inversion"), 0.5),
                         (("midpoint", "midpoint"), 3.0 if kind == "xray" else 0.3)):
        found = _error(image, valid, header, methods)
        assert np.hypot(*(found - truth)) < tol, (methods, found, truth)


def test_maximum_without_a_direct_beam_is_not_the_beam():
    """The maximum method needs the beam on the image: on X-ray data (beam stop) the
    brightest region is a strong low-angle spot far from the beam."""
    image, valid, truth, header = case("xray", 0)
    found = _error(image, valid, header, ("maximum", "maximum"))
    assert np.hypot(*(found - truth)) > 10


def test_excluded_rows_and_invalid_pixels_are_left_out():
    """A beam-stop arm (a dark bar from the beam to the edge) pulls the midpoint of the x
    profile when counted, not when its rows are excluded; pixels at the trusted minimum
    (gaps) never count."""
    image, valid, truth, header = case("ed", 0)
    image = image + direct_beam(image.shape, truth)
    x0, y0 = int(truth[0]), int(truth[1])
    arm = image.copy()
    arm[y0 - 6:y0 + 6, x0:] = 0.0  # a horizontal arm to the right edge
    with_arm = _error(arm, valid, header, ("midpoint", "midpoint"), midpoint_convolution_width=20)
    excluded = _error(arm, valid, header, ("midpoint", "midpoint"), midpoint_convolution_width=20,
                      exclude_pixel_range_y=(y0 - 8, y0 + 8))
    assert abs(excluded[0] - truth[0]) < 0.3
    assert abs(with_arm[0] - truth[0]) > abs(excluded[0] - truth[0])
    gaps = valid.copy()
    gaps[:, x0 + 40:x0 + 60] = False
    found = _error(np.where(gaps, image, -1.0), gaps, header, ("midpoint", "inversion"))
    assert np.hypot(*(found - truth)) < 0.5


def test_through_the_shell_on_image_files(session, tmp_path):
    """ED images written to disk (SMV), imported, the search (inversion for x, midpoint for y)
    as a step: the centre moves to the truth; undo puts the header's back."""
    from gonio.core.io.dials_expt import read_expt

    out = tmp_path / "ed"
    for line in (f"simulate preset=ed_c2 output={out} n_images=10 header.beam_centre_offset=-15,11 "
                 "beam_centre=240,270", f"import {out}/image_#####.img"):
        r = session.run_line(line)
        assert r.ok, r.text
    header = _centre_px(session.state.experiments[0])
    truth = _centre_px(read_expt(out / "truth.expt")[0])
    r = session.run_line("search_beam_position method=inversion method_y=midpoint")
    assert r.ok, r.text
    assert "inversion" in r.text and "midpoint" in r.text and "New beam centre" in r.text
    found = _centre_px(session.state.experiments[0])
    assert np.hypot(*(found - truth)) < 3.0
    assert abs(found[0] - truth[0]) < 0.3
    m = session.history.step(session.head).metrics
    assert np.allclose([m["beam_x_px"], m["beam_y_px"]], found, atol=0.01)
    session.run_line("undo")
    assert np.allclose(_centre_px(session.state.experiments[0]), header)


def test_errors_are_clear_and_change_nothing(session, tmp_path):
    out = tmp_path / "ed"
    for line in (f"simulate preset=ed_c2 output={out} n_images=3",
                 f"import {out}/image_#####.img"):
        assert session.run_line(line).ok
    head = session.head
    for line, match in (
            ("search_beam_position", "needs strong spots"),
            ("search_beam_position method=midpoint intersection_range=0.9,0.3,0.01",
             "0 <= start < stop <= 1"),
            ("search_beam_position method=midpoint exclude_pixel_range_x=10,20,30",
             "start,end pairs"),
            ("search_beam_position method=midpoint exclude_pixel_range_y=10,900",
             "not inside the image"),
            ("search_beam_position method=maximum bin_width=600", "wider than the image"),
            ("search_beam_position method=midpoint exclude_intensity_percent=100",
             "below 100"),
            ("search_beam_position method=inversion inversion_window_width=0",
             "must be positive"),
            ("search_beam_position method=midpoint intersection_range=0.99,1.0,0.001",
             "found no stretch")):
        r = session.run_line(line)
        assert not r.ok and match in r.text, (line, r.text)
        assert session.head == head
    for f in out.glob("image_*.img"):
        f.unlink()
    r = session.run_line("search_beam_position method=inversion")
    assert not r.ok and "cannot be read" in r.text, r.text
    assert session.head == head


def test_core_default_method_is_unchanged():
    """method=default still needs spots (and says so); BeamSearchParams() is the default."""
    assert BeamSearchParams().method == "default"
    with pytest.raises(GonioError, match="run findspots first"):
        search_beam_position(_experiments(), None)


def _experiments():
    from gonio.core.simulate.models import header_models, true_models

    p = SimulationParams.from_preset("ed_c2", n_images=2)
    truth, _, axis = true_models(p, np.random.default_rng([0, 0]))
    return header_models(truth, p, axis)


def test_each_imageset_gets_its_own_centre():
    """Two ED sweeps with header errors in opposite directions, searched together: each
    imageset's detector moves by its own shift (DIALS: one result per imageset)."""
    from gonio.core.models.experiment import ExperimentList
    from gonio.core.models.imageset import ImageSetRef

    class Frames:
        def __init__(self, frames):
            self.frames = frames

        def __len__(self):
            return len(self.frames)

        def read(self, i):
            return (self.frames[i],)

    experiments, readers, truths = [], [], []
    for k, offset in enumerate([(12, -9), (-15, 10)]):
        r = simulate(SimulationParams.from_preset("ed_c2", header_beam_centre_offset=offset,
                                                  seed=k, n_images=8))
        experiments.append(r.header_experiments[0].replace(
            imageset=ImageSetRef(template=f"/sweep{k}_#####.img")))
        readers.append(Frames(np.asarray(r.images)[:, 0]))
        truths.append(_centre_px(r.experiments[0]))
    out, res = search_beam_position(ExperimentList(experiments), None,
                                    BeamSearchParams(method="inversion"), readers=readers)
    assert len(res.axes) == 2 and res.n_images == [8, 8]
    for e, truth in zip(out, truths):
        assert np.hypot(*(_centre_px(e) - truth)) < 0.3
    assert np.allclose(res.shift_px, [-12, 9], atol=0.3)
