"""NeXus / HDF5 images: NXmx (Bernstein et al. 2020, IUCrJ 7, 784) and the
Dectris Eiger master + data files.

Geometry comes from the NXmx transformations: every positioned object has a
``depends_on`` chain of ``NXtransformations`` datasets (``transformation_type``
rotation / translation, ``vector``, ``offset``, value with units). A point in
an object's frame maps out through the chain, innermost first:
``p -> offset + R(vector, value) p`` or ``p -> offset + p + value * vector``.
The detector module's ``fast_pixel_direction`` / ``slow_pixel_direction``
give the pixel axes and sizes; the sample's chain gives the goniometer, the
axis whose angle changes from frame to frame being the scan axis.

NeXus uses the McStas frame (z along the beam, y up); the DIALS / imgCIF
frame has the beam along -z with y up, so vectors and points are rotated by
180 degrees about y: (x, y, z) -> (-x, y, -z), as dxtbx does.

Older Eiger firmware writes a master file without ``depends_on`` chains
("nearly NeXus"); its geometry is then the flat-panel one from
``beam_center_x/y`` (px), ``detector_distance`` and the pixel size, with the
omega axis (1, 0, 0), as dxtbx reads these files.

Pixel data live in the datasets of ``/entry/data`` (``data_000001``, ... ,
usually external links to separate data files, bitshuffle/LZ4 compressed,
decoded through hdf5plugin). A missing data file is reported by name.
Pixels at the largest value of the unsigned data type (masked or gap pixels)
are returned as -1.
"""

from __future__ import annotations

import os

import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.models.scan import Scan

from .attenuation import sensor_fields
from .base import ImageFormat, ImageFormatError, check_exists, header_error
from .hdf5_frames import frame_reader
from .minicbf import flat_panel

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MCSTAS_TO_LAB = np.diag([-1.0, 1.0, -1.0])
_LENGTH_TO_MM = {
    "m": 1000.0,
    "mm": 1.0,
    "millimeter": 1.0,
    "millimetre": 1.0,
    "cm": 10.0,
    "um": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "nm": 1e-6,
    "meter": 1000.0,
    "metre": 1000.0,
}
_WAVELENGTH_TO_A = {"angstrom": 1.0, "a": 1.0, "nm": 10.0, "m": 1e10, "pm": 0.01}


def _h5py():
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle / LZ4 filters)

    return h5py


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return _text(v.ravel()[0]) if v.size else ""
    return str(v)


def _nx_class(obj) -> str:
    return _text(obj.attrs.get("NX_class", b""))


def _find(group, nx_class: str):
    for key in group:
        obj = group.get(key)
        if obj is not None and hasattr(obj, "keys") and _nx_class(obj) == nx_class:
            return obj
    return None


def _find_all(group, nx_class: str) -> list:
    return [
        group[k] for k in group if hasattr(group.get(k), "keys") and _nx_class(group[k]) == nx_class
    ]


def _mm(ds, value) -> np.ndarray:
    units = _text(ds.attrs.get("units", "mm")).strip().lower()
    return np.asarray(value, dtype=float) * _LENGTH_TO_MM.get(units, 1.0)


def _deg(ds, value) -> np.ndarray:
    units = _text(ds.attrs.get("units", "deg")).strip().lower()
    v = np.asarray(value, dtype=float)
    return np.rad2deg(v) if units.startswith("rad") else v


