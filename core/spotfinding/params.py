"""Spot-finding parameters (names and defaults of dials.find_spots).

Each field's metadata carries ``phil`` (the full DIALS parameter name),
``help`` and ``units`` so the shell can build its parameter definitions
from this dataclass.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields

from ..errors import GonioError

#: The threshold algorithms (DIALS spotfinder.threshold.algorithm), :mod:`.threshold`.
DISPERSION = "dispersion"
DISPERSION_EXTENDED = "dispersion_extended"
ALGORITHMS = (DISPERSION_EXTENDED, DISPERSION)


class SpotFinderError(GonioError):
    """Bad spot-finding input: parameters, masks or unreadable images."""


def _f(default, phil, help, units="", **kw):
    factory = kw.pop("default_factory", None)
    meta = {"phil": phil, "help": help, "units": units, **kw}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class UntrustedRegion:
    """An untrusted region of one panel (DIALS ``spotfinder.filter.untrusted``).

    ``rectangle`` (x0, x1, y0, y1) px, end exclusive; ``circle`` (xc, yc, r)
    px; ``polygon`` (x1, y1, x2, y2, ...) px, its vertices in order. With none
    given the whole panel is untrusted.
    """

    panel: int = 0
    rectangle: tuple[int, int, int, int] | None = None
    circle: tuple[float, float, float] | None = None
    polygon: tuple[float, ...] | None = None


@dataclass
class SpotFinderParams:
    threshold_algorithm: str = _f(
        DISPERSION_EXTENDED, "spotfinder.threshold.algorithm",
        "Threshold: dispersion_extended (first a dispersion pass marks the background, "
        "then strong pixels are tested against the mean of that background) or dispersion.",
        choices=ALGORITHMS)
    kernel_size: tuple[int, int] = _f(
        (3, 3), "spotfinder.threshold.dispersion.kernel_size",
        "Half-widths (fast, slow) of the local window: the window is (2k+1) px wide.", "px")
    gain: float = _f(
        1.0, "spotfinder.threshold.dispersion.gain",
        "Detector gain (counts per photon / electron): the expected index of dispersion "
        "of the background. Raise it when the background is over-dispersed (e.g. "
        "electron counting detectors with charge sharing) and too many spots are found.")
    sigma_background: float = _f(
        6.0, "spotfinder.threshold.dispersion.sigma_background",
        "Sigmas above a Poisson index of dispersion for a window to hold signal.")
    sigma_strong: float = _f(
        3.0, "spotfinder.threshold.dispersion.sigma_strong",
        "Sigmas above the local mean for a pixel to be strong.")
    min_local: int = _f(
        2, "spotfinder.threshold.dispersion.min_local",
        "Fewest valid pixels in the window for a pixel to be tested.", "px")
    global_threshold: float = _f(
        0.0, "spotfinder.threshold.dispersion.global_threshold",
        "A strong pixel must also exceed this many counts.", "counts")
    min_spot_size: int | None = _f(
        None, "spotfinder.filter.min_spot_size",
        "Fewest connected strong pixels for a spot; None (Auto): 3 for pixel-array "
        "detectors (panel type SENSOR_PAD), 6 otherwise.", "px")
    max_spot_size: int = _f(
        1000, "spotfinder.filter.max_spot_size", "Most connected strong pixels for a spot.", "px")
    max_separation: float | None = _f(
        2.0, "spotfinder.filter.max_separation",
        "Largest distance between a spot's peak pixel and its centroid.", "px")
    max_strong_pixel_fraction: float = _f(
        0.25, "spotfinder.filter.max_strong_pixel_fraction",
        "Stop with an error if more than this fraction of an image's pixels is strong.")
    d_min: float | None = _f(
        None, "spotfinder.filter.d_min",
        "High-resolution limit: pixels at d-spacings at or below it are not used.", "A")
    d_max: float | None = _f(
        None, "spotfinder.filter.d_max",
        "Low-resolution limit: pixels at d-spacings at or above it are not used "
        "(e.g. d_max=20 to drop diffuse scatter around the beam in electron diffraction).",
        "A")
    border: int = _f(0, "spotfinder.filter.border", "Pixels masked along each panel edge.", "px")
    untrusted: tuple[UntrustedRegion, ...] = _f(
        (), "spotfinder.filter.untrusted",
        "Untrusted regions (panel, rectangle x0,x1,y0,y1 or circle xc,yc,r), px.")
    ice_rings_filter: bool = _f(
        False, "spotfinder.filter.ice_rings.filter", "Mask the hexagonal ice rings.")
    ice_rings_unit_cell: tuple[float, ...] = _f(
        (4.498, 4.498, 7.338, 90.0, 90.0, 120.0), "spotfinder.filter.ice_rings.unit_cell",
        "Cell of the powder rings to mask.", "A, deg", expert_level=1)
    ice_rings_space_group: str = _f(
        "P 63/m m c", "spotfinder.filter.ice_rings.space_group",
        "Space group of the powder rings to mask.", expert_level=1)
    ice_rings_width: float = _f(
        0.002, "spotfinder.filter.ice_rings.width",
        "Full width of each ring in 1/d^2.", "A^-2", expert_level=1)
    ice_rings_d_min: float | None = _f(
        None, "spotfinder.filter.ice_rings.d_min",
        "Highest resolution of the rings (None: the panel's corner resolution).", "A",
        expert_level=1)
    scan_range: tuple[tuple[int, int], ...] = _f(
        (), "spotfinder.scan_range",
        "Image ranges (first, last), inclusive image numbers, to search; empty: all images.")
    mask: tuple | None = _f(
        None, "spotfinder.lookup.mask",
        "User mask: one bool array (slow, fast) per panel, True = use the pixel.")
    nproc: int | None = _f(
        None, "spotfinder.mp.nproc", "Worker processes; None: all cores.")

    def effective_min_spot_size(self, panel_types) -> int:
        if self.min_spot_size is not None:
            return int(self.min_spot_size)
        return 3 if all(t == "SENSOR_PAD" for t in panel_types) else 6

    def effective_nproc(self) -> int:
        if self.nproc is None:
            return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 1)
        from ..threads import usable_threads

        return usable_threads(self.nproc)

    def validate(self) -> None:
        """Raise SpotFinderError for values that cannot work (image-independent checks)."""
        if self.threshold_algorithm not in ALGORITHMS:
            raise SpotFinderError(
                f"threshold.algorithm={self.threshold_algorithm!r} is not known; "
                f"choose one of {', '.join(ALGORITHMS)}.")
        k = tuple(self.kernel_size)
        if len(k) != 2 or min(k) < 1:
            raise SpotFinderError(
                f"kernel_size={k} is not valid: give two half-widths of at least 1 px, "
                "e.g. kernel_size=3,3 (the default).")
        if self.gain <= 0:
            raise SpotFinderError(f"gain={self.gain} must be positive (1 for photon counting).")
        if self.sigma_background < 0 or self.sigma_strong < 0:
            raise SpotFinderError("sigma_background and sigma_strong must not be negative.")
        nk = (2 * k[0] + 1) * (2 * k[1] + 1)
        if not 2 <= self.min_local <= nk:
            raise SpotFinderError(
                f"min_local={self.min_local} must be between 2 and the window size {nk}.")
        if self.global_threshold < 0:
            raise SpotFinderError("global_threshold must not be negative.")
        if self.min_spot_size is not None and self.min_spot_size < 1:
            raise SpotFinderError("min_spot_size must be at least 1 pixel.")
        if self.max_spot_size < 1 or (self.min_spot_size or 1) > self.max_spot_size:
            raise SpotFinderError(
                f"max_spot_size={self.max_spot_size} must be at least min_spot_size.")
        for name in ("d_min", "d_max"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise SpotFinderError(f"{name}={v} must be a positive d-spacing in A.")
        if self.d_min is not None and self.d_max is not None and self.d_min >= self.d_max:
            raise SpotFinderError(
                f"d_min={self.d_min} A is not below d_max={self.d_max} A, so no pixel is "
                "left to search. d_min is the high-resolution (small d) limit and d_max the "
                f"low-resolution one: did you mean d_min={self.d_max} d_max={self.d_min}?")
        if self.nproc is not None and int(self.nproc) < 1:
            raise SpotFinderError(
                f"nproc={self.nproc} is not valid: give a number of processes of at least 1, "
                "or leave it unset to use all cores.")
        if self.border < 0:
            raise SpotFinderError(f"border={self.border} px must not be negative (0: no border).")
        if self.max_separation is not None and self.max_separation < 0:
            raise SpotFinderError(
                f"max_separation={self.max_separation} px must not be negative: it is the "
                "largest distance allowed between a spot's peak and its centroid.")
        if self.ice_rings_d_min is not None and self.ice_rings_d_min <= 0:
            raise SpotFinderError(
                f"ice_rings.d_min={self.ice_rings_d_min} must be a positive d-spacing in A.")
        if not 0 < self.max_strong_pixel_fraction <= 1:
            raise SpotFinderError("max_strong_pixel_fraction must be in (0, 1].")
        for r in self.scan_range:
            if len(r) != 2 or r[0] > r[1]:
                raise SpotFinderError(
                    f"scan_range={tuple(r)} must be (first, last) image numbers with first <= last.")

    @classmethod
    def parameter_table(cls) -> list[dict]:
        """Name, DIALS name, default, help and units of every parameter."""
        out = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            out.append({"name": f.name, "default": default, "type": f.type, **f.metadata})
        return out
