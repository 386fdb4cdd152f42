"""One detector image as a PNG with switchable overlays (as dials.image_viewer shows it).

Brightness: counts map linearly to an inverted grey scale (black spots on
white, as dials.image_viewer's default colour scheme); ``brightness=100``
saturates (black) at ten times the image's 90th-percentile count of valid
pixels (at least 1 count), so the default suits both a weak and a strong
image; ``brightness`` scales it as the viewer's slider does (200: twice as
dark). Untrusted pixels (at or below the trusted minimum, e.g. module gaps at
-1, or above the maximum) are drawn in the mask colour when ``mask`` is on.

A large image (or region) is reduced by an integer factor with the maximum
of each block, so single-pixel spots stay visible; a small region is
enlarged by an integer factor (nearest pixel), and Miller indices are
written beside the predictions once a pixel is at least :data:`HKL_SCALE`
display pixels wide.

Overlays (all in detector pixel coordinates of the panel, (fast, slow)):
``strong`` circles around strong-spot centroids on this image; ``predictions``
crosses at predicted centroids (xyzcal.px) whose z falls on this image;
``shoeboxes`` the bounding boxes of the reflections recorded on this image;
``beam_centre``; ``resolution_rings`` (d where the Debye-Scherrer cones of
scattering angle 2 theta meet the panel); ``mask``; ``rotation_axis``
(the axis projected onto the panel plane, through the beam centre).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

OVERLAYS = ("strong", "predictions", "shoeboxes", "beam_centre", "resolution_rings", "mask",
            "rotation_axis")
DEFAULT_OVERLAYS = ("strong", "predictions", "beam_centre", "resolution_rings", "mask")

#: overlay colours (RGB)
COLOURS = {"strong": (0, 190, 0), "predictions": (230, 0, 0), "shoeboxes": (255, 150, 0),
           "beam_centre": (200, 0, 200), "resolution_rings": (0, 150, 230),
           "mask": (215, 205, 150), "rotation_axis": (160, 80, 0)}
MAX_SIZE = 1600  # px of the longest side of a reduced image
MIN_SIZE = 800  # px a small region is enlarged to (at least)
HKL_SCALE = 6  # display px per detector px from which hkl labels are drawn


@dataclass
class Marks:
    """What to draw on one panel image, in pixel coordinates (fast, slow) of that panel."""

    strong: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    predictions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    hkl: np.ndarray | None = None  # (N, 3) beside ``predictions``
    shoeboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x0, x1, y0, y1
    beam_centre: np.ndarray | None = None  # (2,)
    rings: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (d, (M, 2) polyline)
    axis: np.ndarray | None = None  # (2, 2) end points


@dataclass
class Rendered:
    """The PNG and how display pixels relate to detector pixels: display = (px - origin) * scale."""

    png: bytes
    origin: tuple[int, int]  # (x0, y0) detector px of the top-left display pixel
    scale: float  # display px per detector px
    size: tuple[int, int]  # (width, height) display px


def saturation(image: np.ndarray, valid: np.ndarray, brightness: float) -> float:
    """The count drawn black at ``brightness`` (see the module docstring)."""
    values = image[valid]
    if values.size > 200_000:  # a regular subsample is plenty for a percentile
        values = values[:: values.size // 200_000]
    p90 = float(np.percentile(values, 90)) if values.size else 1.0
    return max(p90, 1.0) * 10.0 * 100.0 / max(brightness, 1e-6)


def _block_max(a: np.ndarray, f: int, op) -> np.ndarray:
    """``op``-reduction (np.maximum, np.logical_and) over f x f blocks (edges padded by repeats),
    as f*f strided whole-array operations (much faster than a reshape reduction)."""
    ny, nx = -(-a.shape[0] // f), -(-a.shape[1] // f)
    out = a[0::f, 0::f].copy()
    for dy in range(f):
        for dx in range(f):
            if dy or dx:
                part = a[dy::f, dx::f]
                op(out[:part.shape[0], :part.shape[1]], part, out=out[:part.shape[0], :part.shape[1]])
    return out[:ny, :nx]


#: palette: indices 0..GREYS-1 are grey levels from white to black, then the overlay colours
GREYS = 240
_INDEX = {name: GREYS + k for k, name in enumerate(COLOURS)}


def _palette() -> list[int]:
    grey = [255 - round(255 * i / (GREYS - 1)) for i in range(GREYS)]
    pal = [c for g in grey for c in (g, g, g)]
    for name in COLOURS:
        pal += list(COLOURS[name])
    return pal + [0] * (768 - len(pal))


def render(image: np.ndarray, trusted_range: tuple[float, float], marks: Marks,
           region: tuple[int, int, int, int] | None = None, brightness: float = 100.0,
           overlays=DEFAULT_OVERLAYS) -> Rendered:
    """The PNG of one panel image (slow, fast) with the chosen overlays.

    ``region`` (x0, x1, y0, y1) in px, end exclusive (the whole panel if None).
    """
    from PIL import Image, ImageDraw

    ny, nx = image.shape
    x0, x1, y0, y1 = region if region is not None else (0, nx, 0, ny)
    crop = image[y0:y1, x0:x1]
    lo, hi = trusted_range
    valid = (crop > lo) & (crop < hi)
    sat = saturation(crop, valid, brightness)
    counts = np.where(valid, crop, 0)
    longest = max(crop.shape)
    if longest > MAX_SIZE:
        f = int(np.ceil(longest / MAX_SIZE))
        counts = _block_max(counts, f, np.maximum)
        invalid = _block_max(~valid, f, np.logical_and)
        scale = 1.0 / f
    else:
        invalid = ~valid
        scale = float(max(1, MIN_SIZE // max(longest, 1)))
    index = np.clip(counts * ((GREYS - 1) / sat), 0, GREYS - 1).astype(np.uint8)
    if "mask" in overlays:
        index[invalid] = _INDEX["mask"]
    if scale > 1:
        k = int(scale)
        index = np.repeat(np.repeat(index, k, axis=0), k, axis=1)
    img = Image.fromarray(index)  # "L"; putpalette makes it "P"
    img.putpalette(_palette())
    draw = ImageDraw.Draw(img)
    ink = _INDEX

    def to_display(xy):
        xy = np.asarray(xy, float).reshape(-1, 2)
        return (xy - (x0, y0)) * scale

    def inside(xy, margin=0.0):
        return ((xy[:, 0] >= -margin) & (xy[:, 0] < img.width + margin)
                & (xy[:, 1] >= -margin) & (xy[:, 1] < img.height + margin))

    if "shoeboxes" in overlays and len(marks.shoeboxes):
        b = np.asarray(marks.shoeboxes, float)
        a, c = to_display(b[:, [0, 2]]), to_display(b[:, [1, 3]])
        for (ax, ay), (cx, cy) in zip(a[inside(a, 50)], c[inside(a, 50)]):
            draw.rectangle([ax, ay, max(cx - 1, ax), max(cy - 1, ay)],
                           outline=ink["shoeboxes"])
    if "resolution_rings" in overlays:
        for d, line in marks.rings:
            pts = to_display(line)
            ok = inside(pts, 1e4)
            if ok.sum() < 2:
                continue
            draw.line([tuple(p) for p in pts[ok]], fill=ink["resolution_rings"], width=2)
            on = pts[inside(pts)]
            if len(on):
                draw.text(tuple(on[len(on) // 2] + 3), f"{d:.2f} A", fill=ink["resolution_rings"])
    if "rotation_axis" in overlays and marks.axis is not None:
        p = to_display(marks.axis)
        draw.line([tuple(p[0]), tuple(p[1])], fill=ink["rotation_axis"], width=2)
    if "strong" in overlays and len(marks.strong):
        r = max(4.0, 3 * scale)
        pts = to_display(marks.strong)
        for x, y in pts[inside(pts)]:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=ink["strong"], width=2)
    if "predictions" in overlays and len(marks.predictions):
        r = max(3.0, 1.5 * scale)
        pts = to_display(marks.predictions)
        ok = inside(pts)
        for x, y in pts[ok]:
            draw.line([x - r, y, x + r, y], fill=ink["predictions"], width=2)
            draw.line([x, y - r, x, y + r], fill=ink["predictions"], width=2)
        if marks.hkl is not None and scale >= HKL_SCALE:
            for (x, y), (h, k, l) in zip(pts[ok], np.asarray(marks.hkl)[ok]):
                # beside the strong-spot circle (radius 3 * scale), not over the spot
                draw.text((x + 3 * scale + 3, y - 5), f"{h} {k} {l}", fill=ink["predictions"])
    if "beam_centre" in overlays and marks.beam_centre is not None:
        x, y = to_display(marks.beam_centre)[0]
        r = 12
        draw.line([x - r, y, x + r, y], fill=ink["beam_centre"], width=3)
        draw.line([x, y - r, x, y + r], fill=ink["beam_centre"], width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return Rendered(buf.getvalue(), (x0, y0), scale, (img.width, img.height))


def ring_polyline(panel, s0, d: float, n: int = 720) -> np.ndarray:
    """Pixel positions (fast, slow) where the cone of reflections at spacing ``d`` (A) meets the
    panel plane, as a closed polyline (points behind the sample or at infinity dropped)."""
    s0 = np.asarray(s0, float)
    k = np.linalg.norm(s0)
    sin_theta = 1.0 / (2.0 * d * k)
    if not 0 < sin_theta < 1:
        return np.zeros((0, 2))
    two_theta = 2 * np.arcsin(sin_theta)
    u = s0 / k
    e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    t = np.linspace(0, 2 * np.pi, n + 1)
    s1 = k * (np.cos(two_theta) * u[None, :] + np.sin(two_theta) * (
        np.cos(t)[:, None] * e1[None, :] + np.sin(t)[:, None] * e2[None, :]))
    xy, ok = panel.ray_intersection(s1)
    ok &= np.isfinite(xy).all(axis=1)
    return panel.millimeter_to_pixel(xy[ok]) if ok.any() else np.zeros((0, 2))


def ring_spacings(panel, s0, n: int = 5) -> list[float]:
    """``n`` d-spacings (A) evenly spaced in 1/d^2 out to the panel's corner resolution, rounded."""
    corners = panel.corners_px()
    with np.errstate(divide="ignore", invalid="ignore"):
        d = panel.resolution_at_pixel(s0, corners)
    d_min = float(np.nanmin(d))
    s = np.linspace(0, 1 / d_min**2, n + 1)[1:]
    return [float(f"{v:.3g}") for v in 1 / np.sqrt(s)]


