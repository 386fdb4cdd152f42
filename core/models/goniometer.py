"""Goniometer (dxtbx conventions).

The lab-frame position of a reciprocal-lattice point at scan angle phi is

    r_lab = S . R(rotation_axis_datum, phi) . F . UB . h

with F the fixed rotation (axes inside the scan axis), S the setting
rotation (axes outside it) and R a right-handed rotation about the datum
axis. The effective rotation axis in the lab frame is S . datum. For a
multi-axis goniometer, ``axes[0]`` is the innermost axis (next to the
crystal); F = R_{k-1}...R_0 and S = R_{n-1}...R_{k+1} for scan axis k.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .rotation import axis_angle_matrix


@dataclass
class Goniometer:
    rotation_axis_datum: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    fixed_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    setting_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    # multi-axis description (empty for a single-axis goniometer)
    axes: list = field(default_factory=list)
    angles: list = field(default_factory=list)  # deg
    names: list = field(default_factory=list)
    scan_axis: int = 0

    def __post_init__(self):
        self.rotation_axis_datum = np.asarray(self.rotation_axis_datum, dtype=float).reshape(3)
        self.fixed_rotation = np.asarray(self.fixed_rotation, dtype=float).reshape(3, 3)
        self.setting_rotation = np.asarray(self.setting_rotation, dtype=float).reshape(3, 3)
        self.axes = [np.asarray(a, dtype=float) for a in self.axes]
        self.angles = [float(a) for a in self.angles]

    @classmethod
    def multi_axis(cls, axes, angles, names, scan_axis: int) -> Goniometer:
        """Build F, S and the datum axis from an axis stack (innermost first)."""
        F = np.eye(3)
        for i in range(scan_axis):
            F = axis_angle_matrix(axes[i], np.deg2rad(angles[i])) @ F
        S = np.eye(3)
        for i in range(scan_axis + 1, len(axes)):
            S = axis_angle_matrix(axes[i], np.deg2rad(angles[i])) @ S
        return cls(np.asarray(axes[scan_axis], dtype=float), F, S, list(axes), list(angles),
                   list(names), scan_axis)

    @property
    def is_multi_axis(self) -> bool:
        return len(self.axes) > 0

    @property
    def rotation_axis(self) -> np.ndarray:
        """The scan axis in the lab frame (S . datum), unit length."""
        a = self.setting_rotation @ self.rotation_axis_datum
        return a / np.linalg.norm(a)

    def replace(self, **kw) -> Goniometer:
        return replace(self, **kw)

    def with_rotation_axis(self, axis) -> Goniometer:
        """A copy whose lab-frame scan axis is ``axis`` (direction and sense)."""
        axis = np.asarray(axis, dtype=float)
        axis = axis / np.linalg.norm(axis)
        datum = np.linalg.solve(self.setting_rotation, axis)
        if self.is_multi_axis:
            axes = list(self.axes)
            axes[self.scan_axis] = datum
            return Goniometer.multi_axis(axes, self.angles, self.names, self.scan_axis)
        return replace(self, rotation_axis_datum=datum)

    def rotation_matrices(self, phi_rad) -> np.ndarray:
        """S . R(datum, phi) . F for each phi: shape (..., 3, 3)."""
        R = axis_angle_matrix(self.rotation_axis_datum, phi_rad)
        return self.setting_rotation @ R @ self.fixed_rotation

    def to_dict(self) -> dict:
        if self.is_multi_axis:
            return {
                "axes": [[float(v) for v in a] for a in self.axes],
                "angles": list(self.angles),
                "names": list(self.names),
                "scan_axis": int(self.scan_axis),
            }
        return {
            "rotation_axis": [float(x) for x in self.rotation_axis_datum],
            "fixed_rotation": [float(x) for x in self.fixed_rotation.ravel()],
            "setting_rotation": [float(x) for x in self.setting_rotation.ravel()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Goniometer:
        if "axes" in d:
            return cls.multi_axis(d["axes"], d["angles"], d.get("names", [""] * len(d["axes"])),
                                  d.get("scan_axis", 0))
        return cls(
            rotation_axis_datum=d["rotation_axis"],
            fixed_rotation=d.get("fixed_rotation", np.eye(3).ravel()),
            setting_rotation=d.get("setting_rotation", np.eye(3).ravel()),
        )
