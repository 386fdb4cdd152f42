"""generate_mask (dials.generate_mask) and mask import: the mask is part of the state, findspots
and integrate use it, view shows it, undo removes it; bad input leaves the session as it was."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.models.beam import Beam
from gonio.core.reflection_table import Flags
from gonio.core.spotfinding.generate_mask import (
    GenerateMaskParams,
    decode_masks,
    encode_masks,
    generate_mask,
)
from gonio.core.spotfinding.masks import polygon_mask, resolution_map

N = 512  # px: the simulated panel is N x N


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A simulated 6-image sweep (cubic 60 A cell, 512 x 512 Pilatus-like panel)."""
    from gonio.shell.session import Session

    folder = tmp_path_factory.mktemp("mask_sim")
    s = Session(folder)
    r = s.run_line(f"simulate output={folder / 'img'} n_images=6 osc=1 image_size={N},{N} "
                   "distance=150 unit_cell=60,60,60,90,90,90 space_group=P213 seed=3")
    assert r.ok, r.text
    s.close()
    return folder / "img"


@pytest.fixture
def imported(session, sweep):
    r = session.run_line(f"import {sweep / 'truth.expt'}")
    assert r.ok, r.text
    return session


def _mask(session) -> np.ndarray:
    return decode_masks(session.state.data["mask"])[0]


def test_polygon_mask_is_the_pixels_inside():
    # a right triangle of legs 100 px: half of the 100 x 100 square's pixel centres
    tri = polygon_mask(np.array([[0, 0], [100, 0], [0, 100]]), (200, 200))
    assert abs(tri.sum() - 100 * 100 / 2) <= 100  # one diagonal row either way
    assert tri[10, 10] and not tri[90, 90] and not tri[150, 10]
    # a concave L (even-odd rule): the notch stays unmasked
    ell = polygon_mask(np.array([[0, 0], [60, 0], [60, 20], [20, 20], [20, 60], [0, 60]]),
                       (100, 100))
    assert ell.sum() == 60 * 20 + 20 * 40
    assert not ell[40, 40] and ell[10, 50] and ell[50, 10]


def test_shapes_border_and_resolution_on_the_simulated_detector(imported):
    e = imported.state.experiments[0]
    r = imported.run_line("generate_mask border=3 untrusted.rectangle=10,30,40,50,100,110,0,5 "
                          "untrusted.circle=300,300,10 "
                          "untrusted.polygon=400,400,450,400,450,450,400,400,"
                          "200,20,220,20,210,40 untrusted.pixel=7,250 d_max=30")
    assert r.ok, r.text
    m = _mask(imported)
    assert m.shape == (N, N)
    assert not m[:3].any() and not m[:, -3:].any() and m[3:-3, 3:-3].any()
    assert not m[40:50, 10:30].any() and m[50, 20] and m[39, 20]
    assert not m[0:5, 100:110].any()
    assert not m[300, 300] and not m[309, 300] and m[311, 300]
    assert not m[420, 440] and m[440, 420]  # the lower-right half of the first polygon only
    assert not m[30, 210] and m[30, 230]
    assert not m[7, 250] and m[7, 251]
    d = resolution_map(e.detector[0], e.beam)
    inner = d >= 30
    assert inner.any() and not m[inner].any()
    assert m[(d < 29) & (d > 2)].mean() > 0.95
    assert imported.history.step(imported.head).metrics["masked pixels"] == int((~m).sum())


def test_resolution_ranges_and_ice_rings():
    from gonio.core.models.detector import Detector, Panel

    panel = Panel(origin=np.array([-88.0, 88.0, -120.0]), fast_axis=np.array([1.0, 0, 0]),
                  slow_axis=np.array([0, -1.0, 0]), pixel_size=(0.172, 0.172),
                  image_size=(1024, 1024), trusted_range=(-1, 1e6))
    det, beam = Detector(panels=[panel]), Beam(direction=np.array([0, 0, 1.0]), wavelength=1.0)
    d = resolution_map(panel, beam)
    masks, res = generate_mask(det, beam, GenerateMaskParams(resolution_range=(3.6, 3.8,
                                                                               2.5, 2.4)))
    m = masks[0]
    assert not m[(d >= 3.6) & (d <= 3.8)].any() and not m[(d >= 2.4) & (d <= 2.5)].any()
    assert m[(d > 3.9) | ((d < 3.5) & (d > 2.6))].all()
    masks, _ = generate_mask(det, beam, GenerateMaskParams(ice_rings_filter=True))
    # hexagonal ice's strongest ring, (100) d = 3.895 A, is masked; 3.0 A is not
    assert not masks[0][np.abs(d - 3.895) < 0.005].any()
    assert masks[0][np.abs(d - 3.0) < 0.005].all()


def test_masked_pixels_give_no_spots_and_undo_restores(imported, sweep):
    r = imported.run_line("findspots")
    assert r.ok, r.text
    xy = imported.state.reflections["strong"]["xyzobs.px.value"][:, :2]
    left = xy[:, 0] < N / 2
    assert left.sum() > 100 and (~left).sum() > 100
    before = imported.head
    r = imported.run_line(f"generate_mask untrusted.rectangle=0,{N // 2},0,{N}")
    assert r.ok, r.text
    r = imported.run_line("findspots")
    assert r.ok and f"mask from generate_mask ({N * N // 2} pixels masked)" in r.text, r.text
    xy = imported.state.reflections["strong"]["xyzobs.px.value"][:, :2]
    assert len(xy) > 100 and xy[:, 0].min() > N / 2  # none on the masked half
    imported.run_line("undo")
    imported.run_line("undo")
    assert imported.head == before and "mask" not in imported.state.data


