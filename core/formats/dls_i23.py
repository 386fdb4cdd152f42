"""The curved Pilatus 12M and kappa goniometer of Diamond beamline I23.

The P12M-DLS (serial number 120-0100) is 24 rows of 5 Pilatus modules on a
cylinder of radius 250 mm about the rotation axis. Its miniCBF files hold
all rows as one 2463 x 5071 array (rows of 195 pixels, 17-pixel gaps).
gonio models each row as a flat panel, with the layout dxtbx uses (from the
detector blueprints): row j is tilted about x by
(-12.2 + 7.903 / 2 + j (7.903 + 0.441)) deg, its origin 250 mm along its
normal, shifted by -184.9 mm along fast and -16.8 mm along slow, in a frame
with x = (-1, 0, 0), y = (0, 1, 0) placed at -distance along z and moved by
the difference between the header beam centre and the nominal (1075, 2594) px.

The goniometer (since April 2016) is a kappa: phi (1, 0, 0), kappa
(cos 50, -sin 50, 0), omega (1, 0, 0), with omega scanning.
"""

from __future__ import annotations

import numpy as np

from gonio.core.models.detector import Detector, Panel
from gonio.core.models.goniometer import Goniometer

SERIAL = "120-0100"
ROWS, ROW_PIXELS, ROW_GAP, WIDTH = 24, 195, 17, 2463
_KAPPA_SINCE = 1459468800  # 2016-04-01, when the kappa replaced a reversed single axis


def is_dls_i23_p12m(h: dict) -> bool:
    return "PILATUS" in h.get("Detector", "").upper() and SERIAL in h.get("Detector", "")


def detector(h_beam_xy, distance_mm, panel_kw: dict) -> Detector:
    """The 24 row panels (see module docstring); ``panel_kw``: sensor keywords."""
    X, Y = np.array([-1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    N = np.cross(X, Y)
    shift = 0.172 * (np.array([1075.0, 2594.0]) - np.asarray(h_beam_xy))
    root = -distance_mm * np.array([0.0, 0.0, 1.0]) + shift[0] * X + shift[1] * Y

    def lab(v):
        return v[0] * X + v[1] * Y + v[2] * N

    panels = []
    for j in range(ROWS):
        a = np.deg2rad(-12.2 + 0.5 * 7.903 + j * (7.903 + 0.441))
        fast, slow = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.sin(a), np.cos(a)])
        origin = 250.0 * np.cross(fast, slow) - 184.9 * fast - 16.8 * slow
        panels.append(
            Panel(
                fast_axis=lab(fast),
                slow_axis=lab(slow),
                origin=root + lab(origin),
                image_size=(WIDTH, ROW_PIXELS),
                pixel_size=(0.172, 0.172),
                trusted_range=(-1.0, 1e6),
                name=f"row-{j:02d}",
                raw_image_offset=(0, j * (ROW_PIXELS + ROW_GAP)),
                **panel_kw,
            )
        )
    return Detector(panels)


def split_rows(data: np.ndarray) -> tuple[np.ndarray, ...]:
    step = ROW_PIXELS + ROW_GAP
    return tuple(data[j * step : j * step + ROW_PIXELS] for j in range(ROWS))


def goniometer(h: dict, epoch: float, number) -> Goniometer:
    if epoch and epoch < _KAPPA_SINCE:
        return Goniometer(rotation_axis_datum=(-1.0, 0.0, 0.0))
    c, s = np.cos(np.deg2rad(50.0)), np.sin(np.deg2rad(50.0))
    angles = [number(h, k) if k in h else 0.0 for k in ("Phi", "Kappa", "Omega")]
    return Goniometer.multi_axis(
        [(1.0, 0.0, 0.0), (c, -s, 0.0), (1.0, 0.0, 0.0)], angles, ["PHI", "KAPPA", "OMEGA"], 2
    )
