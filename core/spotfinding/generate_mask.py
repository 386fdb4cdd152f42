"""A user pixel mask per panel, as dials.generate_mask makes it, or imported from a file.

The mask is built by :func:`.masks.static_mask` (border, untrusted rectangles,
circles, polygons and pixels, resolution limits and ranges, ice rings) and may
be ANDed with a mask read from a file (``mask=FILE``): NumPy ``.npy`` (one 2D
array, or a 3D stack with one array per panel), ``.npz`` (one array per panel,
in the file's order), or a TIFF / PNG image (one panel), read with Pillow.
As in DIALS, True (nonzero) marks a good pixel and False (zero) one that is
not used; arrays are (slow, fast), i.e. (rows, columns) of the image.

In the session state the mask is kept as JSON: each panel's bits packed
(8 pixels a byte, row by row), zlib-compressed and base64-encoded (:func:`encode_masks`),
a few kB for a typical mask of a 6M-pixel detector.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GonioError
from ..params import param as _p
from .masks import static_mask
from .params import SpotFinderParams, UntrustedRegion

ENCODING = "packbits+zlib+base64"


class MaskError(GonioError):
    """A mask that cannot be made, read or used."""


@dataclass
class GenerateMaskParams:
    """Parameters of dials.generate_mask (its names and defaults), plus ``mask`` to import."""

    border: int = _p(0, "Pixels masked along each panel edge.", "border", units="px", min=0)
    d_min: float | None = _p(None, "High-resolution limit: pixels at d-spacings at or below "
                             "it are masked.", "d_min", units="A")
    d_max: float | None = _p(None, "Low-resolution limit: pixels at d-spacings at or above "
                             "it are masked (e.g. the beam stop shadow region).", "d_max",
                             units="A")
    resolution_range: tuple[float, ...] | None = _p(
        None, "Untrusted resolution ranges d1,d2 (any number of pairs, e.g. "
        "3.93,3.87,3.70,3.64): pixels between each pair are masked.", "resolution_range",
        units="A")
    untrusted_panel: tuple[int, ...] | None = _p(
        None, "Panel of the untrusted regions: one number for all of them, or one per "
        "region in the order rectangles, circles, polygons, pixels (None: panel 0). With "
        "no shape given, the whole panel is masked.", "untrusted.panel")
    untrusted_rectangle: tuple[int, ...] | None = _p(
        None, "Untrusted rectangles x0,x1,y0,y1 (end exclusive; several: 4 numbers each).",
        "untrusted.rectangle", units="px")
    untrusted_circle: tuple[float, ...] | None = _p(
        None, "Untrusted circles xc,yc,r (several: 3 numbers each); pixels whose centres "
        "lie within r are masked.", "untrusted.circle", units="px")
    untrusted_polygon: tuple[float, ...] | None = _p(
        None, "Untrusted polygon x1,y1,x2,y2,... (fast, slow; at least 3 corners); pixels "
        "whose centres lie inside are masked. Several polygons: close each one by "
        "repeating its first corner, then start the next.", "untrusted.polygon", units="px")
    untrusted_pixel: tuple[int, ...] | None = _p(
        None, "Untrusted pixels y,x (slow, fast, as DIALS; several: 2 numbers each).",
        "untrusted.pixel", units="px")
    ice_rings_filter: bool = _p(False, "Mask the ice rings.", "ice_rings.filter")
    ice_rings_unit_cell: tuple[float, ...] = _p(
        (4.498, 4.498, 7.338, 90.0, 90.0, 120.0), "Cell of the powder rings to mask.",
        "ice_rings.unit_cell", units="A, deg", expert_level=1, length=6)
    ice_rings_space_group: str = _p("P 63/m m c", "Space group of the powder rings to mask.",
                                    "ice_rings.space_group", expert_level=1)
    ice_rings_width: float = _p(0.002, "Full width of each ring in 1/d^2.", "ice_rings.width",
                                units="A^-2", expert_level=1)
    ice_rings_d_min: float | None = _p(None, "Highest resolution of the rings (None: the "
                                       "panel's corner resolution).", "ice_rings.d_min",
                                       units="A", expert_level=1)
    mask: str | None = _p(None, "A mask file to import (.npy, .npz, .tif/.tiff, .png): "
                          "nonzero = good pixel, (slow, fast), one array per panel. It is "
                          "combined (AND) with the regions given on the same line.", "mask",
                          type="path")


@dataclass
class MaskResult:
    """Masked pixels per panel and what masked them."""

    n_pixels: list = field(default_factory=list)
    n_masked: list = field(default_factory=list)
    sources: list = field(default_factory=list)  # one line each: what was masked

    def metrics(self) -> dict:
        total = sum(self.n_pixels)
        return {"masked pixels": int(sum(self.n_masked)),
                "masked %": round(100.0 * sum(self.n_masked) / max(total, 1), 3)}

    def format_text(self) -> str:
        lines = ["Mask from: " + ("; ".join(self.sources) or "nothing (every pixel good)")]
        for k, (n, m) in enumerate(zip(self.n_pixels, self.n_masked)):
            lines.append(f"  panel {k}: {m} of {n} pixels masked ({100.0 * m / max(n, 1):.2f}%)")
        lines.append("findspots and integrate use this mask from now on; view image=N shows "
                     "it; undo removes it.")
        return "\n".join(lines)


def _groups(values, size: int, name: str, what: str) -> list[tuple]:
    if values is None:
        return []
    if len(values) == 0 or len(values) % size:
        raise MaskError(f"{name} takes {size} numbers per region ({what}), but "
                        f"{len(values)} were given: give {size}, {2 * size}, ... numbers.")
    return [tuple(values[i:i + size]) for i in range(0, len(values), size)]


def _polygons(values) -> list[np.ndarray]:
    """Polygons from x1,y1,x2,y2,...: a corner equal to its polygon's first closes it."""
    if values is None:
        return []
    if len(values) % 2:
        raise MaskError(f"untrusted.polygon takes x,y pairs (fast, slow px), but {len(values)} "
                        "numbers were given.")
    out, current = [], []
    for xy in np.reshape(values, (-1, 2)):
        if len(current) >= 3 and np.array_equal(xy, current[0]):
            out.append(np.array(current))
            current = []
        else:
            current.append(xy)
    if current:
        out.append(np.array(current))
    for poly in out:
        if len(poly) < 3:
            raise MaskError(f"untrusted.polygon: a polygon needs at least 3 corners, but one "
                            f"has {len(poly)} ({', '.join(f'{x:g},{y:g}' for x, y in poly)}).")
    return out