def test_masked_pixels_are_not_integrated(imported):
    """The truth models integrated with the left half masked: no reflection there is
    integrated, while the other half integrates as without the mask."""
    r = imported.run_line("integrate sigma_b=0.03 sigma_m=0.1")
    assert r.ok, r.text
    free = imported.state.reflections["integrated"]
    r = imported.run_line(f"generate_mask untrusted.rectangle=0,{N // 2},0,{N}")
    assert r.ok, r.text
    r = imported.run_line("integrate sigma_b=0.03 sigma_m=0.1")
    assert r.ok, r.text
    masked = imported.state.reflections["integrated"]
    for t in (free, masked):
        t.x = t["xyzcal.px"][:, 0]
        t.ok = t.get_flags(Flags.integrated_sum)
    left = free.x < N / 2 - 8  # shoeboxes wholly on the masked half
    assert free.ok[left].sum() > 50
    assert masked.ok[masked.x < N / 2 - 8].sum() == 0
    right = masked.x > N / 2 + 8
    assert masked.ok[right].sum() == free.ok[free.x > N / 2 + 8].sum()


def test_mask_file_import_npy_png_and_combination(imported, tmp_path):
    from PIL import Image

    good = np.ones((N, N), bool)
    good[100:200, 50:60] = False
    np.save(tmp_path / "m.npy", good)
    r = imported.run_line(f"generate_mask mask={tmp_path / 'm.npy'}")
    assert r.ok, r.text
    assert np.array_equal(_mask(imported), good)
    Image.fromarray(good.astype(np.uint8) * 255).save(tmp_path / "m.png")
    np.save(tmp_path / "stack.npy", good[None].astype(np.int32))  # (panels, slow, fast)
    for name in ("m.png", "stack.npy"):
        r = imported.run_line(f"generate_mask mask={tmp_path / name} border=2")
        assert r.ok, r.text
        m = _mask(imported)
        assert not m[100:200, 50:60].any() and not m[:2].any() and m[50, 50]
        assert (~m).sum() == (~good).sum() + N * N - (N - 4) ** 2


def test_stored_mask_is_compact():
    m = np.ones((2527, 2463), bool)  # a Pilatus 6M
    m[:5], m[-5:], m[:, :5], m[:, -5:] = False, False, False, False
    m[1200:1300, 1200:1250] = False
    enc = encode_masks([m])
    import json

    assert len(json.dumps(enc)) < 0.01 * m.size / 8  # < 1% of the packed bits (760 kB)
    assert np.array_equal(decode_masks(enc)[0], m)


def test_view_draws_the_mask(imported, tmp_path):
    from PIL import Image

    from gonio.core.report.image import COLOURS

    r = imported.run_line("generate_mask untrusted.rectangle=100,200,100,200")
    assert r.ok, r.text
    out = tmp_path / "v.png"
    r = imported.run_line(f"view image=1 region=90,210,90,210 overlays=mask output={out}")
    assert r.ok, r.text
    rgb = np.asarray(Image.open(out).convert("RGB"))
    is_mask = (rgb == COLOURS["mask"]).all(axis=2)
    h, w = is_mask.shape
    inner = is_mask[int(h * 0.15):int(h * 0.85), int(w * 0.15):int(w * 0.85)]
    assert inner.mean() > 0.99
    assert is_mask[:int(h * 0.05)].mean() < 0.01  # the 10 px frame outside is not masked


@pytest.mark.parametrize("line,match", [
    ("generate_mask untrusted.polygon=10,10,600,10,300,300", "corners outside panel 0"),
    ("generate_mask untrusted.rectangle=10,20,30", "4 numbers per region"),
    ("generate_mask untrusted.rectangle=10,600,0,10", "not inside panel 0"),
    ("generate_mask untrusted.panel=1 untrusted.circle=10,10,5", "detector has 1 panel"),
    ("generate_mask untrusted.polygon=10,10,20,20", "at least 3 corners"),
    ("generate_mask d_min=5 d_max=3", "is not below d_max"),
    ("generate_mask mask=/no/such/mask.npy", "does not exist"),
    ("generate_mask mask=mask.pickle", "cannot be read without cctbx"),
    ("generate_mask border=-1", "border"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(imported, line, match):
    head, data = imported.head, dict(imported.state.data)
    r = imported.run_line(line)
    assert not r.ok and match in r.text, r.text
    assert imported.head == head and imported.state.data == data


def test_wrong_mask_shape_and_type_are_clear_errors(imported, tmp_path):
    np.save(tmp_path / "small.npy", np.ones((N, N - 1), bool))
    np.save(tmp_path / "float.npy", np.full((N, N), 0.5))
    head = imported.head
    for name, match in (("small.npy", "shape(s)"), ("float.npy", "float64 values")):
        r = imported.run_line(f"generate_mask mask={tmp_path / name}")
        assert not r.ok and match in r.text, r.text
        assert imported.head == head


def test_core_errors_are_gonio_errors():
    from gonio.core.models.detector import Detector, Panel

    det = Detector(panels=[Panel(image_size=(100, 100), pixel_size=(0.1, 0.1))])
    with pytest.raises(GonioError, match="x,y pairs"):
        generate_mask(det, None, GenerateMaskParams(untrusted_polygon=(1, 1, 50, 1, 50)))
    with pytest.raises(GonioError, match="one per region"):
        generate_mask(det, None, GenerateMaskParams(untrusted_panel=(0, 0),
                                                    untrusted_circle=(5, 5, 2)))
