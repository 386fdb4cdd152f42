"""Importing sweeps, stills, overrides and bad inputs, on small synthetic miniCBF files.

The files carry the real header of thau_3_2_0001.cbf (Pilatus3 6M) with the
rotation, the image size and the pixels replaced: 5 images of 0.1 deg from
10.0 deg, 100 x 80 pixels, byte-offset compressed.
"""

from __future__ import annotations

import bz2
import pickle
import re

import numpy as np
import pytest
from conftest import data_path
from fabio import compression

from gonio.core.errors import GonioError
from gonio.core.formats import ImageSequenceReader, cbf_binary
from gonio.core.importer import ImportOverrides, import_images, split_name

NX, NY = 100, 80


@pytest.fixture(scope="module")
def header():
    raw = bz2.open(data_path("images", "thau_3_2_0001.cbf.bz2")).read(4096)
    return raw[: raw.index(b"--CIF-BINARY-FORMAT-SECTION--")].decode("latin-1")


def make_cbf(path, header, start, width, seed=0, nx=NX, ny=NY, zeros=False):
    if zeros:  # all-zero pixels: one zero byte per pixel in byte-offset coding
        data, packed = np.zeros((ny, nx), np.int32), bytes(nx * ny)
    else:
        data = np.random.default_rng(seed).poisson(3.0, size=(ny, nx)).astype(np.int32)
        data[:, 7] = -1
        packed = compression.compByteOffset(data)
    text = re.sub(r"# Start_angle .*", f"# Start_angle {start:.4f} deg.", header)
    text = re.sub(r"# Angle_increment .*", f"# Angle_increment {width:.4f} deg.", text)
    mime = (
        "--CIF-BINARY-FORMAT-SECTION--\r\nContent-Type: application/octet-stream;\r\n"
        '     conversions="x-CBF_BYTE_OFFSET"\r\nContent-Transfer-Encoding: BINARY\r\n'
        f"X-Binary-Size: {len(packed)}\r\nX-Binary-ID: 1\r\n"
        'X-Binary-Element-Type: "signed 32-bit integer"\r\n'
        f"X-Binary-Element-Byte-Order: LITTLE_ENDIAN\r\nX-Binary-Number-of-Elements: {nx * ny}\r\n"
        f"X-Binary-Size-Fastest-Dimension: {nx}\r\nX-Binary-Size-Second-Dimension: {ny}\r\n"
        "X-Binary-Size-Padding: 4095\r\n\r\n"
    )
    path.write_bytes(
        text.encode("latin-1")
        + mime.encode()
        + cbf_binary.START_TAG
        + packed
        + b"\0" * 16
        + b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\r\n"
    )
    return data


def write_sweep(folder, header, prefix="sweep_", n=5, start=10.0, width=0.1, first=1):
    return {
        i: make_cbf(
            folder / f"{prefix}{i:04d}.cbf", header, start + (i - first) * width, width, seed=i
        )
        for i in range(first, first + n)
    }


def test_template_import_reads_no_pixels(tmp_path, header, monkeypatch):
    write_sweep(tmp_path, header)

    def no_pixels(*a, **k):
        raise AssertionError("import must not read pixel data")

    monkeypatch.setattr(cbf_binary, "decode_pixels", no_pixels)
    (e,) = import_images([str(tmp_path / "sweep_####.cbf")])
    assert e.imageset.kind == "ImageSequence" and e.imageset.format == "miniCBF"
    assert e.imageset.template == str(tmp_path / "sweep_####.cbf")
    assert e.scan.image_range == (1, 5) and e.scan.oscillation == pytest.approx((10.0, 0.1))
    assert np.allclose(e.goniometer.rotation_axis, [1, 0, 0])
    assert e.detector[0].image_size == (NX, NY)
    assert e.beam.wavelength == pytest.approx(0.96859)


def test_file_list_folder_and_template_agree(tmp_path, header):
    write_sweep(tmp_path, header)
    files = sorted(str(p) for p in tmp_path.glob("sweep_*.cbf"))
    a = import_images(files)
    b = import_images([str(tmp_path)])
    c = import_images([str(tmp_path / "sweep_*.cbf")])  # a glob the shell left alone
    for el in (a, b, c):
        assert len(el) == 1 and el[0].scan.image_range == (1, 5)
        assert el[0].imageset.template == str(tmp_path / "sweep_####.cbf")


def test_image_range_and_reader(tmp_path, header):
    truth = write_sweep(tmp_path, header)
    (e,) = import_images([str(tmp_path / "sweep_####.cbf")], image_range=(2, 4))
    assert e.scan.image_range == (2, 4) and e.scan.oscillation == pytest.approx((10.1, 0.1))
    reader = pickle.loads(pickle.dumps(ImageSequenceReader(e)))
    assert len(reader) == 3
    assert reader.path(0) == str(tmp_path / "sweep_0002.cbf")
    for i in range(3):
        (img,) = reader.read(i)
        assert img.shape == (NY, NX) and np.array_equal(img, truth[i + 2])
    with pytest.raises(IndexError):
        reader.path(3)


