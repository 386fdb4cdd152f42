"""Simulated images round-trip: fabio (miniCBF, SMV), h5py (NeXus) and gonio's importers."""

import importlib.util

import fabio
import numpy as np
import pytest

from gonio.core.simulate import SimulationParams, simulate
from gonio.core.simulate.writers import ImageWriteError, byte_offset_compress

BASE = dict(image_size=(200, 240), n_images=3, osc=0.25, phi_start=10.0, distance=150.0,
            seed=3, nproc=1, header_distance=180.0, header_beam_centre_offset=(4.0, -2.5))
HAVE_FORMATS = importlib.util.find_spec("gonio.core.formats") is not None


def _pair(tmp_path, fmt, **kw):
    files = simulate(SimulationParams(output=str(tmp_path), format=fmt, **BASE, **kw))
    memory = simulate(SimulationParams(format=fmt, **BASE, **kw))
    return files, memory


def _header_lines(header_contents: str) -> dict:
    out = {}
    for line in header_contents.replace("\r", "").split("\n"):
        parts = line.lstrip("# ").split(" ", 1)
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def test_byte_offset_compression_of_all_step_sizes():
    data = np.array([0, 5, -120, 200, -32000, 40000, 1048500, -1, -1, 2**30, 0, -128, -32896],
                    np.int32)
    packed = byte_offset_compress(data)
    # steps 0, 5, -125 (1 byte); 320, -32200 (3); 72000, 1008500, -1048501 (7); 0 (1);
    # 2^30 + 1, -2^30 (7); -128 and -32768 are the escape markers themselves (3 and 7)
    assert len(packed) == 1 + 1 + 1 + 3 + 3 + 7 + 7 + 7 + 1 + 7 + 7 + 3 + 7
    # decode with the reference rules
    out, p, cur = [], 0, 0
    b = np.frombuffer(packed, np.uint8)
    while p < len(b):
        d = int(np.int8(b[p]))
        p += 1
        if d == -128:
            d = int(np.frombuffer(packed[p:p + 2], "<i2")[0])
            p += 2
            if d == -32768:
                d = int(np.frombuffer(packed[p:p + 4], "<i4")[0])
                p += 4
        cur += d
        out.append(cur)
    assert out == data.tolist()


def test_minicbf_reads_in_fabio(tmp_path):
    files, memory = _pair(tmp_path, "cbf")
    assert len(files.image_paths) == 3
    img = fabio.open(files.image_paths[1])
    assert img.data.shape == (240, 200) and img.data.dtype == np.int32
    assert np.array_equal(img.data, memory.images[1, 0])
    assert img.data.min() == -1  # Pilatus module gap (rows 195..211)
    assert np.all(img.data[195:212] == -1)
    h = _header_lines(img.header["_array_data.header_contents"])
    assert img.header["_array_data.header_convention"].strip('"') == "PILATUS_1.2"
    assert float(h["Detector_distance"].split()[0]) == pytest.approx(0.180)
    assert h["Beam_xy"] == "(104.00, 117.50) pixels"  # image centre + (4, -2.5)
    assert float(h["Wavelength"].split()[0]) == pytest.approx(0.9795)
    assert float(h["Start_angle"].split()[0]) == pytest.approx(10.25)
    assert float(h["Angle_increment"].split()[0]) == pytest.approx(0.25)
    assert h["Pixel_size"] == "172e-6 m x 172e-6 m"


def test_smv_reads_in_fabio(tmp_path):
    files, memory = _pair(tmp_path, "smv")
    img = fabio.open(files.image_paths[2])
    assert img.data.shape == (240, 200)
    assert np.array_equal(img.data.astype(np.int64), np.clip(memory.images[2, 0], 0, 65535))
    h = img.header
    assert int(h["HEADER_BYTES"]) == 512 and h["TYPE"] == "unsigned_short"
    assert (int(h["SIZE1"]), int(h["SIZE2"])) == (200, 240)
    assert float(h["DISTANCE"]) == pytest.approx(180.0)
    # ADSC convention: BEAM_CENTER_X along slow, BEAM_CENTER_Y along fast, in mm
    assert float(h["BEAM_CENTER_Y"]) == pytest.approx(104.0 * 0.172, abs=1e-4)
    assert float(h["BEAM_CENTER_X"]) == pytest.approx(117.5 * 0.172, abs=1e-4)
    assert float(h["OSC_START"]) == pytest.approx(10.5) and float(h["OSC_RANGE"]) == 0.25


def test_smv_reversed_axis_is_a_negative_oscillation(tmp_path):
    files = simulate(SimulationParams(output=str(tmp_path), format="smv",
                                      rotation_axis=(-1, 0, 0), **BASE))
    h = fabio.open(files.image_paths[0]).header
    assert float(h["OSC_RANGE"]) == pytest.approx(-0.25)
    with pytest.raises(ImageWriteError, match="rotation axis"):
        simulate(SimulationParams(output=str(tmp_path / "x"), format="cbf",
                                  rotation_axis=(0, 1, 0), **BASE))