def untrusted_regions(params: GenerateMaskParams, detector) -> list[UntrustedRegion]:
    """The untrusted regions of the parameters, checked against the detector."""
    rects = _groups(params.untrusted_rectangle, 4, "untrusted.rectangle", "x0,x1,y0,y1")
    circles = _groups(params.untrusted_circle, 3, "untrusted.circle", "xc,yc,r")
    polys = _polygons(params.untrusted_polygon)
    pixels = _groups(params.untrusted_pixel, 2, "untrusted.pixel", "y,x")
    shapes = ([("rectangle", r) for r in rects] + [("circle", c) for c in circles]
              + [("polygon", p) for p in polys] + [("pixel", p) for p in pixels])
    panels = list(params.untrusted_panel or [])
    if len(panels) > 1 and len(panels) != len(shapes):
        raise MaskError(f"untrusted.panel has {len(panels)} numbers but there are "
                        f"{len(shapes)} regions: give one panel for all regions, or one per "
                        "region in the order rectangles, circles, polygons, pixels.")
    if not shapes:
        return [UntrustedRegion(panel=k) for k in panels]  # whole panels, as DIALS
    if len(panels) <= 1:
        panels = (panels or [0]) * len(shapes)
    out = []
    for k, (kind, shape) in zip(panels, shapes):
        if not 0 <= k < len(detector):
            raise MaskError(f"untrusted.panel={k}: the detector has {len(detector)} panel(s), "
                            f"numbered from 0; give a panel that exists.")
        nx, ny = detector[k].image_size
        where = f"panel {k} ({nx} x {ny} px)"
        if kind == "rectangle":
            x0, x1, y0, y1 = shape
            if not (0 <= x0 < x1 <= nx and 0 <= y0 < y1 <= ny):
                raise MaskError(f"untrusted.rectangle={x0},{x1},{y0},{y1} is not inside "
                                f"{where}: give x0 < x1 <= {nx} and y0 < y1 <= {ny} (px, end "
                                "exclusive).")
            out.append(UntrustedRegion(panel=k, rectangle=(x0, x1, y0, y1)))
        elif kind == "circle":
            xc, yc, r = shape
            if not (0 <= xc <= nx and 0 <= yc <= ny and r > 0):
                raise MaskError(f"untrusted.circle={xc:g},{yc:g},{r:g} is not on {where}: "
                                "give a centre on the panel and a positive radius (px).")
            out.append(UntrustedRegion(panel=k, circle=(xc, yc, r)))
        elif kind == "polygon":
            outside = [(x, y) for x, y in shape if not (0 <= x <= nx and 0 <= y <= ny)]
            if outside:
                raise MaskError(f"untrusted.polygon has corners outside {where}: "
                                f"{', '.join(f'{x:g},{y:g}' for x, y in outside)}. Give "
                                f"corners with 0 <= x <= {nx} and 0 <= y <= {ny} (fast, slow "
                                "px).")
            out.append(UntrustedRegion(panel=k, polygon=tuple(float(v) for v in shape.ravel())))
        else:
            y, x = shape
            if not (0 <= x < nx and 0 <= y < ny):
                raise MaskError(f"untrusted.pixel={y},{x} (y, x) is not on {where}.")
            out.append(UntrustedRegion(panel=k, rectangle=(x, x + 1, y, y + 1)))
    return out


