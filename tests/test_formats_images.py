"""Every real image in ../shared/data/images: format by content, geometry, pixels."""

from __future__ import annotations

import bz2
import gzip

import fabio
import numpy as np
import pytest
from conftest import data_path

from gonio.core.errors import GonioError
from gonio.core.formats import (
    SMV,
    FullCBF,
    MiniCBF,
    NXmx,
    UnknownImageFormatError,
    identify,
    read_models,
    read_pixels,
)
from gonio.core.formats.attenuation import silicon_mu_per_mm


def image(name):
    return str(data_path("images", name))


def beam_centre_px(beam, detector, panel=0):
    p = detector[panel]
    return p.beam_centre_mm(beam.s0) / np.asarray(p.pixel_size)


# name, format, distance mm, wavelength A, beam centre (fast, slow) px, image size, oscillation
CASES = [
    (
        "thau_3_2_0001.cbf.bz2",
        MiniCBF,
        351.0,
        0.96859,
        (1261.61, 1306.96),
        (2463, 2527),
        (89.9997, 0.0),
    ),
    (
        "thau_3_2_0002.cbf.bz2",
        MiniCBF,
        351.0,
        0.96859,
        (1261.61, 1306.96),
        (2463, 2527),
        (89.9997, 0.0),
    ),
    (
        "DLS_I03_smargon_0001.cbf.gz",
        FullCBF,
        291.47,
        0.97625,
        (1229.30, 1200.48),
        (2463, 2527),
        (45.0, 0.1),
    ),
    (
        "dlsnxs2cbf_therm_0001.cbf.gz",
        MiniCBF,
        213.96,
        0.98027,
        (2216.06, 2300.41),
        (4148, 4362),
        (174.0, 0.25),
    ),
    (
        "TIMEPIX_SU_516-stdgoni_0001.img",
        SMV,
        531.85,
        0.0251,
        (246.14, 240.35),
        (516, 516),
        (-65.40, 0.23),
    ),
    # JHSim: BEAM_CENTER_X/Y = 28.16 mm in the ADXV convention -> (28.16 + 0.055) mm, as dxtbx
    (
        "simtbx_FormatSMVJHSim_001.img",
        SMV,
        1590.0,
        0.02508,
        (513.0, 513.0),
        (1024, 1024),
        (0.0, 0.0),
    ),
]


@pytest.mark.parametrize("name,fmt,distance,wavelength,centre,size,osc", CASES)
def test_header_geometry(name, fmt, distance, wavelength, centre, size, osc):
    path = image(name)
    assert identify(path) is fmt
    beam, detector, goniometer, scan = read_models(path)
    p = detector[0]
    assert p.distance == pytest.approx(distance, abs=1e-9)
    assert beam.wavelength == pytest.approx(wavelength)
    assert np.allclose(beam.direction, [0, 0, 1])
    # the imgCIF axis offsets are written to 0.01 mm, the miniCBF Beam_xy to 0.01 px
    tol = 0.02 if fmt is FullCBF else 1e-6
    assert beam_centre_px(beam, detector) == pytest.approx(centre, abs=tol)
    assert p.image_size == size
    assert scan.oscillation == pytest.approx(osc)
    assert np.allclose(p.fast_axis, [1, 0, 0]) and np.allclose(p.slow_axis, [0, -1, 0])
    assert goniometer is not None


@pytest.mark.parametrize("name", [c[0] for c in CASES] + ["DLS_I23_P12M_thau_00001.cbf.gz"])
def test_pixels_shape_and_values(name):
    path = image(name)
    _, detector, _, _ = read_models(path)
    panels = read_pixels(path)
    assert len(panels) == len(detector)
    for data, p in zip(panels, detector):
        nx, ny = p.image_size
        assert data.shape == (ny, nx) and data.dtype == np.int32
    assert max(d.max() for d in panels) > 100  # real diffraction: pixels well above background
    if path.endswith((".cbf.gz", ".cbf.bz2")):
        whole = fabio.open(path).data
        for data, p in zip(panels, detector):
            (f0, s0), (nx, ny) = p.raw_image_offset, p.image_size
            assert np.array_equal(data, whole[s0 : s0 + ny, f0 : f0 + nx])