def test_nexus_master_and_data(tmp_path):
    import h5py

    files, memory = _pair(tmp_path, "nexus", header_axis_rotated=30.0)
    with h5py.File(files.master_path) as f:
        assert f["entry/definition"][()].decode() == "NXmx"
        data = f["entry/data/data_000001"][()]
        assert data.shape == (3, 240, 200) and data.dtype == np.uint32
        expected = memory.images[:, 0].astype(np.int64)
        gaps = expected < 0
        assert np.array_equal(data[~gaps], expected[~gaps])
        assert np.all(data[gaps] == 0xFFFFFFFF)
        mask = f["entry/instrument/detector/pixel_mask"][()]
        assert np.array_equal(mask.astype(bool), gaps[0])
        det = f["entry/instrument/detector"]
        assert det["distance"][()] == pytest.approx(0.180)
        assert det["beam_center_x"][()] == pytest.approx(104.0)
        assert det["beam_center_y"][()] == pytest.approx(117.5)
        omega = f["entry/sample/transformations/omega"]
        assert np.allclose(omega[()], [10.0, 10.25, 10.5])
        # header axis = true +x rotated 30 deg about the beam, written in the McStas frame
        c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
        assert np.allclose(omega.attrs["vector"], [-c, s, 0.0])
        assert f["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(0.9795)
        dset = h5py.File(files.image_paths[0])["entry/data/data"]
        plist = dset.id.get_create_plist()
        assert plist.get_nfilters() == 1 and plist.get_filter(0)[0] == 32008  # bitshuffle
    assert np.allclose(files.experiments[0].goniometer.rotation_axis, [1, 0, 0])


@pytest.mark.skipif(not HAVE_FORMATS, reason="gonio.core.formats (the image readers) is absent")
@pytest.mark.parametrize("fmt", ["cbf", "smv", "nexus"])
def test_gonio_importer_reads_the_header_geometry(tmp_path, fmt):
    from gonio.core import formats

    kw = {"header_axis_rotated": 20.0} if fmt == "nexus" else {"header_axis_reversed": True}
    res = simulate(SimulationParams(output=str(tmp_path), format=fmt, header_wavelength=1.01,
                                    **BASE, **kw))
    path = res.master_path or res.image_paths[0]
    beam, det, gonio, scan = formats.identify(path).read_models(path)
    head = res.header_experiments[0]
    assert beam.wavelength == pytest.approx(1.01)
    p, q = det[0], head.detector[0]
    assert np.allclose(p.origin, q.origin, atol=1e-6)
    assert np.allclose(p.fast_axis, q.fast_axis) and np.allclose(p.slow_axis, q.slow_axis)
    assert p.image_size == q.image_size and np.allclose(p.pixel_size, q.pixel_size)
    assert p.px_mm_strategy == q.px_mm_strategy
    assert p.mu == pytest.approx(q.mu, rel=1e-6) and p.thickness == pytest.approx(q.thickness)
    assert np.allclose(gonio.rotation_axis, head.goniometer.rotation_axis, atol=1e-9)
    assert scan.oscillation[0] == pytest.approx(10.0) and scan.oscillation[1] == 0.25
    # the truth differs from the header exactly by the requested errors
    true = res.experiments[0]
    assert true.detector[0].distance == pytest.approx(150.0)
    assert p.distance == pytest.approx(180.0)
    pixels = formats.identify(path).read_pixels(path, 0)
    expected = simulate(SimulationParams(format=fmt, header_wavelength=1.01, **BASE, **kw))
    exp0 = expected.images[0, 0].astype(np.int64)
    got = np.asarray(pixels[0]).astype(np.int64)
    ok = exp0 >= 0
    assert np.array_equal(got[ok], exp0[ok])


@pytest.mark.skipif(not HAVE_FORMATS, reason="gonio.core.formats (the image readers) is absent")
def test_gonio_importer_reads_multi_panel_nexus(tmp_path):
    from gonio.core import formats

    res = simulate(SimulationParams(output=str(tmp_path), format="nexus", detector="multipanel",
                                    **{**BASE, "image_size": (64, 64)}))
    beam, det, gonio, scan = formats.identify(res.master_path).read_models(res.master_path)
    assert len(det) == 4
    for p, q in zip(det, res.header_experiments[0].detector):
        assert np.allclose(p.origin, q.origin, atol=1e-6)
    pixels = formats.identify(res.master_path).read_pixels(res.master_path, 2)
    expected = simulate(SimulationParams(format="nexus", detector="multipanel",
                                         **{**BASE, "image_size": (64, 64)}))
    for k in range(4):
        assert np.array_equal(np.asarray(pixels[k]), expected.images[2, k])


def test_smv_overload_is_the_16_bit_limit():
    res = simulate(SimulationParams(format="smv", mean_intensity=2e6,
                                    **{**BASE, "n_images": 1}))
    assert res.experiments[0].detector[0].trusted_range == (-1.0, 65535.0)
    assert res.images.max() == 65535