def test_two_sweeps_and_stills(tmp_path, header):
    write_sweep(tmp_path, header, prefix="a_")
    write_sweep(tmp_path, header, prefix="b_", n=3, start=100.0, width=-0.5, first=7)
    truth_still = {
        i: make_cbf(tmp_path / f"still_{i:03d}.cbf", header, 90.0, 0.0, seed=10 + i) for i in (1, 2)
    }
    el = import_images([str(tmp_path)])
    sweeps = [e for e in el if e.scan is not None]
    stills = [e for e in el if e.scan is None]
    assert sorted(e.scan.image_range for e in sweeps) == [(1, 5), (7, 9)]
    b = next(e for e in sweeps if e.scan.image_range == (7, 9))
    assert b.scan.oscillation == pytest.approx((100.0, -0.5))
    assert len(stills) == 2 and all(e.goniometer is None for e in stills)
    assert stills[0].imageset.kind == "ImageSet"
    assert stills[0].imageset.paths == [str(tmp_path / "still_001.cbf")]
    reader = ImageSequenceReader(stills[1].imageset)
    assert len(reader) == 1 and reader.path(0) == str(tmp_path / "still_002.cbf")
    assert np.array_equal(reader.read(0)[0], truth_still[2])


def test_overrides_like_dials_import(tmp_path, header):
    write_sweep(tmp_path, header)
    t = str(tmp_path / "sweep_####.cbf")
    (ref,) = import_images([t])
    p0 = ref.detector[0]
    centre0 = p0.beam_centre_mm(ref.beam.s0)
    (e,) = import_images([t], overrides=ImportOverrides(distance=200.0))
    p = e.detector[0]
    assert p.distance == pytest.approx(200.0) and p.origin[2] == pytest.approx(-200.0)
    assert p.beam_centre_mm(e.beam.s0) == pytest.approx(centre0)  # beam along the normal
    (e,) = import_images([t], overrides=ImportOverrides(fast_slow_beam_centre=(40.5, 30.25)))
    p = e.detector[0]
    assert p.beam_centre_mm(e.beam.s0) / 0.172 == pytest.approx((40.5, 30.25))
    assert p.distance == pytest.approx(p0.distance)
    (e,) = import_images([t], overrides=ImportOverrides(mosflm_beam_centre=(5.16, 6.88)))
    assert e.detector[0].beam_centre_mm(e.beam.s0) == pytest.approx((6.88, 5.16))  # (slow, fast)
    (e,) = import_images(
        [t],
        overrides=ImportOverrides(
            wavelength=1.2,
            goniometer_axis=(-1, 0, 0),
            oscillation=(30.0, 0.25),
            trusted_range=(0, 1000),
        ),
    )
    assert e.beam.wavelength == 1.2
    assert np.allclose(e.goniometer.rotation_axis, [-1, 0, 0])
    assert e.scan.oscillation == (30.0, 0.25) and e.scan.image_range == (1, 5)
    assert e.detector[0].trusted_range == (0.0, 1000.0)
    # stills become a sweep when the user gives an oscillation
    make_cbf(tmp_path / "still_0001.cbf", header, 0.0, 0.0)
    (s,) = import_images(
        [str(tmp_path / "still_0001.cbf")], overrides=ImportOverrides(oscillation=(0.0, 1.0))
    )
    assert s.scan is not None and s.goniometer is not None


@pytest.mark.parametrize(
    "o,match",
    [
        (ImportOverrides(distance=-5), "distance"),
        (ImportOverrides(wavelength=0), "wavelength"),
        (ImportOverrides(goniometer_axis=(0, 0, 0)), "goniometer.axis"),
        (ImportOverrides(trusted_range=(10, 1)), "trusted_range"),
    ],
)
def test_bad_overrides(tmp_path, header, o, match):
    write_sweep(tmp_path, header, n=2)
    with pytest.raises(GonioError, match=match):
        import_images([str(tmp_path / "sweep_####.cbf")], overrides=o)


def test_missing_inputs(tmp_path):
    with pytest.raises(GonioError, match="does not exist"):
        import_images([str(tmp_path / "no_such_folder")])
    with pytest.raises(GonioError, match="does not exist"):
        import_images([str(tmp_path / "x_0001.cbf")])
    with pytest.raises(GonioError, match="No files match"):
        import_images([str(tmp_path / "x_####.cbf")])
    with pytest.raises(GonioError, match="No images given"):
        import_images([])