def test_pilatus_gaps_are_negative_and_masked():
    path = image("thau_3_2_0001.cbf.bz2")
    _, detector, _, _ = read_models(path)
    p = detector[0]
    (data,) = read_pixels(path)
    assert len(p.mask) == 15  # 4 vertical + 11 horizontal module gaps of a Pilatus 6M
    assert p.mask[0] == (487, 0, 494, 2527) and p.mask[4] == (0, 195, 2463, 212)
    for f0, s0, f1, s1 in p.mask:
        assert (data[s0:s1, f0:f1] < 0).all()
    assert p.trusted_range == (-1.0, 115897.0)
    assert p.thickness == pytest.approx(0.45) and p.material == "Si"
    assert p.px_mm_strategy == "ParallaxCorrectedPxMmStrategy"
    assert p.mu == pytest.approx(silicon_mu_per_mm(0.96859))


def test_silicon_mu_equals_dials():
    # DIALS wrote mu = 3.9603818101507735 /mm at 0.9795 A (x4_xds/imported_experiments.json)
    assert silicon_mu_per_mm(0.9795) == pytest.approx(3.9603818101507735, rel=1e-12)
    assert silicon_mu_per_mm(20.0) == 0.0  # 0.62 keV: below the table, no correction


def test_eiger2_cbf_gap_mask():
    _, detector, _, _ = read_models(image("dlsnxs2cbf_therm_0001.cbf.gz"))
    mask = detector[0].mask
    assert len(mask) == 3 + 7  # Eiger2 16M: 4 x 8 modules of 1028 x 512, gaps 12 x 38
    assert mask[0] == (1028, 0, 1040, 4362) and mask[3] == (0, 512, 4148, 550)


def test_full_cbf_multi_axis_goniometer():
    beam, detector, g, scan = read_models(image("DLS_I03_smargon_0001.cbf.gz"))
    # the same axes, angles and names dxtbx gives for this file
    assert g.names == ["GON_PHI", "GON_CHI", "GON_OMEGA"]
    assert np.allclose(np.ravel(g.axes), [1, 0, 0, 0, 0, -1, 1, 0, 0])
    assert g.angles == pytest.approx([45.0, 45.0, 45.0])
    assert g.scan_axis == 2
    assert np.allclose(g.rotation_axis, [1, 0, 0])
    # F = R(chi) R(phi): a vector along x is turned by phi (no change) then by chi about -z
    assert np.allclose(g.fixed_rotation @ [1, 0, 0], [np.cos(np.pi / 4), -np.sin(np.pi / 4), 0])
    assert np.allclose(detector[0].origin, [-211.44, 206.48, -291.47])
    assert detector[0].trusted_range == (-1.0, 91795.0)
    assert detector[0].thickness == pytest.approx(1.0)


def test_dls_i23_pilatus_12m():
    beam, detector, g, scan = read_models(image("DLS_I23_P12M_thau_00001.cbf.gz"))
    assert len(detector) == 24 and detector[0].image_size == (2463, 195)
    assert [p.raw_image_offset[1] for p in detector[:3]] == [0, 212, 424]
    # the beam meets row 12 at Beam_xy x = 1080 px, 250 mm (cylinder radius) + 10 mm (header)
    panel, xy = detector.ray_intersection(beam.s0[None, :])
    assert panel[0] == 12 and xy[0, 0] / 0.172 == pytest.approx(1080.0)
    hit = detector[12].lab_coord(xy)[0]
    assert np.linalg.norm(hit) == pytest.approx(260.13, abs=0.01)
    assert all(239 < p.distance < 261 for p in detector)  # 250 mm, rows moved 10 mm along z
    assert (
        detector[0].mu == pytest.approx(silicon_mu_per_mm(2.7552)) and detector[0].thickness == 0.32
    )
    assert g.names == ["PHI", "KAPPA", "OMEGA"] and g.scan_axis == 2
    assert np.allclose(g.axes[1], [np.cos(np.deg2rad(50)), -np.sin(np.deg2rad(50)), 0])
    assert g.angles == pytest.approx([0.0, 0.0, -210.0])
    assert scan.oscillation == pytest.approx((-210.0, 0.05))


def test_timepix_and_jhsim_specifics():
    beam, detector, g, scan = read_models(image("TIMEPIX_SU_516-stdgoni_0001.img"))
    assert np.allclose(g.rotation_axis, np.array([0.7826, -0.6226, 0]) / np.hypot(0.7826, 0.6226))
    assert beam.polarization_fraction == 0.5
    assert detector[0].trusted_range == (-1.0, 65535.0)
    assert detector[0].material == "Si" and detector[0].mu == 0.0
    assert scan.exposure_time[0] == pytest.approx(0.096288)
    beam, detector, g, scan = read_models(image("simtbx_FormatSMVJHSim_001.img"))
    # ADC_OFFSET=0: a pixel with no photon reads 0 and is valid (dxtbx: (1, 65535))
    assert detector[0].trusted_range == (-1.0, 65535.0)
    assert np.allclose(detector[0].origin, [-28.215, 28.215, -1590.0])