def axis_on_panel(panel, s0, axis, length_px: float) -> np.ndarray | None:
    """End points (2, 2) px of the rotation axis's direction on the panel, through the beam
    centre (None when the axis is along the panel normal)."""
    xy_mm, ok = panel.ray_intersection(np.asarray(s0)[None, :])
    if not ok[0]:
        return None
    centre = panel.millimeter_to_pixel(xy_mm)[0]
    direction = np.array([np.dot(axis, panel.fast_axis) / panel.pixel_size[0],
                          np.dot(axis, panel.slow_axis) / panel.pixel_size[1]])
    if np.linalg.norm(direction) < 1e-9:
        return None
    direction /= np.linalg.norm(direction)
    return np.array([centre - length_px * direction, centre + length_px * direction])


def image_marks(experiments, expt_index: int, frame: int, panel_index: int = 0, strong=None,
                predicted=None) -> Marks:
    """The marks of array frame ``frame`` (z in [frame, frame + 1), DIALS's array coordinates)
    of one panel: strong spots of ``strong``, predictions and hkl of ``predicted``, shoeboxes of
    ``predicted`` (else of ``strong``), for every experiment sharing the experiment's images."""
    expt = experiments[expt_index]
    ids = [i for i, e in enumerate(experiments) if e.imageset == expt.imageset]
    panel = expt.detector[panel_index]
    m = Marks()

    def rows(table, column):
        sel = np.isin(table["id"], ids) if "id" in table else np.ones(len(table), bool)
        if "panel" in table:
            sel &= table["panel"].astype(np.int64) == panel_index
        if "bbox" in table and column == "bbox":
            b = table["bbox"]
            return sel & (b[:, 4] <= frame) & (b[:, 5] > frame)
        return sel & (np.floor(table[column][:, 2]) == frame)

    if strong is not None and len(strong):
        sel = rows(strong, "bbox" if "bbox" in strong else "xyzobs.px.value")
        m.strong = strong["xyzobs.px.value"][sel, :2]
    if predicted is not None and len(predicted) and "xyzcal.px" in predicted:
        sel = rows(predicted, "xyzcal.px")
        if "miller_index" in predicted:
            sel &= predicted["miller_index"].any(axis=1)
            m.hkl = predicted["miller_index"][sel]
        m.predictions = predicted["xyzcal.px"][sel, :2]
    boxes = predicted if predicted is not None and "bbox" in predicted else strong
    if boxes is not None and "bbox" in boxes and len(boxes):
        m.shoeboxes = boxes["bbox"][rows(boxes, "bbox"), :4]
    if expt.beam is not None:
        xy, ok = panel.ray_intersection(expt.beam.s0[None, :])
        if ok[0]:
            m.beam_centre = panel.millimeter_to_pixel(xy)[0]
        m.rings = [(d, ring_polyline(panel, expt.beam.s0, d))
                   for d in ring_spacings(panel, expt.beam.s0)]
        if expt.goniometer is not None:
            m.axis = axis_on_panel(panel, expt.beam.s0, expt.goniometer.rotation_axis,
                                   float(max(panel.image_size)))
    return m