def test_not_an_image(tmp_path, header):
    write_sweep(tmp_path, header, n=2)
    (tmp_path / "notes.txt").write_text("a log file\n")
    assert len(import_images([str(tmp_path)])) == 1  # non-images in a folder are skipped
    with pytest.raises(GonioError, match="notes.txt.*not an image"):
        import_images([str(tmp_path / "notes.txt")])
    logs = tmp_path / "logs"
    logs.mkdir()
    with pytest.raises(GonioError, match=f"The folder {logs} holds no files"):
        import_images([str(logs)])
    (logs / "notes.txt").write_text("a log file\n")
    (logs / "run.log").write_text("a log file\n")
    with pytest.raises(GonioError, match=f"None of the 2 files in {logs} is an image gonio "
                                         "can read .it reads full CBF"):
        import_images([str(logs)])


def test_image_range_outside(tmp_path, header):
    write_sweep(tmp_path, header)
    with pytest.raises(GonioError, match="numbered 1 to 5"):
        import_images([str(tmp_path / "sweep_####.cbf")], image_range=(3, 9))


def test_non_contiguous(tmp_path, header):
    write_sweep(tmp_path, header)
    (tmp_path / "sweep_0003.cbf").unlink()
    with pytest.raises(GonioError, match=r"not numbered contiguously: 1 missing \(3\)"):
        import_images([str(tmp_path / "sweep_####.cbf")])
    (e,) = import_images([str(tmp_path / "sweep_####.cbf")], image_range=(4, 5))
    assert e.scan.image_range == (4, 5)


def test_different_detectors_in_one_template(tmp_path, header):
    write_sweep(tmp_path, header, n=3)
    make_cbf(tmp_path / "sweep_0004.cbf", header, 10.3, 0.1, nx=120)
    with pytest.raises(GonioError, match="different detectors"):
        import_images([str(tmp_path / "sweep_####.cbf")])


def test_discontinuous_rotation(tmp_path, header):
    write_sweep(tmp_path, header, n=3)
    make_cbf(tmp_path / "sweep_0004.cbf", header, 50.0, 0.1)
    with pytest.raises(GonioError, match="not continuous"):
        import_images([str(tmp_path / "sweep_####.cbf")])


def test_truncated_image_named(tmp_path, header):
    write_sweep(tmp_path, header, n=3)
    last = tmp_path / "sweep_0003.cbf"
    last.write_bytes(last.read_bytes()[:-2000])
    with pytest.raises(GonioError, match="sweep_0003.cbf is truncated"):
        import_images([str(tmp_path / "sweep_####.cbf")])


def test_eiger_master_without_data():
    with pytest.raises(GonioError, match="dectris_eiger_data_000001.h5"):
        import_images([str(data_path("images", "dectris_eiger_master.h5"))])


def test_real_images_import():
    el = import_images(
        [
            str(data_path("images", n))
            for n in (
                "thau_3_2_0001.cbf.bz2",
                "thau_3_2_0002.cbf.bz2",
                "DLS_I03_smargon_0001.cbf.gz",
                "TIMEPIX_SU_516-stdgoni_0001.img",
                "simtbx_FormatSMVJHSim_001.img",
                "DLS_I23_P12M_thau_00001.cbf.gz",
                "dlsnxs2cbf_therm_0001.cbf.gz",
            )
        ]
    )
    kinds = sorted((e.imageset.format, e.scan is not None) for e in el)
    assert kinds == [
        ("FullCBF", True),
        ("SMV", False),
        ("SMV", True),
        ("miniCBF", False),
        ("miniCBF", False),
        ("miniCBF", True),
        ("miniCBF", True),
    ]
    i23 = next(e for e in el if "I23" in e.imageset.template)
    assert len(i23.detector) == 24 and i23.goniometer.names == ["PHI", "KAPPA", "OMEGA"]
    assert i23.scan.image_range == (1, 1) and i23.scan.oscillation == pytest.approx((-210, 0.05))


def test_split_name():
    assert split_name("/d/thau_3_2_0001.cbf.bz2") == ("/d/thau_3_2_", "0001", ".cbf.bz2", 1)
    assert split_name("/d/814/1/00012.img") == ("/d/814/1/", "00012", ".img", 12)
    assert split_name("/d/image.cbf") is None


