"""Detector panels in the dxtbx laboratory frame.

A panel is a plane: a lab-frame point ``origin`` (mm, the outer corner of
pixel (0, 0)) and unit vectors ``fast_axis`` and ``slow_axis``. A point
(x, y) in mm on the panel sits at ``origin + x * fast + y * slow``.
Pixel coordinates are (fast, slow) with the centre of pixel (i, j) at
(i + 0.5, j + 0.5).

Pixel <-> mm conversion is either the simple scaling (``SimplePxMmStrategy``)
or includes the parallax correction for a sensor of thickness t0 (mm) and
linear attenuation coefficient mu (1/mm), as dxtbx's
``ParallaxCorrectedPxMmStrategy``: a ray entering the sensor obliquely is
absorbed, on average, some depth into it, so the observed spot lies further
out than the point where the ray meets the front face. The mean absorption
depth along the ray is

    o = 1/mu - (t0/cos(t) + 1/mu) exp(-mu t0 / cos(t)),

with t the angle between the ray and the panel normal, and the in-plane
shift is o times the ray's components along fast and slow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .vectors import norms3

SIMPLE = "SimplePxMmStrategy"
PARALLAX = "ParallaxCorrectedPxMmStrategy"


def _vec(v) -> np.ndarray:
    return np.asarray(v, dtype=float).reshape(3)


@dataclass
class Panel:
    """One flat detector module (dxtbx Panel)."""

    fast_axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    slow_axis: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0]))
    origin: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, -100.0]))
    image_size: tuple[int, int] = (1024, 1024)  # (fast, slow) px
    pixel_size: tuple[float, float] = (0.1, 0.1)  # (fast, slow) mm
    trusted_range: tuple[float, float] = (0.0, 65535.0)  # counts; DIALS: min is invalid
    thickness: float = 0.0  # mm
    material: str = ""
    mu: float = 0.0  # 1/mm
    px_mm_strategy: str = SIMPLE
    name: str = "Panel"
    type: str = "SENSOR_UNKNOWN"
    identifier: str = ""
    mask: list = field(default_factory=list)  # [(f0, s0, f1, s1), ...] untrusted rectangles, px, end exclusive (DIALS order)
    gain: float = 1.0
    pedestal: float = 0.0
    raw_image_offset: tuple[int, int] = (0, 0)

    def __post_init__(self):
        self.fast_axis = _vec(self.fast_axis)
        self.slow_axis = _vec(self.slow_axis)
        self.origin = _vec(self.origin)
        self.image_size = tuple(int(x) for x in self.image_size)
        self.pixel_size = tuple(float(x) for x in self.pixel_size)
        self.trusted_range = tuple(float(x) for x in self.trusted_range)
        self.mask = [tuple(int(v) for v in m) for m in self.mask]

    def replace(self, **kw) -> Panel:
        return replace(self, **kw)

    # -- frame ----------------------------------------------------------------
    @property
    def normal(self) -> np.ndarray:
        """Unit normal fast x slow."""
        n = np.cross(self.fast_axis, self.slow_axis)
        return n / np.linalg.norm(n)

    @property
    def d_matrix(self) -> np.ndarray:
        """D = [fast | slow | origin] (columns): lab = D @ (x_mm, y_mm, 1)."""
        return np.column_stack([self.fast_axis, self.slow_axis, self.origin])

    @property
    def distance(self) -> float:
        """Perpendicular distance of the panel plane from the sample (mm)."""
        return float(abs(self.origin @ self.normal))

    @property
    def image_size_mm(self) -> tuple[float, float]:
        return (self.image_size[0] * self.pixel_size[0], self.image_size[1] * self.pixel_size[1])

    def lab_coord(self, xy_mm) -> np.ndarray:
        """Lab-frame points (N, 3) in mm from panel mm coordinates (N, 2)."""
        xy = np.asarray(xy_mm, dtype=float).reshape(-1, 2)
        x, y = xy[:, 0], xy[:, 1]
        lab = np.empty((len(xy), 3))
        # origin + x fast + y slow one lab axis at a time: the same sums, 10x faster than
        # with (N, 3) temporaries
        for k in range(3):
            lab[:, k] = self.origin[k] + x * self.fast_axis[k] + y * self.slow_axis[k]
        return lab

    # -- valid pixel values ------------------------------------------------------
    @property
    def is_counting(self) -> bool:
        """A photon-counting hybrid-pixel sensor (Pilatus, Eiger, Timepix: SENSOR_PAD)."""
        return self.type == "SENSOR_PAD"

    def valid_range(self) -> tuple[float, float]:
        """(lo, hi): a pixel value v is valid data when lo < v < hi.

        This is ``trusted_range`` read as dxtbx long did (both ends excluded), except that
        on a counting detector a count of zero is always valid data: a trusted minimum
        in (-1, 0] (dxtbx's newer inclusive convention writes 0, and so do users with
        ``trusted_range=0,...``) is taken as -1, so zeros stay valid while the values
        that mark module gaps (-1) and bad pixels (-2) stay invalid.
        """
        lo, hi = self.trusted_range
        if self.is_counting and -1.0 < lo <= 0.0:
            lo = -1.0
        return lo, hi

    # -- parallax -----------------------------------------------------------------
    def _attenuation_length(self, unit_ray: np.ndarray) -> np.ndarray:
        n = self.normal
        if self.origin @ n < 0:
            n = -n
        cos_t = unit_ray @ n
        mu, t0 = self.mu, self.thickness
        return 1.0 / mu - (t0 / cos_t + 1.0 / mu) * np.exp(-mu * t0 / cos_t)

    def _parallax_shift(self, xy_mm: np.ndarray) -> np.ndarray:
        ray = self.lab_coord(xy_mm)
        ray /= norms3(ray)[:, None]
        o = self._attenuation_length(ray)
        return np.stack([(ray @ self.fast_axis) * o, (ray @ self.slow_axis) * o], axis=1)

    @property
    def has_parallax(self) -> bool:
        return self.px_mm_strategy == PARALLAX and self.mu > 0 and self.thickness > 0

    def pixel_to_millimeter(self, xy_px) -> np.ndarray:
        """(N, 2) px -> (N, 2) mm, with the parallax correction where it applies."""
        xy = np.asarray(xy_px, dtype=float).reshape(-1, 2) * np.asarray(self.pixel_size)
        if self.has_parallax:
            xy = xy - self._parallax_shift(xy)
        return xy

    def millimeter_to_pixel(self, xy_mm) -> np.ndarray:
        """(N, 2) mm -> (N, 2) px, the forward parallax shift where it applies."""
        xy = np.asarray(xy_mm, dtype=float).reshape(-1, 2)
        if self.has_parallax:
            xy = xy + self._parallax_shift(xy)
        return xy / np.asarray(self.pixel_size)

    def ray_intersection(self, s1) -> tuple[np.ndarray, np.ndarray]:
        """Where rays along ``s1`` (N, 3) from the sample meet the panel plane.

        Returns (xy_mm (N, 2), valid (N,)) where valid means the ray hits the
        plane in front of the sample (not necessarily inside the panel).
        """
        s1 = np.asarray(s1, dtype=float).reshape(-1, 3)
        D = self.d_matrix
        Dinv = np.linalg.inv(D)
        v = s1 @ Dinv.T
        w = v[:, 2]
        valid = w > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = v[:, :2] / w[:, None]
        return xy, valid

    def is_coord_valid_mm(self, xy_mm) -> np.ndarray:
        xy = np.asarray(xy_mm, dtype=float).reshape(-1, 2)
        w, h = self.image_size_mm
        return (xy[:, 0] >= 0) & (xy[:, 0] <= w) & (xy[:, 1] >= 0) & (xy[:, 1] <= h)

    def beam_centre_mm(self, s0) -> np.ndarray:
        """The (x, y) mm where the direct beam meets the panel plane."""
        xy, _ = self.ray_intersection(np.asarray(s0)[None, :])
        return xy[0]

    def resolution_at_pixel(self, s0, xy_px) -> np.ndarray:
        """d-spacing (A) at pixel positions (N, 2); inf where the direct beam hits."""
        s0 = np.asarray(s0, dtype=float)
        lab = self.lab_coord(self.pixel_to_millimeter(xy_px))
        s1 = lab / np.linalg.norm(lab, axis=1)[:, None] * np.linalg.norm(s0)
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(s1 - s0, axis=1)

    def corners_px(self) -> np.ndarray:
        nx, ny = self.image_size
        return np.array([[0, 0], [nx, 0], [0, ny], [nx, ny]], dtype=float)

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict:
        strategy = {"type": self.px_mm_strategy}
        return {
            "name": self.name,
            "type": self.type,
            "fast_axis": [float(x) for x in self.fast_axis],
            "slow_axis": [float(x) for x in self.slow_axis],
            "origin": [float(x) for x in self.origin],
            "raw_image_offset": list(self.raw_image_offset),
            "image_size": list(self.image_size),
            "pixel_size": list(self.pixel_size),
            "trusted_range": list(self.trusted_range),
            "thickness": float(self.thickness),
            "material": self.material,
            "mu": float(self.mu),
            "identifier": self.identifier,
            "mask": [list(m) for m in self.mask],
            "gain": float(self.gain),
            "pedestal": float(self.pedestal),
            "px_mm_strategy": strategy,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Panel:
        return cls(
            fast_axis=d["fast_axis"],
            slow_axis=d["slow_axis"],
            origin=d["origin"],
            image_size=tuple(d["image_size"]),
            pixel_size=tuple(d["pixel_size"]),
            trusted_range=tuple(d.get("trusted_range", (0.0, 65535.0))),
            thickness=d.get("thickness", 0.0),
            material=d.get("material", ""),
            mu=d.get("mu", 0.0),
            px_mm_strategy=(d.get("px_mm_strategy") or {}).get("type", SIMPLE),
            name=d.get("name", "Panel"),
            type=d.get("type", "SENSOR_UNKNOWN"),
            identifier=d.get("identifier", ""),
            mask=d.get("mask", []),
            gain=d.get("gain", 1.0),
            pedestal=d.get("pedestal", 0.0),
            raw_image_offset=tuple(d.get("raw_image_offset", (0, 0))),
        )


@dataclass
class Detector:
    """One or more panels; ``hierarchy`` keeps the DIALS group tree as read."""

    panels: list[Panel] = field(default_factory=lambda: [Panel()])
    hierarchy: dict | None = None

    def __len__(self) -> int:
        return len(self.panels)

    def __getitem__(self, i: int) -> Panel:
        return self.panels[i]

    def __iter__(self):
        return iter(self.panels)

    def replace(self, **kw) -> Detector:
        return replace(self, **kw)

    def ray_intersection(self, s1) -> tuple[np.ndarray, np.ndarray]:
        """For each ray (N, 3): the panel it hits (-1 if none) and mm coords there."""
        s1 = np.asarray(s1, dtype=float).reshape(-1, 3)
        panel = np.full(len(s1), -1, dtype=np.int64)
        xy = np.full((len(s1), 2), np.nan)
        for i, p in enumerate(self.panels):
            pxy, ok = p.ray_intersection(s1)
            hit = ok & p.is_coord_valid_mm(pxy) & (panel < 0)
            panel[hit] = i
            xy = np.where(hit[:, None], pxy, xy)  # a masked assignment of rows, 4x slower
        return panel, xy

    def to_dict(self) -> dict:
        hierarchy = self.hierarchy
        if hierarchy is None:
            hierarchy = {
                "name": "", "type": "", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, 1.0, 0.0],
                "origin": [0.0, 0.0, 0.0], "raw_image_offset": [0, 0], "image_size": [0, 0],
                "pixel_size": [0.0, 0.0], "trusted_range": [0.0, 0.0], "thickness": 0.0,
                "material": "", "mu": 0.0, "identifier": "", "mask": [], "gain": 1.0,
                "pedestal": 0.0, "px_mm_strategy": {"type": SIMPLE},
                "children": [{"panel": i} for i in range(len(self.panels))],
            }
        return {"panels": [p.to_dict() for p in self.panels], "hierarchy": hierarchy}

    @classmethod
    def from_dict(cls, d: dict) -> Detector:
        return cls(panels=[Panel.from_dict(p) for p in d["panels"]], hierarchy=d.get("hierarchy"))
