"""Detector models for simulation: Pilatus-, Eiger-, Timepix-like and a 2 x 2 multi-panel.

Single panels sit normal to the beam with fast = +x and slow = -y (the
dxtbx convention for Pilatus/ADSC images), so a beam centre (fast, slow) in
px and a distance fully describe them. Module gaps follow the real layouts:
Pilatus modules of 487 x 195 px separated by 7 (fast) and 17 (slow) px;
Eiger modules of 1030 x 514 px separated by 10 and 37 px. A Timepix quad
has no gaps here. Overloads: Pilatus 1048500 counts (PILATUS_1.2
``Count_cutoff``), Eiger 2^24 - 1 (counting depth), Timepix 65535 (SMV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.detector import PARALLAX, SIMPLE, Detector, Panel

KIND = {
    # pixel (mm), module (fast, slow) px, gap (fast, slow) px, overload, sensor
    "pilatus": dict(pixel=0.172, module=(487, 195), gap=(7, 17), overload=1048500,
                    sensor=("Si", 0.45), type="SENSOR_PAD"),
    "eiger": dict(pixel=0.075, module=(1030, 514), gap=(10, 37), overload=16777215,
                  sensor=("Si", 0.45), type="SENSOR_PAD"),
    "timepix": dict(pixel=0.055, module=None, gap=None, overload=65535,
                    sensor=("Si", 0.3), type="SENSOR_PAD"),
    "multipanel": dict(pixel=0.172, module=None, gap=None, overload=1048500,
                       sensor=("Si", 0.45), type="SENSOR_PAD"),
}


@dataclass
class DetectorSpec:
    kind: str
    detector: Detector
    gap_masks: list  # per panel, bool (slow, fast) True where a gap pixel
    overload: float


def gap_mask(kind: str, image_size: tuple[int, int], gaps: bool) -> np.ndarray:
    """Boolean (slow, fast) array, True on inter-module gap pixels."""
    nf, ns = image_size
    m = np.zeros((ns, nf), dtype=bool)
    spec = KIND[kind]
    if not gaps or spec["module"] is None:
        return m
    (mf, ms), (gf, gs) = spec["module"], spec["gap"]
    f = np.arange(nf) % (mf + gf) >= mf
    s = np.arange(ns) % (ms + gs) >= ms
    m[:, f] = True
    m[s, :] = True
    return m


def mask_rectangles(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Gap mask as dxtbx-style untrusted rectangles (f0, f1, s0, s1), px, end exclusive."""
    rects = []
    ns, nf = mask.shape
    full_cols = np.flatnonzero(mask.all(axis=0))
    full_rows = np.flatnonzero(mask.all(axis=1))
    for run in _runs(full_cols):
        rects.append((int(run[0]), int(run[-1]) + 1, 0, ns))
    for run in _runs(full_rows):
        rects.append((0, nf, int(run[0]), int(run[-1]) + 1))
    return rects


def _runs(idx: np.ndarray) -> list[np.ndarray]:
    if len(idx) == 0:
        return []
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)


def build_detector(kind: str, image_size, pixel_size, distance: float, beam_centre,
                   gaps: bool, overload, mu: float = 0.0) -> DetectorSpec:
    """A detector normal to the beam (-z) at ``distance`` mm, beam at ``beam_centre`` px.

    ``mu`` (1/mm) > 0 gives the sensor the parallax-corrected pixel <-> mm mapping (as
    importers set it for a silicon sensor whose thickness the header states); 0 gives a
    sensor of unknown thickness and the simple mapping (SMV headers state no sensor).
    """
    spec = KIND[kind]
    px = float(pixel_size or spec["pixel"])
    over = float(overload or spec["overload"])
    nf, ns = (int(v) for v in image_size)
    material, thickness = spec["sensor"] if mu > 0 else ("", 0.0)
    common = dict(pixel_size=(px, px), trusted_range=(-1.0, over), thickness=thickness,
                  material=material, mu=mu, px_mm_strategy=PARALLAX if mu > 0 else SIMPLE,
                  type=spec["type"])
    fast, slow = np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    if kind != "multipanel":
        bc = beam_centre if beam_centre is not None else (nf / 2.0, ns / 2.0)
        origin = np.array([-bc[0] * px, bc[1] * px, -distance])
        mask = gap_mask(kind, (nf, ns), gaps)
        panel = Panel(fast_axis=fast, slow_axis=slow, origin=origin, image_size=(nf, ns),
                      mask=mask_rectangles(mask), name="Panel", **common)
        return DetectorSpec(kind, Detector([panel]), [mask], over)
    # 2 x 2 coplanar panels of (nf, ns) px each, 10 px apart, beam in the middle gap
    gap_px = 10
    bc = beam_centre if beam_centre is not None else (nf + gap_px / 2.0, ns + gap_px / 2.0)
    panels, masks = [], []
    for j in range(2):
        for i in range(2):
            off_f, off_s = i * (nf + gap_px), j * (ns + gap_px)
            origin = np.array([(off_f - bc[0]) * px, (bc[1] - off_s) * px, -distance])
            panels.append(Panel(fast_axis=fast, slow_axis=slow, origin=origin,
                                image_size=(nf, ns), name=f"panel_{2 * j + i}", **common))
            masks.append(np.zeros((ns, nf), dtype=bool))
    return DetectorSpec(kind, Detector(panels), masks, over)