def test_minicbf_geometry_equals_dials_import(tmp_path, header):
    """Headers with the x4 sweep's values give the models dials.import wrote for it."""
    from gonio.core.io.dials_expt import read_expt

    dials = read_expt(data_path("x4_xds", "imported_experiments.json"))[0]
    values = {
        "Silicon sensor, thickness": "0.000320 m",
        "Exposure_period": "0.2000000 s",
        "Count_cutoff": "495976 counts",
        "Wavelength": "0.97950 A",
        "Detector_distance": "0.19018 m",
        "Beam_xy": "(1235.34, 1279.08) pixels",
        "Flux": "0.000000",
    }
    text = header
    for key, value in values.items():
        text = re.sub(rf"# {key} .*", f"# {key} {value}", text)
    for i in (1, 2):
        stamp = f"# 2013-02-08T12:03:{12.789 + 0.2 * (i - 1):06.3f}"
        t = re.sub(r"# 20\d\d-\d\d-\d\dT[\d:.]+", stamp, text)
        make_cbf(tmp_path / f"x4_{i:04d}.cbf", t, 0.2 * (i - 1), 0.2, nx=2463, ny=2527, zeros=True)
    (e,) = import_images([str(tmp_path / "x4_####.cbf")])
    _assert_same_models(e, dials, abs_mm=1e-12)
    assert e.scan.epochs == pytest.approx(dials.scan.epochs[:2], abs=1e-3)
    assert not ImageSequenceReader(e).read(1)[0].any()


def test_timepix_smv_with_distance_override_equals_dials(tmp_path):
    """MyD88 (Timepix SMV) headers + distance=2193 give the DIALS import in myd88/imported.expt."""
    from gonio.core.io.dials_expt import read_expt

    dials = read_expt(data_path("myd88", "imported.expt"))[0]
    for i in (1, 2):
        items = {
            "HEADER_BYTES": 512, "DIM": 2, "BYTE_ORDER": "little_endian",
            "TYPE": "unsigned_short", "SIZE1": 516, "SIZE2": 516, "PIXEL_SIZE": 0.055,
            "BEAMLINE": "TIMEPIX_SU", "DETECTOR_SN": 901, "TIME": 2.0, "DISTANCE": 531.85,
            "PHI": -56.73 + 0.9149 * (i - 1), "OSC_START": -56.73 + 0.9149 * (i - 1),
            "OSC_RANGE": 0.9149, "WAVELENGTH": 0.0251,
            "BEAM_CENTER_X": 12.588125 / 0.055, "BEAM_CENTER_Y": 12.9679 / 0.055,
        }  # fmt: skip
        text = "{\n" + "".join(f"{k}={v};\n" for k, v in items.items()) + "}\n"
        (tmp_path / f"{i:05d}.img").write_bytes(text.encode().ljust(512) + bytes(516 * 516 * 2))
    (e,) = import_images([str(tmp_path / "#####.img")], overrides=ImportOverrides(distance=2193))
    _assert_same_models(e, dials, abs_mm=1e-9)


def test_apply_overrides_to_existing_experiments(header, tmp_path):
    """`import distance=... goniometer.axis=...` on experiments already imported."""
    from gonio.core.importer import apply_overrides

    write_sweep(tmp_path, header)
    for i in (1, 2):
        make_cbf(tmp_path / f"still_{i:03d}.cbf", header, 90.0, 0.0, seed=i)
    el = import_images([str(tmp_path)])
    new = apply_overrides(el, ImportOverrides(distance=2193.0, goniometer_axis=(-107, -122, 0)))
    assert [e.identifier for e in new] == [e.identifier for e in el]
    assert all(e.detector[0].distance == pytest.approx(2193.0) for e in new)
    assert all(e.detector[0].distance == pytest.approx(351.0) for e in el)  # unchanged
    sweep = next(e for e in new if e.goniometer is not None)
    assert sweep.goniometer.rotation_axis == pytest.approx(
        np.array([-107, -122, 0]) / np.hypot(107, 122)
    )
    stills = [e for e in new if e.scan is None]
    assert stills[0].detector is stills[1].detector  # shared models stay shared
    with pytest.raises(GonioError, match="distance"):
        apply_overrides(el, ImportOverrides(distance=-5))


def _assert_same_beam(a, b):
    da, db = a.to_dict(), b.to_dict()
    assert set(da) == set(db)
    for key in da:
        assert da[key] == pytest.approx(db[key]), key


def _assert_same_models(e, dials, abs_mm):
    """gonio's import of the first two images equals DIALS's experiment (detector, beam,
    goniometer, scan)."""
    p, q = e.detector[0].to_dict(), dials.detector[0].to_dict()
    for key in ("fast_axis", "slow_axis", "origin", "pixel_size", "mu", "thickness"):
        assert p[key] == pytest.approx(q[key], rel=1e-12, abs=abs_mm), key
    for key in ("image_size", "mask", "trusted_range", "material", "type", "px_mm_strategy"):
        assert p[key] == q[key], key
    _assert_same_beam(e.beam, dials.beam)
    assert e.goniometer.rotation_axis == pytest.approx(dials.goniometer.rotation_axis)
    assert e.scan.oscillation == pytest.approx(dials.scan.oscillation)
    assert e.scan.exposure_time == pytest.approx(dials.scan.exposure_time[:2])