class _Chain:
    """A resolved ``depends_on`` chain: (dataset, values) innermost first."""

    def __init__(self, f, path: str):
        self.steps = []
        seen = set()
        while path and path != "." and path not in seen:
            seen.add(path)
            ds = f[path]
            self.steps.append(ds)
            path = self.depends_on(ds)

    @staticmethod
    def depends_on(ds) -> str:
        """Absolute path of the transformation ``ds`` depends on ('.' for none)."""
        nxt = _text(ds.attrs.get("depends_on", "."))
        if nxt and nxt != "." and not nxt.startswith("/"):
            nxt = ds.parent.name.rstrip("/") + "/" + nxt
        return nxt or "."

    @staticmethod
    def kind(ds) -> str:
        return _text(ds.attrs.get("transformation_type", "translation")).lower()

    @staticmethod
    def vector(ds) -> np.ndarray:
        return MCSTAS_TO_LAB @ np.asarray(ds.attrs.get("vector", [0, 0, 1]), dtype=float)

    @staticmethod
    def offset(ds) -> np.ndarray:
        off = ds.attrs.get("offset")
        if off is None:
            return np.zeros(3)
        units = _text(ds.attrs.get("offset_units", ds.attrs.get("units", "mm"))).strip().lower()
        return MCSTAS_TO_LAB @ (np.asarray(off, dtype=float) * _LENGTH_TO_MM.get(units, 1.0))

    def apply(self, p, frame: int = 0, rotate_only: bool = False) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        for ds in self.steps:
            value = np.atleast_1d(ds[()])
            v = value[min(frame, len(value) - 1)]
            if self.kind(ds) == "rotation":
                p = axis_angle_matrix(self.vector(ds), np.deg2rad(_deg(ds, v))) @ p
            elif not rotate_only:
                p = p + float(_mm(ds, v)) * self.vector(ds)
            if not rotate_only:
                p = p + self.offset(ds)
        return p


