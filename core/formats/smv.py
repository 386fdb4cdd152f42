"""SMV images (ADSC and relatives): a ``{ KEY=value; ... }`` text header of
HEADER_BYTES bytes, then SIZE1 x SIZE2 pixels (SIZE1 fastest) of TYPE
(unsigned_short, usually) in BYTE_ORDER.

Beam-centre conventions differ between writers; gonio follows dxtbx:

- ADSC (and generic SMV): BEAM_CENTER_X / _Y are in mm in the Mosflm
  convention, i.e. (slow, fast): the panel's beam centre in (fast, slow) mm
  is (BEAM_CENTER_Y, BEAM_CENTER_X). IMAGE_PEDESTAL is subtracted from the
  pixels and the trusted range is (pedestal - 1, 65535 - pedestal).
- Timepix at Stockholm University, 516 x 516 (BEAMLINE=TIMEPIX_SU, as
  written by the RED software, Wan et al. 2013, J. Appl. Cryst. 46, 1863):
  BEAM_CENTER_X / _Y are pixels along (fast, slow); one 0.3 mm silicon
  panel, trusted (-1, 65535), an unpolarised beam (fraction 0.5) and the
  beamline's rotation axis (0.7826, -0.6226, 0).
- James Holton's simulators (BEAMLINE=fake): BEAM_CENTER_X / _Y in mm in
  the ADXV convention (from the first pixel, y up), i.e. (fast, slow) mm =
  (X + pixel, height - Y + pixel); pedestal ADC_OFFSET (default 1), not subtracted, and
  trusted (pedestal - 1, 65535 - pedestal): a pixel recording no photon (value = the
  pedestal) is valid. (dxtbx takes 1 - pedestal as the minimum, which is the same for
  the usual ADC_OFFSET=1 but marks every zero-count pixel of an ADC_OFFSET=0 image
  invalid.)

All panels: fast axis (1, 0, 0), slow (0, -1, 0), DISTANCE (mm) along -z.
"""

from __future__ import annotations

import calendar
import os
import re
import time

import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.detector import SIMPLE, Detector
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.scan import Scan

from .base import ImageFormat, compression_of, header_error, read_all, read_head, truncated
from .minicbf import flat_panel

_TYPES = {
    "unsigned_short": "u2",
    "signed_short": "i2",
    "unsigned_long": "u4",
    "signed_long": "i4",
    "unsigned_int": "u4",
    "signed_int": "i4",
    "float": "f4",
}
TIMEPIX_AXIS = (0.7826, -0.6226, 0.0)


def smv_header(path: str, content: bytes | None = None) -> dict[str, str]:
    """The header items of an SMV file, from ``content`` (the file's bytes) when given."""
    head = content[:512] if content is not None else read_head(path, 512)
    m = re.search(rb"HEADER_BYTES\s*=\s*(\d+)", head)
    if not m:
        raise header_error(path, "SMV", "no HEADER_BYTES")
    n = int(m.group(1))
    if content is None and n > len(head):
        head = read_head(path, n)
    text = (content if content is not None else head)[:n].decode("latin-1")
    end = text.find("}")
    out = {}
    for m in re.finditer(r"([A-Za-z0-9_]+)\s*=\s*([^;]*);", text[: end if end > 0 else None]):
        out[m.group(1).upper()] = m.group(2).strip()
    return out


def _f(h: dict, key: str, path: str, default: float | None = None) -> float:
    try:
        return float(h[key])
    except (KeyError, ValueError):
        if default is not None:
            return default
        raise header_error(path, "SMV", f"the {key} item is missing or unreadable") from None


def _epoch(date: str) -> float:
    date = date.replace("PST", "").replace("PDT", "").strip()
    for fmt in ("%a %b %d %H:%M:%S %Y", "%a %b %d %H:%M:%S %Z %Y"):
        try:
            return float(calendar.timegm(time.strptime(" ".join(date.split()), fmt)))
        except ValueError:
            pass
    return 0.0


