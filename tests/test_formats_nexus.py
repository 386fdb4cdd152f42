"""NXmx master + external data file (bitshuffle/LZ4), written here with h5py."""

from __future__ import annotations

import pickle

import h5py
import hdf5plugin
import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.formats import ImageSequenceReader, NXmx, identify, read_models, read_pixels
from gonio.core.importer import import_images

NX, NY, N = 60, 40, 5
PX = 0.075  # mm
BEAM_PX = (31.5, 18.25)  # (fast, slow)
DISTANCE = 150.0


def _t(group, name, value, kind, vector, depends_on, units, offset=None):
    ds = group.create_dataset(name, data=value)
    ds.attrs["transformation_type"] = kind
    ds.attrs["vector"] = np.asarray(vector, dtype=float)
    ds.attrs["depends_on"] = depends_on
    ds.attrs["units"] = units
    if offset is not None:
        ds.attrs["offset"] = np.asarray(offset, dtype=float)
        ds.attrs["offset_units"] = "mm"
    ds.attrs["NX_class"] = "NXtransformations"
    return ds


def write_nxmx(folder, frames):
    data_file = folder / "sim_data_000001.h5"
    with h5py.File(data_file, "w") as f:
        f.create_dataset(
            "entry/data/data", data=frames, chunks=(1, NY, NX), **hdf5plugin.Bitshuffle(cname="lz4")
        )
    master = folder / "sim_master.h5"
    with h5py.File(master, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        beam = inst.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        wl = beam.create_dataset("incident_wavelength", data=0.9795)
        wl.attrs["units"] = "angstrom"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("sensor_material", data=b"Silicon")
        det.create_dataset("sensor_thickness", data=0.00045).attrs["units"] = "m"
        det.create_dataset("saturation_value", data=50000)
        tr = det.create_group("transformations")
        _t(tr, "det_z", DISTANCE, "translation", (0, 0, 1), ".", "mm")
        mod = det.create_group("module")
        mod.attrs["NX_class"] = "NXdetector_module"
        mod.create_dataset("data_origin", data=[0, 0])
        mod.create_dataset("data_size", data=[NY, NX])
        # McStas: offset (+x left, +y up) puts the beam at BEAM_PX from the first pixel's corner
        _t(
            mod,
            "module_offset",
            0.0,
            "translation",
            (1, 0, 0),
            "/entry/instrument/detector/transformations/det_z",
            "mm",
            offset=(BEAM_PX[0] * PX, BEAM_PX[1] * PX, 0),
        )
        _t(
            mod,
            "fast_pixel_direction",
            PX,
            "translation",
            (-1, 0, 0),
            "module_offset",
            "mm",
            offset=(0, 0, 0),
        )
        _t(
            mod,
            "slow_pixel_direction",
            PX,
            "translation",
            (0, -1, 0),
            "module_offset",
            "mm",
            offset=(0, 0, 0),
        )
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample.create_dataset("depends_on", data=b"/entry/sample/transformations/omega")
        st = sample.create_group("transformations")
        _t(st, "omega", 10.0 + 0.1 * np.arange(N), "rotation", (-1, 0, 0), ".", "deg")
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data["data_000001"] = h5py.ExternalLink(data_file.name, "/entry/data/data")
    return master, data_file


def converted(frame):
    out = frame.astype(np.int32)
    out[frame == 65535] = -1
    return out


@pytest.fixture
def nexus(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.poisson(5.0, size=(N, NY, NX)).astype(np.uint16)
    frames[:, 10, :] = 65535  # a masked row
    master, data_file = write_nxmx(tmp_path, frames)
    return master, data_file, frames


def test_nxmx_geometry(nexus):
    master, _, _ = nexus
    assert identify(master) is NXmx
    beam, detector, g, scan = read_models(master)
    p = detector[0]
    assert beam.wavelength == pytest.approx(0.9795)
    assert np.allclose(p.fast_axis, [1, 0, 0]) and np.allclose(p.slow_axis, [0, -1, 0])
    assert np.allclose(p.origin, [-BEAM_PX[0] * PX, BEAM_PX[1] * PX, -DISTANCE])
    assert p.beam_centre_mm(beam.s0) / PX == pytest.approx(BEAM_PX)
    assert p.image_size == (NX, NY) and p.pixel_size == pytest.approx((PX, PX))
    assert p.material == "Si" and p.thickness == pytest.approx(0.45)
    assert p.mu == pytest.approx(3.9603818101507735)
    assert p.trusted_range == (-1.0, 50000.0)
    assert np.allclose(g.rotation_axis, [1, 0, 0])
    assert scan.image_range == (1, N) and scan.oscillation == pytest.approx((10.0, 0.1))


def test_nxmx_pixels_and_reader(nexus):
    master, _, frames = nexus
    (img,) = read_pixels(master, 3)
    assert img.dtype == np.int32 and np.array_equal(img, converted(frames[3]))
    assert (img[10] == -1).all()
    (expt,) = import_images([str(master)], image_range=(2, 4))
    assert expt.imageset.template == str(master) and expt.scan.image_range == (2, 4)
    assert expt.scan.oscillation == pytest.approx((10.1, 0.1))
    reader = pickle.loads(pickle.dumps(ImageSequenceReader(expt)))
    assert len(reader) == 3 and reader.path(0) == str(master)
    assert np.array_equal(reader.read(0)[0], converted(frames[1]))
    assert np.array_equal(reader.read(2)[0], converted(frames[3]))


def test_nxmx_missing_data_file(nexus):
    master, data_file, _ = nexus
    data_file.unlink()
    with pytest.raises(GonioError, match="sim_data_000001.h5"):
        import_images([str(master)])


def test_eiger_nearly_nexus_master_with_data(tmp_path):
    """The real old-firmware Eiger master (no depends_on chains) with a stand-in data file."""
    import shutil

    from conftest import data_path

    master = tmp_path / "dectris_eiger_master.h5"
    shutil.copy(data_path("images", "dectris_eiger_master.h5"), master)
    master.chmod(0o644)
    frames = np.zeros((2, 3269, 3110), dtype=np.uint16)
    frames[1, 100, 200] = 42
    frames[:, 500, :] = 65535
    with h5py.File(tmp_path / "dectris_eiger_data_000001.h5", "w") as f:
        f.create_dataset(
            "entry/data/data",
            data=frames,
            chunks=(1, 3269, 3110),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
    beam, detector, g, scan = read_models(master)
    p = detector[0]
    assert beam.wavelength == pytest.approx(0.9801122, rel=1e-6)
    assert p.distance == pytest.approx(134.255, rel=1e-6)
    assert p.image_size == (3110, 3269) and p.pixel_size == pytest.approx((0.075, 0.075))
    assert p.beam_centre_mm(beam.s0) / 0.075 == pytest.approx((1607.415, 1586.4314), rel=1e-6)
    assert p.trusted_range == (-1.0, 12440.0) and p.material == "Si"
    assert scan.image_range == (1, 2) and scan.oscillation == pytest.approx((0.0, 0.5))
    (img,) = read_pixels(master, 1)
    assert img[100, 200] == 42 and (img[500] == -1).all()
