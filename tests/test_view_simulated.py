"""`view image`, `view threshold`, `view lattice` and `report compare` on a simulated, indexed
sweep: overlays where the predictions are, threshold stages equal to the spot finder's own
mask, rlps equal to indexing's, and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_ok as ok
from PIL import Image

from gonio.core.report.image import COLOURS, image_marks
from gonio.shell.session import Session
from tests.report_browser import non_blank, render


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("view")
    s = Session(folder)
    ok(s, "simulate preset=lysozyme n_images=8 image_size=512,512 d_min=2.5 output=sim seed=3")
    ok(s, "import sim/image_#####.cbf")
    ok(s, "findspots")
    ok(s, "index")
    yield s
    s.close()


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _near(pixels, xy, colour, radius: int) -> bool:
    x, y = (int(round(v)) for v in xy)
    patch = pixels[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]
    return bool((patch == colour).all(axis=2).any())


def test_view_image_draws_each_prediction_and_strong_spot_where_it_is(indexed):
    s = indexed
    head = s.head
    r = ok(s, "view image=4")
    path = s.folder / "view_image_0004.png"
    assert str(path) in r.text and s.head == head
    pixels = _png(path)
    assert pixels.shape == (512, 512, 3)  # 1 display px per detector px
    st = s.state
    marks = image_marks(st.experiments, 0, 3, strong=st.reflections["strong"],
                        predicted=st.reflections["indexed"])
    assert len(marks.predictions) > 20 and len(marks.strong) > 20
    # a red cross centred on every prediction, a green circle (radius 4 px) around every spot
    assert all(_near(pixels, xy, COLOURS["predictions"], 1) for xy in marks.predictions)
    assert all(_near(pixels, xy, COLOURS["strong"], 5) for xy in marks.strong)
    # away from every mark there is no overlay colour: a pixel count bounds it
    red = (pixels == COLOURS["predictions"]).all(axis=2).sum()
    assert red <= 26 * len(marks.predictions)  # a 7 px cross, 2 px wide: 24 px each
    # switched off, the overlay is gone
    ok(s, "view image=4 overlays=strong output=strong_only.png")
    only = _png(s.folder / "strong_only.png")
    assert not (only == COLOURS["predictions"]).all(axis=2).any()
    assert (only == COLOURS["strong"]).all(axis=2).any()


def test_zoomed_region_scales_up_and_labels_hkl(indexed):
    s = indexed
    st = s.state
    marks = image_marks(st.experiments, 0, 3, predicted=st.reflections["indexed"])
    x, y = marks.predictions[0]
    x0, y0 = max(int(x) - 40, 0), max(int(y) - 40, 0)
    r = ok(s, f"view image=4 region={x0},{x0 + 80},{y0},{y0 + 80} output=zoom.png")
    assert "10 display px per detector px" in r.text
    pixels = _png(s.folder / "zoom.png")
    assert pixels.shape == (800, 800, 3)
    centre = ((x - x0) * 10, (y - y0) * 10)
    assert _near(pixels, centre, COLOURS["predictions"], 2)
    # the hkl label is written in the prediction colour to the right of the spot
    label = pixels[int(centre[1]) - 6:int(centre[1]) + 8, int(centre[0]) + 32:int(centre[0]) + 80]
    assert (label == COLOURS["predictions"]).all(axis=2).sum() > 10


def test_threshold_stages_are_the_spot_finders_own(indexed):
    from gonio.core.formats.reader import ImageSequenceReader
    from gonio.core.report.threshold_stages import stages
    from gonio.core.spotfinding.masks import static_mask
    from gonio.core.spotfinding.params import SpotFinderParams

    s = indexed
    e = s.state.experiments[0]
    image = ImageSequenceReader(e).read(3)[0]
    panel = e.detector[0]
    p = SpotFinderParams(threshold_algorithm="dispersion")
    st = stages(image, static_mask(panel, e.beam, p), panel.trusted_range, p)
    # for the plain dispersion threshold the final mask is exactly "both tests pass": the
    # numpy window sums here agree with the numba kernels pixel for pixel
    assert st.final.sum() > 100
    np.testing.assert_array_equal(st.final, st.dispersion_mask & st.strong_mask)
    r = ok(s, "view threshold image=4 sigma_strong=4")
    assert "view_threshold_0004.png" in r.text
    with Image.open(s.folder / "view_threshold_0004.png") as im:
        assert im.size == (1200, 760)


def test_lattice_points_are_indexings_and_the_page_renders(indexed, tmp_path):
    from gonio.core.report.lattice import reciprocal_lattice_points

    s = indexed
    st = s.state
    table = st.reflections["indexed"]
    rlp = reciprocal_lattice_points(st.experiments, table)
    np.testing.assert_allclose(rlp, table["rlp"], atol=1e-9)
    # indexed points sit on the lattice: fractional hkl within a few hundredths of integers
    sel = table["miller_index"].any(axis=1)
    h = rlp[sel] @ np.linalg.inv(st.experiments[0].crystal.A).T
    assert np.median(np.abs(h - np.round(h))) < 0.05
    r = ok(s, "view lattice")
    page = s.folder / "view_lattice.html"
    assert str(page) in r.text
    shown = render(page, tmp_path, size=(1000, 900))
    assert shown.console_errors == []
    assert shown.figures_drawn == 1 and shown.drawn_ms is not None
    assert shown.screenshot.shape == (900, 1000, 3) and non_blank(shown.screenshot) > 0.02


def test_compare_draws_two_steps_on_the_same_axes(indexed):
    s = indexed
    r = ok(s, "report compare=3,4 output=compare.html")
    assert "Spot finding" in r.text and "Indexing" not in r.text  # step 3 has no indexed table
    text = (s.folder / "compare.html").read_text()
    assert '"name":"step 3"' in text and '"name":"step 4"' in text
    assert "step 3 against step 4" in text


def test_bad_input_changes_nothing(indexed, tmp_path):
    s = indexed
    head, n = s.head, len(s.history.steps())
    for line, words in [("view image=99", "outside the scan"), ("view image=0", "images 1 to 8"),
                        ("view threshold", "needs an image number"),
                        ("view image=1 region=0,600,0,10", "not inside"),
                        ("view sideways", "view takes one of"),
                        ("view image=1 panel=3", "panel=3 does not exist"),
                        ("report compare=3,42", "42")]:
        r = s.run_line(line)
        assert not r.ok and words in r.text, (line, r.text)
        assert r.text.startswith("Error: ") and "\n" not in r.text
    assert s.head == head and len(s.history.steps()) == n
    assert not (s.folder / "view_image_0099.png").exists()
    # view lattice before findspots
    fresh = Session(tmp_path)
    ok(fresh, f"import {s.folder / 'sim' / 'image_#####.cbf'}")
    r = fresh.run_line("view lattice")
    assert not r.ok and "run findspots first" in r.text and fresh.head == 1
    fresh.close()