class NXmx(ImageFormat):
    name = "NXmx"
    description = "NeXus NXmx / Eiger HDF5 master"

    @classmethod
    def understand(cls, head: bytes) -> bool:
        return head.startswith(HDF5_MAGIC)

    # -- files -----------------------------------------------------------------
    @classmethod
    def _open(cls, path: str):
        check_exists(path)
        try:
            return _h5py().File(path, "r")
        except OSError as e:
            raise ImageFormatError(
                f"The HDF5 file {path} could not be opened ({e}); it may be "
                "truncated or still being written."
            ) from e

    @staticmethod
    def _entry(f, path):
        entry = _find(f, "NXentry") or (f["entry"] if "entry" in f else None)
        if entry is None:
            raise ImageFormatError(
                f"{path} is an HDF5 file without a NeXus entry (NXentry); "
                "gonio reads NeXus NXmx and Eiger master files."
            )
        return entry

    @classmethod
    def data_sources(cls, path: str) -> list[tuple[str, str, int]]:
        """(file, dataset path, frames) for each data block, checking linked files exist."""
        h5py = _h5py()
        folder = os.path.dirname(os.path.abspath(path))
        out = []
        with cls._open(path) as f:
            data = cls._entry(f, path).get("data")
            if data is None:
                raise ImageFormatError(f"{path} has no /entry/data group: no images to read.")
            for key in sorted(data):
                link = data.get(key, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    target = (
                        link.filename
                        if os.path.isabs(link.filename)
                        else os.path.join(folder, link.filename)
                    )
                    if not os.path.exists(target):
                        raise ImageFormatError(
                            f"The data file {target} named by the master file {path} "
                            f"(/entry/data/{key}) is missing. Eiger data are split into a master "
                            "file and data files; copy the data files next to the master file."
                        )
                    with h5py.File(target, "r") as g:
                        out.append((target, link.path, int(g[link.path].shape[0])))
                else:
                    obj = data.get(key)
                    if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
                        out.append((os.path.abspath(path), obj.name, int(obj.shape[0])))
        if not out:
            raise ImageFormatError(f"{path} lists no image data in /entry/data.")
        return out

    @classmethod
    def num_images(cls, path: str) -> int:
        return sum(n for _, _, n in cls.data_sources(path))

    # -- models ------------------------------------------------------------------
    @classmethod
    def read_models(cls, path: str):
        n_images = cls.num_images(path)
        with cls._open(path) as f:
            entry = cls._entry(f, path)
            instrument = _find(entry, "NXinstrument")
            detector = _find(instrument, "NXdetector") if instrument is not None else None
            if detector is None:
                raise header_error(path, "NeXus", "no NXdetector in the NXinstrument")
            beam = cls._beam(entry, instrument, path)
            modules = _find_all(detector, "NXdetector_module")
            if modules and "fast_pixel_direction" in modules[0]:
                panels = [cls._module_panel(f, detector, m, beam.wavelength) for m in modules]
            else:
                panels = [cls._flat_panel(detector, beam.wavelength, path)]
            goniometer, oscillation = cls._goniometer(f, entry)
        scan = Scan(image_range=(1, n_images), oscillation=oscillation)
        return beam, Detector(panels), goniometer, scan

    @staticmethod
    def _beam(entry, instrument, path) -> Beam:
        for group in (
            instrument.get("beam"),
            entry.get("sample/beam"),
            _find(instrument, "NXbeam"),
        ):
            if group is not None and "incident_wavelength" in group:
                ds = group["incident_wavelength"]
                units = _text(ds.attrs.get("units", "angstrom")).strip().lower()
                wl = float(np.atleast_1d(ds[()])[0]) * _WAVELENGTH_TO_A.get(units, 1.0)
                return Beam(direction=[0.0, 0.0, 1.0], wavelength=wl)
        raise header_error(path, "NeXus", "no incident_wavelength in the beam group")

    @staticmethod
    def _sensor(detector, wavelength) -> dict:
        material = _text(detector["sensor_material"][()]) if "sensor_material" in detector else ""
        material = "Si" if material.lower() in ("si", "silicon") else material
        thickness = (
            float(_mm(detector["sensor_thickness"], detector["sensor_thickness"][()]))
            if "sensor_thickness" in detector
            else 0.0
        )
        cutoff = None
        for key in ("saturation_value", "detectorSpecific/countrate_correction_count_cutoff"):
            if key in detector:
                cutoff = float(np.atleast_1d(detector[key][()])[0])
                break
        return {**sensor_fields(material, thickness, wavelength),
                "trusted_range": (-1.0, cutoff if cutoff else 2.0**31 - 1)}

    @classmethod
    def _module_panel(cls, f, detector, module, wavelength) -> Panel:
        fast_ds, slow_ds = module["fast_pixel_direction"], module["slow_pixel_direction"]
        frame = _Chain(f, _Chain.depends_on(fast_ds))  # the module's placement
        origin = frame.apply(_Chain.offset(fast_ds))
        fast = frame.apply(_Chain.vector(fast_ds), rotate_only=True)
        slow = _Chain(f, _Chain.depends_on(slow_ds)).apply(_Chain.vector(slow_ds), rotate_only=True)
        size = np.asarray(module["data_size"][()], dtype=int)
        origin_px = (
            np.asarray(module["data_origin"][()], dtype=int) if "data_origin" in module else (0, 0)
        )
        return Panel(
            fast_axis=fast,
            slow_axis=slow,
            origin=origin,
            image_size=(int(size[-1]), int(size[-2] if len(size) > 1 else 1)),
            pixel_size=(float(_mm(fast_ds, fast_ds[()])), float(_mm(slow_ds, slow_ds[()]))),
            raw_image_offset=(int(origin_px[-1]), int(origin_px[-2])),
            **cls._sensor(detector, wavelength),
        )

    @classmethod
    def _flat_panel(cls, detector, wavelength, path) -> Panel:
        try:
            px = (
                float(_mm(detector["x_pixel_size"], detector["x_pixel_size"][()])),
                float(_mm(detector["y_pixel_size"], detector["y_pixel_size"][()])),
            )
            centre = (
                float(detector["beam_center_x"][()]) * px[0],
                float(detector["beam_center_y"][()]) * px[1],
            )
            distance = float(_mm(detector["detector_distance"], detector["detector_distance"][()]))
            spec = detector["detectorSpecific"]
            size = (int(spec["x_pixels_in_detector"][()]), int(spec["y_pixels_in_detector"][()]))
        except KeyError as e:
            raise header_error(path, "Eiger", f"the detector group lacks {e}") from None
        return flat_panel(distance, centre, px, size, **cls._sensor(detector, wavelength))

    @staticmethod
    def _goniometer(f, entry):
        sample = entry.get("sample")
        if sample is not None and "depends_on" in sample:
            chain = _Chain(f, _text(sample["depends_on"][()]))
            rotations = [ds for ds in chain.steps if _Chain.kind(ds) == "rotation"]
            if rotations:
                values = [_deg(ds, np.atleast_1d(ds[()])) for ds in rotations]
                moving = [i for i, v in enumerate(values) if len(v) > 1 and np.ptp(v) > 0]
                k = moving[0] if moving else 0
                v = values[k]
                width = float(v[1] - v[0]) if len(v) > 1 else 0.0
                axes = [_Chain.vector(ds) for ds in rotations]
                if len(rotations) == 1:
                    return Goniometer(rotation_axis_datum=axes[0]), (float(v[0]), width)
                names = [ds.name.rsplit("/", 1)[-1] for ds in rotations]
                return Goniometer.multi_axis(axes, [float(x[0]) for x in values], names, k), (
                    float(v[0]),
                    width,
                )
        gon = entry.get("sample/goniometer")
        if gon is not None and "omega" in gon:
            omega = np.atleast_1d(gon["omega"][()]).astype(float)
            width = (
                float(np.atleast_1d(gon["omega_increment"][()])[0])
                if "omega_increment" in gon
                else (float(omega[1] - omega[0]) if len(omega) > 1 else 0.0)
            )
            return Goniometer(), (float(omega[0]), width)
        return Goniometer(), (0.0, 0.0)

    # -- pixels ----------------------------------------------------------------------
    @classmethod
    def read_pixels(cls, path: str, index_in_file: int = 0):
        sources = cls.data_sources(path)
        i = index_in_file
        for target, dset, n in sources:
            if i < n:
                with _h5py().File(target, "r") as g:
                    frame = frame_reader(g[dset])(i)
                blocks = cls._module_blocks(path)
                if len(blocks) > 1:
                    return tuple(cls.convert(frame[s0:s1, f0:f1])[0] for f0, s0, f1, s1 in blocks)
                return cls.convert(frame)
            i -= n
        raise ImageFormatError(
            f"{path} holds {sum(s[2] for s in sources)} images; image "
            f"{index_in_file + 1} does not exist."
        )

    @classmethod
    def _module_blocks(cls, path: str) -> list[tuple[int, int, int, int]]:
        """(f0, s0, f1, s1) of each NXdetector_module in the data array."""
        with cls._open(path) as f:
            instrument = _find(cls._entry(f, path), "NXinstrument")
            detector = _find(instrument, "NXdetector") if instrument is not None else None
            modules = _find_all(detector, "NXdetector_module") if detector is not None else []
            out = []
            for m in modules:
                if "data_origin" not in m or "data_size" not in m:
                    continue
                o = np.asarray(m["data_origin"][()], dtype=int)
                n = np.asarray(m["data_size"][()], dtype=int)
                out.append((int(o[-1]), int(o[-2]), int(o[-1] + n[-1]), int(o[-2] + n[-2])))
        return out

    @staticmethod
    def convert(frame: np.ndarray) -> tuple[np.ndarray, ...]:
        """int32 (or float32) pixels with the unsigned-type maximum (masked pixels) as -1.

        32-bit unsigned pixels (Eiger) are reinterpreted in place, not copied: the
        largest value's bits are those of -1 in 32-bit two's complement, and every
        other value is what a conversion gives (2 ms less per 1M-pixel frame)."""
        if frame.dtype.kind == "u" and frame.dtype.itemsize == 4 and frame.dtype.isnative:
            return (np.ascontiguousarray(frame.view(np.int32)),)
        if frame.dtype.kind == "u":
            bad = frame == np.iinfo(frame.dtype).max
            frame = frame.astype(np.int32)
            frame[bad] = -1
        elif frame.dtype.kind == "f":
            frame = frame.astype(np.float32)
        else:
            frame = frame.astype(np.int32)
        return (frame,)
