"""Rotation scan: images, oscillation and times (dxtbx Scan conventions).

Image numbers run from ``image_range[0]`` to ``image_range[1]`` inclusive.
Frame ("array index") coordinates z, as in ``xyzobs.px.value``, count from
0 at the start of image 1, so image i spans z in [i-1, i). The rotation
angle at frame coordinate z is

    phi(z) = oscillation[0] + (z - (image_range[0] - 1)) * oscillation[1]   (deg)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Scan:
    image_range: tuple[int, int] = (1, 1)
    oscillation: tuple[float, float] = (0.0, 0.0)  # (start, width) deg
    exposure_time: np.ndarray = field(default_factory=lambda: np.zeros(0))
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    batch_offset: int = 0
    valid_image_ranges: dict = field(default_factory=dict)

    def __post_init__(self):
        self.image_range = (int(self.image_range[0]), int(self.image_range[1]))
        self.oscillation = (float(self.oscillation[0]), float(self.oscillation[1]))
        n = self.num_images
        self.exposure_time = np.resize(np.asarray(self.exposure_time, dtype=float), n) \
            if len(np.atleast_1d(self.exposure_time)) else np.zeros(n)
        self.epochs = np.resize(np.asarray(self.epochs, dtype=float), n) \
            if len(np.atleast_1d(self.epochs)) else np.zeros(n)

    @property
    def num_images(self) -> int:
        return self.image_range[1] - self.image_range[0] + 1

    @property
    def array_range(self) -> tuple[int, int]:
        return (self.image_range[0] - 1, self.image_range[1])

    @property
    def is_still(self) -> bool:
        return self.oscillation[1] == 0.0

    @property
    def oscillation_range(self) -> tuple[float, float]:
        """(start, end) deg of the whole scan."""
        s, w = self.oscillation
        return (s, s + w * self.num_images)

    def angle_from_frame(self, z) -> np.ndarray:
        """phi (deg) at frame coordinate(s) z."""
        return self.oscillation[0] + (np.asarray(z, dtype=float) - self.array_range[0]) * self.oscillation[1]

    def frame_from_angle(self, phi_deg) -> np.ndarray:
        """frame coordinate z at phi (deg)."""
        return self.array_range[0] + (np.asarray(phi_deg, dtype=float) - self.oscillation[0]) / self.oscillation[1]

    def replace(self, **kw) -> Scan:
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return {
            "image_range": list(self.image_range),
            "batch_offset": int(self.batch_offset),
            "oscillation": list(self.oscillation),
            "exposure_time": [float(x) for x in self.exposure_time],
            "epochs": [float(x) for x in self.epochs],
            "valid_image_ranges": dict(self.valid_image_ranges),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scan:
        props = d.get("properties", {})
        osc = d.get("oscillation")
        if osc is None and "oscillation" in props:
            o = props["oscillation"]
            osc = (o[0], (o[1] - o[0]) if len(o) > 1 else d.get("oscillation_width", 0.0))
        return cls(
            image_range=tuple(d["image_range"]),
            oscillation=tuple(osc or (0.0, 0.0)),
            exposure_time=d.get("exposure_time", props.get("exposure_time", [])),
            epochs=d.get("epochs", props.get("epochs", [])),
            batch_offset=d.get("batch_offset", 0),
            valid_image_ranges=d.get("valid_image_ranges", {}),
        )