def test_eiger_master_without_data_file_names_it():
    path = image("dectris_eiger_master.h5")
    assert identify(path) is NXmx
    with pytest.raises(GonioError, match="dectris_eiger_data_000001.h5"):
        read_models(path)
    with pytest.raises(GonioError, match="dectris_eiger_data_000001.h5"):
        read_pixels(path)


@pytest.fixture(scope="module")
def plain_cbf(tmp_path_factory):
    raw = gzip.open(image("DLS_I03_smargon_0001.cbf.gz")).read()
    folder = tmp_path_factory.mktemp("cbf")
    (folder / "plain.cbf").write_bytes(raw)
    return folder, raw


def test_gzip_and_bzip2_by_content(plain_cbf):
    folder, raw = plain_cbf
    (folder / "g.img").write_bytes(gzip.compress(raw, compresslevel=1))  # names say nothing
    (folder / "b.dat").write_bytes(bz2.compress(raw, compresslevel=1))
    ref_models = read_models(folder / "plain.cbf")
    (ref,) = read_pixels(folder / "plain.cbf")
    for name in ("g.img", "b.dat"):
        assert identify(folder / name) is FullCBF
        models = read_models(folder / name)
        assert np.allclose(models[1][0].origin, ref_models[1][0].origin)
        assert np.array_equal(read_pixels(folder / name)[0], ref)


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes_0001.cbf"
    bad.write_text("this is a processing log, not an image\n" * 20)
    with pytest.raises(UnknownImageFormatError) as e:
        identify(bad)
    assert str(bad) in str(e.value) and "miniCBF" in str(e.value) and "SMV" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(GonioError, match="does not exist"):
        identify(tmp_path / "nothing_0001.cbf")


def test_truncated_images_name_the_file(plain_cbf, tmp_path):
    _, raw = plain_cbf
    cut = tmp_path / "cut_0001.cbf"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GonioError, match="truncated") as e:
        read_models(cut)  # header complete, pixel data cut: caught without decoding
    assert str(cut) in str(e.value)
    with pytest.raises(GonioError, match=str(cut)):
        read_pixels(cut)
    cut_gz = tmp_path / "cut_0001.cbf.gz"
    cut_gz.write_bytes(gzip.compress(raw, compresslevel=1)[:200_000])
    with pytest.raises(GonioError, match=str(cut_gz)):
        read_pixels(cut_gz)
    smv = data_path("images", "TIMEPIX_SU_516-stdgoni_0001.img").read_bytes()
    cut_smv = tmp_path / "cut_0001.img"
    cut_smv.write_bytes(smv[:100_000])
    with pytest.raises(GonioError, match=str(cut_smv)):
        read_models(cut_smv)


def _smv(path, items: dict, data: np.ndarray, order="little_endian"):
    body = "".join(f"{k}={v};\n" for k, v in items.items())
    text = f"{{\nHEADER_BYTES=  512;\nDIM=2;\nBYTE_ORDER={order};\nTYPE=unsigned_short;\n{body}}}\n"
    dtype = "<u2" if order == "little_endian" else ">u2"
    path.write_bytes(text.encode().ljust(512, b" ") + data.astype(dtype).tobytes())


def test_adsc_smv_mosflm_beam_centre_and_pedestal(tmp_path):
    data = np.full((30, 40), 50, dtype=np.uint16)
    data[3, 5] = 1040
    items = {
        "SIZE1": 40,
        "SIZE2": 30,
        "PIXEL_SIZE": 0.1,
        "DISTANCE": 250.0,
        "WAVELENGTH": 1.0,
        "BEAM_CENTER_X": 1.5,
        "BEAM_CENTER_Y": 2.25,
        "OSC_START": 5.0,
        "OSC_RANGE": 0.5,
        "TIME": 1.0,
        "IMAGE_PEDESTAL": 40,
        "BEAMLINE": "ALS831",
    }
    for order in ("little_endian", "big_endian"):
        path = tmp_path / f"adsc_{order}_001.img"
        _smv(path, items, data, order)
        beam, detector, g, scan = read_models(path)
        p = detector[0]
        # ADSC headers give the Mosflm (slow, fast) mm beam centre: fast = Y, slow = X
        assert p.beam_centre_mm(beam.s0) == pytest.approx((2.25, 1.5))
        assert p.trusted_range == (39.0, 65495.0)
        assert scan.oscillation == (5.0, 0.5) and p.image_size == (40, 30)
        (img,) = read_pixels(path)
        assert img[3, 5] == 1000 and img[0, 0] == 10  # pedestal subtracted
