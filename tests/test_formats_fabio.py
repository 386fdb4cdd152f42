"""gonio's image readers give the pixels fabio (h5py for HDF5) gives, on every format the
step readers decode: miniCBF (plain, gzip, bzip2), SMV and NeXus bitshuffle/LZ4, the last
also through the direct chunk decoder (core/formats/hdf5_frames.py) in several threads."""

from __future__ import annotations

import bz2
import gzip
import shutil
from concurrent.futures import ThreadPoolExecutor

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import data_path

from gonio.core.formats import ImageSequenceReader, read_pixels
from gonio.core.formats.base import ImageFormatError
from gonio.core.formats.hdf5_frames import _direct_decoder, frame_reader
from gonio.core.importer import import_images


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """A 3-image simulated sweep per format: {label: (paths, simulation result)}."""
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    root = tmp_path_factory.mktemp("sweeps")
    out = {}
    for fmt in ("cbf", "smv", "nexus"):
        r = simulate(SimulationParams(preset="lysozyme", n_images=3, image_size=(200, 240),
                                      d_min=2.5, seed=2, format=fmt, output=str(root / fmt)))
        out[fmt] = ([r.master_path] if r.master_path else r.image_paths, r)
    for ext, opener in ((".gz", gzip.open), (".bz2", bz2.open)):
        paths = []
        for p in out["cbf"][0]:
            with open(p, "rb") as f, opener(p + ext, "wb") as g:
                shutil.copyfileobj(f, g)
            paths.append(p + ext)
        out["cbf" + ext] = (paths, out["cbf"][1])
    return out


@pytest.mark.parametrize("label", ["cbf", "cbf.gz", "cbf.bz2", "smv"])
def test_step_reader_equals_fabio(sweeps, label):
    paths, _ = sweeps[label]
    reader = ImageSequenceReader(import_images(paths)[0])
    for i, path in enumerate(paths):
        (ours,) = reader.read(i)
        ref = fabio.open(path).data
        assert ours.dtype == np.int32 and ours.shape == ref.shape == (240, 200)
        assert np.array_equal(ours, ref.astype(np.int64))
        assert ours.max() > 100  # spots, not an empty image


@pytest.mark.parametrize("name", ["TIMEPIX_SU_516-stdgoni_0001.img",
                                  "simtbx_FormatSMVJHSim_001.img",
                                  "dlsnxs2cbf_therm_0001.cbf.gz", "thau_3_2_0001.cbf.bz2"])
def test_real_images_equal_fabio(name):
    path = str(data_path("images", name))
    (ours,) = read_pixels(path)
    ref = fabio.open(path).data
    assert ours.dtype == np.int32 and np.array_equal(ours, ref.astype(np.int64))


def test_nexus_step_reader_equals_h5py_in_two_threads(sweeps):
    paths, result = sweeps["nexus"]
    reader = ImageSequenceReader(import_images(paths)[0])
    with ThreadPoolExecutor(2) as pool:
        frames = list(pool.map(lambda i: reader.read(i)[0], [0, 1, 2, 2, 1, 0]))
    (data_file,) = result.image_paths
    with h5py.File(data_file, "r") as f:
        (dset,) = [f[n] for n in ("entry/data/data", "data") if n in f] or [None]
        assert dset is not None and _direct_decoder(dset) is not None  # the fast path
        for k, i in enumerate([0, 1, 2, 2, 1, 0]):
            ref = dset[i]
            assert np.array_equal(frames[k], ref.view(np.int32))  # 2^32 - 1 (gaps) -> -1
        assert (frames[0] == -1).any() and frames[0].max() > 100


@pytest.mark.parametrize("dtype", ["<u4", "<u2", ">u4", "<i4"])
def test_direct_chunk_decoder_equals_h5py(tmp_path, dtype):
    rng = np.random.default_rng(5)
    top = np.iinfo(np.dtype(dtype)).max
    frames = rng.poisson(3.0, (4, 37, 53)).astype(dtype)
    frames[:, 5, :] = top  # a gap row
    frames[1, 20:23, 30:33] = top // 3  # a strong spot
    with h5py.File(tmp_path / "d.h5", "w") as f:
        d = f.create_dataset("data", shape=(5, 37, 53), dtype=dtype, chunks=(1, 37, 53),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        d[:4] = frames  # frame 4 is never written
    with h5py.File(tmp_path / "d.h5", "r") as f:
        d = f["data"]
        assert _direct_decoder(d) is not None
        read = frame_reader(d)
        for i in range(5):
            got = read(i)
            assert got.shape == (37, 53) and np.array_equal(got, d[i])
        assert not read(4).any()  # the fill value, as h5py gives


def test_other_filters_are_read_by_h5py(tmp_path):
    frames = np.arange(2 * 6 * 7, dtype="<u4").reshape(2, 6, 7)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("gzip", data=frames, chunks=(1, 6, 7), compression="gzip")
        f.create_dataset("two_frames_a_chunk", data=frames, chunks=(2, 6, 7),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
        f.create_dataset("no_lz4", data=frames, chunks=(1, 6, 7),
                         **hdf5plugin.Bitshuffle(cname="none"))
    with h5py.File(tmp_path / "d.h5", "r") as f:
        for name in ("gzip", "two_frames_a_chunk", "no_lz4"):
            assert _direct_decoder(f[name]) is None
            assert np.array_equal(frame_reader(f[name])(1), frames[1])


def test_a_damaged_chunk_is_a_clear_error(tmp_path):
    frames = np.random.default_rng(1).poisson(50.0, (2, 64, 64)).astype("<u4")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        d = f.create_dataset("data", data=frames, chunks=(1, 64, 64),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        _, chunk = d.id.read_direct_chunk((1, 0, 0))
        d.id.write_direct_chunk((1, 0, 0), chunk[:12] + bytes(len(chunk) - 12))
    with h5py.File(tmp_path / "d.h5", "r") as f:
        read = frame_reader(f["data"])
        assert np.array_equal(read(0), frames[0])
        with pytest.raises(ImageFormatError, match="Frame 1 of .*could not be decompressed"
                           ".*damaged"):
            read(1)
