"""The incident beam (dxtbx Beam conventions).

``direction`` is the unit vector from the sample towards the source, as in
dxtbx, so the incident wave vector is ``s0 = -direction / wavelength``
(|s0| = 1/wavelength, in 1/A).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Beam:
    """Monochromatic beam: direction towards the source, wavelength in A."""

    direction: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    wavelength: float = 1.0
    divergence: float = 0.0
    sigma_divergence: float = 0.0
    polarization_normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    polarization_fraction: float = 0.999
    flux: float = 0.0
    transmission: float = 1.0

    def __post_init__(self):
        d = np.asarray(self.direction, dtype=float)
        self.direction = d / np.linalg.norm(d)
        self.polarization_normal = np.asarray(self.polarization_normal, dtype=float)
        self.wavelength = float(self.wavelength)

    @property
    def s0(self) -> np.ndarray:
        """Incident beam vector, length 1/wavelength (1/A)."""
        return -self.direction / self.wavelength

    @property
    def unit_s0(self) -> np.ndarray:
        return -self.direction

    @classmethod
    def from_s0(cls, s0, **kw) -> Beam:
        s0 = np.asarray(s0, dtype=float)
        return cls(direction=-s0 / np.linalg.norm(s0), wavelength=1.0 / np.linalg.norm(s0), **kw)

    def replace(self, **kw) -> Beam:
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return {
            "direction": [float(x) for x in self.direction],
            "wavelength": self.wavelength,
            "divergence": float(self.divergence),
            "sigma_divergence": float(self.sigma_divergence),
            "polarization_normal": [float(x) for x in self.polarization_normal],
            "polarization_fraction": float(self.polarization_fraction),
            "flux": float(self.flux),
            "transmission": float(self.transmission),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Beam:
        return cls(
            direction=d["direction"],
            wavelength=d["wavelength"],
            divergence=d.get("divergence", 0.0),
            sigma_divergence=d.get("sigma_divergence", 0.0),
            polarization_normal=d.get("polarization_normal", [0.0, 1.0, 0.0]),
            polarization_fraction=d.get("polarization_fraction", 0.999),
            flux=d.get("flux", 0.0),
            transmission=d.get("transmission", 1.0),
        )