class SMV(ImageFormat):
    name = "SMV"
    description = "SMV (ADSC, Timepix, simulated)"

    @classmethod
    def understand(cls, head: bytes) -> bool:
        return (
            head.lstrip().startswith(b"{")
            and b"HEADER_BYTES" in head[:64]
            and b"SIZE1" in head
            and b"TYPE" in head
        )

    @staticmethod
    def flavour(h: dict) -> str:
        beamline = h.get("BEAMLINE", "").upper()
        if beamline == "TIMEPIX_SU" and h.get("SIZE1") == "516" and h.get("SIZE2") == "516":
            return "timepix516"
        if h.get("BEAMLINE") == "fake":
            return "jhsim"
        return "adsc"

    @classmethod
    def read_models(cls, path: str):
        h = smv_header(path)
        cls._check_size(path, h)
        nx, ny = int(_f(h, "SIZE1", path)), int(_f(h, "SIZE2", path))
        px = _f(h, "PIXEL_SIZE", path)
        distance = _f(h, "DISTANCE", path)
        wavelength = _f(h, "WAVELENGTH", path)
        bx, by = _f(h, "BEAM_CENTER_X", path), _f(h, "BEAM_CENTER_Y", path)
        kind = cls.flavour(h)
        beam = Beam(direction=[0.0, 0.0, 1.0], wavelength=wavelength)
        goniometer = Goniometer()
        if kind == "timepix516":
            panel = flat_panel(
                distance,
                (bx * px, by * px),
                (px, px),
                (nx, ny),
                trusted_range=(-1.0, 65535.0),
                thickness=0.3,
                material="Si",
                px_mm_strategy=SIMPLE,
                type="SENSOR_PAD",
            )
            beam = beam.replace(polarization_fraction=0.5)
            goniometer = Goniometer(rotation_axis_datum=TIMEPIX_AXIS)
        elif kind == "jhsim":
            pedestal = _f(h, "ADC_OFFSET", path, 1.0)
            centre = (bx + px, ny * px - by + px)
            panel = flat_panel(
                distance,
                centre,
                (px, px),
                (nx, ny),
                trusted_range=(pedestal - 1.0, 65535.0 - pedestal),
                pedestal=pedestal,
                type="SENSOR_PAD" if px == 0.172 else "SENSOR_CCD",
            )
        else:
            pedestal = _f(h, "IMAGE_PEDESTAL", path, 0.0)
            panel = flat_panel(
                distance,
                (by, bx),
                (px, px),
                (nx, ny),
                trusted_range=(pedestal - 1.0, 65535.0 - pedestal),
                type="SENSOR_CCD",
            )
        start = _f(h, "OSC_START", path, _f(h, "PHI", path, 0.0))
        scan = Scan(
            image_range=(1, 1),
            oscillation=(start, _f(h, "OSC_RANGE", path, 0.0)),
            exposure_time=[_f(h, "TIME", path, 0.0)],
            epochs=[_epoch(h.get("DATE", ""))],
        )
        return beam, Detector([panel]), goniometer, scan

    @classmethod
    def _check_size(cls, path: str, h: dict) -> None:
        """For an uncompressed file: are all the pixels the header promises there?"""
        if compression_of(path):
            return
        need = cls._data_bytes(h, path) + int(_f(h, "HEADER_BYTES", path))
        have = os.path.getsize(path)
        if have < need:
            raise truncated(path, f"{have} bytes where the header promises {need}")

    @staticmethod
    def _dtype(h: dict, path: str) -> np.dtype:
        t = _TYPES.get(h.get("TYPE", "unsigned_short").lower())
        if t is None:
            raise header_error(path, "SMV", f"pixel TYPE {h.get('TYPE')!r} is not supported")
        order = "<" if h.get("BYTE_ORDER", "little_endian").lower().startswith("little") else ">"
        return np.dtype(order + t)

    @classmethod
    def _data_bytes(cls, h: dict, path: str) -> int:
        return int(_f(h, "SIZE1", path)) * int(_f(h, "SIZE2", path)) * cls._dtype(h, path).itemsize

    @classmethod
    def read_pixels(cls, path: str, index_in_file: int = 0):
        raw = read_all(path)  # one read: the header is parsed from the same bytes
        h = smv_header(path, raw)
        nx, ny = int(_f(h, "SIZE1", path)), int(_f(h, "SIZE2", path))
        start = int(_f(h, "HEADER_BYTES", path))
        dtype = cls._dtype(h, path)
        if len(raw) < start + nx * ny * dtype.itemsize:
            raise truncated(
                path, f"{len(raw) - start} bytes of pixels, {nx * ny * dtype.itemsize} expected"
            )
        data = np.frombuffer(raw, dtype=dtype, count=nx * ny, offset=start).reshape(ny, nx)
        data = data.astype(np.float32 if dtype.kind == "f" else np.int32)
        if cls.flavour(h) == "adsc" and "IMAGE_PEDESTAL" in h:
            data -= int(_f(h, "IMAGE_PEDESTAL", path))
        return (data,)
