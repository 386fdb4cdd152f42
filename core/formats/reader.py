"""Lazy, picklable reading of the images of an experiment.

:class:`ImageSequenceReader` turns an :class:`ImageSetRef` (a template with
``#`` for the image number, an explicit file list, or one HDF5 master file
with image indices) plus the experiment's :class:`Scan` into "image i of
the sweep" (0-based within the scan). It holds only strings and numbers, so
it pickles cheaply into worker processes; files are opened on first use in
each process (HDF5 handles are cached per process and dropped on pickling).
"""

from __future__ import annotations

import os
import re

import numpy as np

from gonio.core.models.imageset import ImageSetRef
from gonio.core.models.scan import Scan

from .base import ImageFormatError

_HASHES = re.compile(r"#+")


def template_path(template: str, number: int) -> str:
    """The file name for image ``number`` of a ``name_####.ext`` template."""
    matches = list(_HASHES.finditer(os.path.basename(template)))
    if not matches:
        return template
    m = matches[-1]
    start = len(template) - len(os.path.basename(template)) + m.start()
    width = m.end() - m.start()
    return f"{template[:start]}{number:0{width}d}{template[start + width :]}"


class ImageSequenceReader:
    """Read image i (0-based within the scan) of an experiment's images.

    ``source`` is an :class:`ImageSetRef` or anything with ``.imageset``
    (and ``.scan``), e.g. an Experiment.
    """

    def __init__(self, source, scan: Scan | None = None):
        ref = source if isinstance(source, ImageSetRef) else source.imageset
        if scan is None and not isinstance(source, ImageSetRef):
            scan = getattr(source, "scan", None)
        if ref is None:
            raise ImageFormatError("This experiment has no images to read (no imageset).")
        self.template = ref.template
        self.paths = list(ref.paths)
        self.indices = list(ref.single_file_indices)
        self.format_name = ref.format
        self.first_image = scan.image_range[0] if scan is not None else 1
        self.n_images = scan.num_images if scan is not None else 0
        self._is_template = bool(self.template) and "#" in os.path.basename(self.template)
        self._fmt = None
        self._h5 = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fmt"] = None
        state["_h5"] = {}
        return state

    def __len__(self) -> int:
        if self._is_template:
            return self.n_images
        if self.template:  # one multi-image file: listed indices, else the scan's images
            return len(self.indices) if self.indices else self.n_images
        return len(self.paths)

    def path(self, i: int) -> str:
        """The file holding image i."""
        self._check(i)
        if self._is_template:
            return template_path(self.template, self.first_image + i)
        return self.template or self.paths[i]

    def index_in_file(self, i: int) -> int:
        """Where image i sits inside its file (0 for one-image files)."""
        self._check(i)
        if self._is_template or not self.template:
            return 0
        return self.indices[i] if self.indices else self.first_image - 1 + i

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} out of range for {len(self)} images")

    @property
    def format(self):
        if self._fmt is None:
            from . import format_by_name, identify

            self._fmt = (
                format_by_name(self.format_name) if self.format_name else identify(self.path(0))
            )
        return self._fmt

    def read(self, i: int) -> tuple[np.ndarray, ...]:
        """Pixels of image i: one (slow, fast) array per panel."""
        path = self.path(i)
        fmt = self.format
        if fmt.name == "NXmx":
            return self._read_hdf5(path, self.index_in_file(i))
        return fmt.read_pixels(path, self.index_in_file(i))

    def _read_hdf5(self, path: str, index: int):
        from .hdf5_frames import frame_reader
        from .nexus import NXmx, _h5py

        if path not in self._h5:
            sources = [(frame_reader(_h5py().File(t, "r")[d]), n)
                       for t, d, n in NXmx.data_sources(path)]
            self._h5[path] = (sources, NXmx._module_blocks(path))
        sources, blocks = self._h5[path]
        for read_frame, n in sources:
            if index < n:
                frame = read_frame(index)
                if len(blocks) > 1:
                    return tuple(NXmx.convert(frame[s0:s1, f0:f1])[0] for f0, s0, f1, s1 in blocks)
                return NXmx.convert(frame)
            index -= n
        raise ImageFormatError(f"{path} has fewer images than the scan needs.")

    def __iter__(self):
        return (self.read(i) for i in range(len(self)))


class InMemoryReader:
    """Images already in memory, read like an :class:`ImageSequenceReader`.

    ``frames[i]`` is image i: one (slow, fast) array, or a tuple of them for
    several panels (e.g. a simulated sweep kept in memory, or test data).
    """

    def __init__(self, frames):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, i: int) -> tuple[np.ndarray, ...]:
        f = self.frames[i]
        return tuple(f) if isinstance(f, (tuple, list)) else (f,)
