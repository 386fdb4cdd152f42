"""Frames of an HDF5 image data set, decompressed outside h5py's lock when it can be.

h5py serialises every call into the HDF5 library behind one lock per process, and the
library runs a data set's filters (decompression) inside the read: threads reading
frames of Dectris Eiger data (bitshuffle/LZ4, HDF5 filter 32008) then decode one at a
time. For such a data set, chunked one frame per chunk, a frame is instead read as
its compressed chunk (``read_direct_chunk``: only the file read holds the lock) and
decompressed by the bitshuffle library that hdf5plugin ships (``bshuf_decompress_lz4``,
called through ctypes, which releases the GIL): threads decode in parallel.

The chunk layout is that of the bitshuffle HDF5 filter (Masui et al. 2015, Astronomy and
Computing 12, 181): a 12-byte header (uncompressed size in bytes, uint64 big-endian;
block size in bytes, uint32 big-endian), then the LZ4-compressed bitshuffled blocks.
Any other data set (other filters, several frames per chunk, a chunk stored without
its filter) is read by h5py as usual.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

from .base import ImageFormatError

BITSHUFFLE = 32008  # the HDF5 filter id of bitshuffle
_BSHUF_LZ4 = 2  # its cd_values[4] when the blocks are LZ4-compressed
_LIBRARY: list = []  # [bshuf_decompress_lz4, or None when unavailable]


def _decompress_lz4():
    """``bshuf_decompress_lz4`` of hdf5plugin's bitshuffle plugin (None if missing)."""
    if not _LIBRARY:
        fn = None
        try:
            import hdf5plugin

            (path,) = glob.glob(os.path.join(hdf5plugin.PLUGIN_PATH, "*h5bshuf*"))[:1]
            fn = ctypes.CDLL(path).bshuf_decompress_lz4
            fn.restype = ctypes.c_int64
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                           ctypes.c_size_t]
        except (ImportError, OSError, AttributeError, ValueError):
            fn = None
        _LIBRARY.append(fn)
    return _LIBRARY[0]


def frame_reader(dset):
    """A function ``index -> frame`` (a (slow, fast) array of ``dset.dtype``) reading
    the 3D data set ``dset`` (frames, slow, fast)."""
    direct = _direct_decoder(dset)
    return direct if direct is not None else (lambda index: dset[index])


def _direct_decoder(dset):
    if dset.ndim != 3 or dset.chunks != (1, *dset.shape[1:]) or _decompress_lz4() is None:
        return None
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return None
    code, _, values, _ = plist.get_filter(0)
    itemsize = dset.dtype.itemsize
    if (code != BITSHUFFLE or len(values) < 5 or values[4] != _BSHUF_LZ4
            or values[2] not in (0, itemsize)):
        return None
    shape, dtype = dset.shape[1:], dset.dtype
    n = int(np.prod(shape))
    decompress = _decompress_lz4()

    def read(index: int) -> np.ndarray:
        try:
            skipped, chunk = dset.id.read_direct_chunk((index, 0, 0))
        except RuntimeError:  # a frame never written: h5py returns the fill value
            return dset[index]
        if skipped & 1:  # stored without its filter
            return np.frombuffer(chunk, dtype, count=n).reshape(shape).copy()
        size = int.from_bytes(chunk[:8], "big")
        block = int.from_bytes(chunk[8:12], "big") // itemsize
        out = np.empty(shape, dtype)
        src = np.frombuffer(chunk, np.uint8)
        used = decompress(src.ctypes.data + 12, out.ctypes.data, n, itemsize, block) \
            if size == n * itemsize else -1
        if used != len(chunk) - 12:
            raise ImageFormatError(
                f"Frame {index} of {dset.file.filename}:{dset.name} could not be "
                "decompressed (bitshuffle/LZ4): the data file is damaged. Copy it again "
                "from its source, or leave the frame out (image_range).")
        return out

    return read