def _as_mask(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        return a != 0
    if np.issubdtype(a.dtype, np.floating) and np.isin(a, (0.0, 1.0)).all():
        return a != 0
    raise MaskError(f"The mask {name} holds {a.dtype} values, not a mask: give booleans or "
                    "integers, nonzero (True) for a good pixel and 0 (False) for a masked one "
                    "(e.g. numpy.save('mask.npy', mask.astype(bool))).")


def read_mask_file(path: str | Path, detector) -> list[np.ndarray]:
    """One bool array (slow, fast) per panel from a .npy, .npz, .tif/.tiff or .png file."""
    p = Path(path)
    if p.suffix.lower() in (".pickle", ".pkl"):
        raise MaskError(f"{p.name}: a DIALS mask.pickle cannot be read without cctbx. Convert "
                        "it where DIALS is installed, e.g. with dials.python: import pickle, "
                        "numpy; m = pickle.load(open('mask.pickle', 'rb')); numpy.save("
                        "'mask.npy', numpy.array([x.as_numpy_array() for x in m])), then "
                        "generate_mask mask=mask.npy.")
    if not p.is_file():
        raise MaskError(f"The mask file {p} does not exist: check the path (relative paths "
                        "are from the session's folder).")
    try:
        if p.suffix.lower() == ".npy":
            a = np.load(p, allow_pickle=False)
            arrays = list(a) if a.ndim == 3 else [a]
        elif p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = [z[k] for k in z.files]
        elif p.suffix.lower() in (".tif", ".tiff", ".png"):
            from PIL import Image

            with Image.open(p) as im:
                arrays = [np.array(im)]
        else:
            raise MaskError(f"{p.name}: mask files are .npy, .npz, .tif/.tiff or .png; save "
                            "the mask in one of these (numpy.save('mask.npy', mask)).")
    except (OSError, ValueError) as e:
        raise MaskError(f"The mask file {p} cannot be read ({e}): give a .npy/.npz saved by "
                        "numpy (no pickled objects) or a TIFF/PNG image.") from None
    shapes = [(q.image_size[1], q.image_size[0]) for q in detector]
    got = [np.shape(a) for a in arrays]
    if len(arrays) != len(shapes) or any(g != s for g, s in zip(got, shapes)):
        raise MaskError(f"The mask file {p.name} holds {len(arrays)} array(s) of shape(s) "
                        f"{got} but the detector has {len(shapes)} panel(s) of shape(s) "
                        f"{shapes} (slow, fast): give one array per panel, of the panel's size.")
    return [_as_mask(a, f"in {p.name}") for a in arrays]


def _check(params: GenerateMaskParams) -> None:
    for name in ("d_min", "d_max", "ice_rings_width", "ice_rings_d_min"):
        v = getattr(params, name)
        if v is not None and not v > 0:
            raise MaskError(f"{name}={v} must be positive (A; ice_rings.width in 1/d^2).")
    if params.d_min is not None and params.d_max is not None and params.d_min >= params.d_max:
        raise MaskError(f"d_min={params.d_min} A is not below d_max={params.d_max} A, so every "
                        "pixel would be masked. d_min is the high-resolution (small d) limit and "
                        "d_max the low-resolution one.")
    if params.border < 0:
        raise MaskError(f"border={params.border} must be 0 or more pixels.")


def generate_mask(detector, beam, params: GenerateMaskParams, cwd: str | Path = "."
                  ) -> tuple[list[np.ndarray], MaskResult]:
    """One bool mask (slow, fast) per panel (True = good pixel), and what masked it."""
    _check(params)
    regions = untrusted_regions(params, detector)
    ranges = _groups(params.resolution_range, 2, "resolution_range", "d1,d2")
    if any(min(r) <= 0 for r in ranges):
        raise MaskError("resolution_range: d-spacings must be positive (A).")
    user = [None] * len(detector)
    if params.mask is not None:
        path = Path(params.mask)
        user = read_mask_file(path if path.is_absolute() else Path(cwd) / path, detector)
    spot = SpotFinderParams(
        border=params.border, untrusted=tuple(regions), d_min=params.d_min,
        d_max=params.d_max, ice_rings_filter=params.ice_rings_filter,
        ice_rings_unit_cell=tuple(params.ice_rings_unit_cell),
        ice_rings_space_group=params.ice_rings_space_group,
        ice_rings_width=params.ice_rings_width, ice_rings_d_min=params.ice_rings_d_min)
    masks = [static_mask(q, beam, spot, k, user[k], ranges) for k, q in enumerate(detector)]
    for k, (q, m) in enumerate(zip(detector, masks)):
        # the panel's own untrusted rectangles stay the detector model's, not the user's
        own = static_mask(q, None, SpotFinderParams(), k)
        masks[k] = m | ~own
    result = MaskResult(n_pixels=[int(m.size) for m in masks],
                        n_masked=[int(m.size - np.count_nonzero(m)) for m in masks])
    src = result.sources
    if params.mask is not None:
        src.append(f"file {params.mask}")
    if params.border:
        src.append(f"border {params.border} px")
    if params.d_min is not None or params.d_max is not None:
        src.append(f"resolution d_min {params.d_min} A, d_max {params.d_max} A")
    src += [f"resolution range {min(r):g}-{max(r):g} A" for r in ranges]
    if params.ice_rings_filter:
        src.append(f"ice rings (width {params.ice_rings_width:g} 1/A^2)")
    for r in regions:
        shape = ("rectangle " + ",".join(map(str, r.rectangle)) if r.rectangle else
                 "circle " + ",".join(f"{v:g}" for v in r.circle) if r.circle else
                 f"polygon of {len(r.polygon) // 2} corners" if r.polygon else "whole panel")
        src.append(f"panel {r.panel} {shape}")
    return masks, result


def encode_masks(masks) -> dict:
    """JSON-serialisable form of per-panel masks: packed bits, zlib, base64."""
    return {"encoding": ENCODING, "panels": [
        {"shape": list(m.shape), "data": base64.b64encode(
            zlib.compress(np.packbits(np.asarray(m, bool), axis=1).tobytes(), 9)).decode()}
        for m in masks]}


def decode_masks(stored: dict) -> list[np.ndarray]:
    """Per-panel bool masks from :func:`encode_masks`."""
    out = []
    for p in stored["panels"]:
        ny, nx = p["shape"]
        bits = np.frombuffer(zlib.decompress(base64.b64decode(p["data"])), np.uint8)
        out.append(np.unpackbits(bits.reshape(ny, -1), axis=1, count=nx).astype(bool))
    return out


def masks_for(stored: dict | None, detector) -> list[np.ndarray] | None:
    """The stored mask's arrays when they fit the detector (None: no mask stored)."""
    if stored is None:
        return None
    masks = decode_masks(stored)
    shapes = [(q.image_size[1], q.image_size[0]) for q in detector]
    if [m.shape for m in masks] != shapes:
        raise MaskError(f"The session's mask (from generate_mask) has panel shape(s) "
                        f"{[m.shape for m in masks]} but the detector has {shapes} (slow, fast): "
                        "run generate_mask again for these images, or undo back past it.")
    return masks
