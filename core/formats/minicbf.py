"""Dectris miniCBF images (Pilatus, Eiger converted to CBF).

The text header follows the PILATUS_1.2 convention: ``# Key value`` lines
(``# Pixel_size 172e-6 m x 172e-6 m``, ``# Silicon sensor, thickness
0.000450 m``, ``# Wavelength 0.97625 A``, ``# Detector_distance 0.29147 m``,
``# Beam_xy (1229.30, 1200.48) pixels``, ``# Start_angle``,
``# Angle_increment``, ``# Count_cutoff``, ...).

Geometry as dxtbx builds it for a miniCBF: one flat panel with fast axis
(1, 0, 0) and slow axis (0, -1, 0), the sample-detector distance along -z,
and the beam centre ``Beam_xy`` (fast, slow) in pixels from the outer corner
of the first pixel. A silicon sensor gets the parallax correction with mu
from the wavelength (:mod:`.attenuation`); the trusted range is
(-1, Count_cutoff): pixels in module gaps are written negative and are
untrusted, and the gaps are masked. A single rotation axis (1, 0, 0).
"""

from __future__ import annotations

import calendar
import re
import time

import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.detector import SIMPLE, Detector, Panel
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.scan import Scan

from . import dls_i23
from .attenuation import sensor_fields
from .base import ImageFormat, header_error
from .cbf_binary import binary_layout, check_binary_complete, decode_pixels, read_cbf_header
from .module_gaps import detector_family, module_gap_mask

_NUM = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"


def pilatus_header(text: str) -> dict[str, str]:
    """The ``# Key value`` lines of a PILATUS_1.2 header as {key: rest of line}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            continue
        body = line[1:].strip()
        if re.fullmatch(r"\d{4}[-/]\d\d[-/]\d\dT?\s*\d\d:\d\d:\d\d(\.\d+)?", body):
            out["timestamp"] = body
            continue
        parts = body.replace("=", " ").replace(":", " ", 1).split(None, 1)
        if parts:
            out[parts[0].rstrip(",:")] = parts[1] if len(parts) > 1 else ""
    return out


def _number(h: dict, key: str, path: str, index: int = 0) -> float:
    try:
        return float(re.findall(_NUM, h[key])[index])
    except (KeyError, IndexError, ValueError):
        raise header_error(
            path, "miniCBF", f"the '# {key}' line is missing or unreadable"
        ) from None


def pilatus_epoch(stamp: str) -> float:
    """Seconds since 1970 (UTC) of a Pilatus header time stamp; 0 if unreadable."""
    stamp = stamp.replace("/", "-").replace(" ", "T")
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", stamp)
    if not m:
        return 0.0
    t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return t + float(m.group(2) or 0.0)


def sensor_from_header(h: dict, path: str, wavelength: float) -> dict:
    """Panel keywords for the sensor: material, thickness (mm), mu (1/mm), strategy."""
    for key, material in (("Silicon", "Si"), ("CdTe", "CdTe")):
        if key in h:
            return sensor_fields(material, _number(h, key, path) * 1000.0, wavelength)
    return {
        "material": "",
        "thickness": 0.0,
        "mu": 0.0,
        "px_mm_strategy": SIMPLE,
        "type": "SENSOR_PAD",
    }


def flat_panel(distance_mm, beam_centre_mm, pixel_mm, image_size, **kw) -> Panel:
    """A panel with fast +x, slow -y, the beam centre (fast, slow mm) on the -z axis."""
    fast, slow = np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    origin = (
        np.array([0.0, 0.0, -distance_mm]) - beam_centre_mm[0] * fast - beam_centre_mm[1] * slow
    )
    return Panel(
        fast_axis=fast,
        slow_axis=slow,
        origin=origin,
        image_size=image_size,
        pixel_size=pixel_mm,
        **kw,
    )


class MiniCBF(ImageFormat):
    name = "miniCBF"
    description = "Pilatus/Eiger miniCBF (PILATUS_1.2 header)"

    @classmethod
    def understand(cls, head: bytes) -> bool:
        if not head.startswith(b"###CBF") and b"_array_data.header_convention" not in head[:4096]:
            return False
        if b"\n_axis.id" in head or b"_axis.vector[1]" in head:
            return False  # a full imgCIF header: FullCBF reads it
        return b"# Pixel_size" in head and b"Beam_xy" in head

    @classmethod
    def read_models(cls, path: str):
        text, offset = read_cbf_header(path)
        check_binary_complete(path, text, offset)
        h = pilatus_header(text)
        lay = binary_layout(path, text)
        wavelength = _number(h, "Wavelength", path)
        px = (
            _number(h, "Pixel_size", path, 0) * 1000.0,
            _number(h, "Pixel_size", path, 1) * 1000.0,
        )
        bx, by = _number(h, "Beam_xy", path, 0), _number(h, "Beam_xy", path, 1)
        image_size = (lay["fast"], lay["slow"])
        distance = _number(h, "Detector_distance", path) * 1000.0
        sensor = sensor_from_header(h, path, wavelength)
        beam = Beam(
            direction=[0.0, 0.0, 1.0],
            wavelength=wavelength,
            flux=_optional(h, "Flux"),
            transmission=_optional(h, "Transmission", 1.0),
        )
        exposure = _optional(h, "Exposure_period", _optional(h, "Exposure_time"))
        epoch = pilatus_epoch(h.get("timestamp", ""))
        scan = Scan(
            image_range=(1, 1),
            oscillation=(_number(h, "Start_angle", path), _number(h, "Angle_increment", path)),
            exposure_time=[exposure],
            epochs=[epoch],
        )
        if dls_i23.is_dls_i23_p12m(h):
            return (
                beam,
                dls_i23.detector((bx, by), distance, sensor),
                dls_i23.goniometer(h, epoch, lambda d, k: _number(d, k, path)),
                scan,
            )
        family = detector_family(image_size)
        if "EIGER" in h.get("Detector", "").upper():
            family = "Eiger2" if detector_family(image_size) == "Eiger2" else "Eiger"
        panel = flat_panel(
            distance,
            (bx * px[0], by * px[1]),
            px,
            image_size,
            trusted_range=(-1.0, _number(h, "Count_cutoff", path)),
            mask=module_gap_mask(image_size, family) if family else [],
            **sensor,
        )
        return beam, Detector([panel]), Goniometer(), scan

    @classmethod
    def read_pixels(cls, path: str, index_in_file: int = 0):
        data = decode_pixels(path)
        if data.shape == (5071, dls_i23.WIDTH) and dls_i23.is_dls_i23_p12m(
            pilatus_header(read_cbf_header(path)[0])
        ):
            return dls_i23.split_rows(data)
        return (data,)


def _optional(h: dict, key: str, default: float = 0.0) -> float:
    m = re.search(_NUM, h.get(key, ""))
    return float(m.group(1)) if m else default
