"""The beam centre from the images themselves: the projection methods of
dials.search_beam_position (``method=midpoint|maximum|inversion``).

Developed for electron diffraction at eBIC (Diamond) and described in the DIALS
documentation "Beam position methods" and AutoED: the average image of a sweep
is projected onto the x axis (a mean or a maximum over rows) and onto the y axis
(over columns), and each profile gives one coordinate of the beam:

- ``midpoint``: the mean projection, smoothed and scaled to its maximum, is cut
  at levels (``intersection_range``); each stretch above a level has a midpoint;
  midpoints within 40 px form groups, and of the three groups of widest stretches
  the one with the most midpoints gives the centre (the scattering around the beam
  falls off symmetrically, so its stretches are centred on the beam);
- ``maximum``: the bin (``bin_width``, ``bin_step``) of the mean projection with
  the most counts, then the maximum of the max projection inside it (a visible
  direct beam);
- ``inversion``: the max projection correlated with itself mirrored about each
  trial position in a window (``inversion_window_width``); the best overlay of a
  centrosymmetric pattern on its inversion is at the beam.

Improvements on DIALS's arithmetic, not on its method: pixels that are invalid
(at or below the trusted minimum: gaps, dead pixels), masked (generate_mask) or
excluded (``exclude_pixel_range_x/y``, the brightest ``exclude_intensity_percent``)
are left out of the projections rather than counted as zeros; the level crossings
(midpoint), the maximum and the correlation peak (inversion) are interpolated to a
fraction of a pixel; positions are in DIALS pixel coordinates (pixel i spans i to
i + 1, so its centre is i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate

from ..errors import GonioError
from ..params import param as _p

METHODS = ("midpoint", "maximum", "inversion")
GROUP_DISTANCE = 40.0  # px: a midpoint joins a group whose mean lies this close (DIALS)
N_WIDEST_GROUPS = 3  # DIALS picks among the three groups of widest stretches


class ProjectionSearchError(GonioError):
    """The projection search could not run (bad parameters or no images)."""


@dataclass
class ProjectionParams:
    """dials.search_beam_position ``projection`` parameters (names and defaults)."""

    method_x: str | None = _p(None, "Method for the x coordinate (None: the one of method=).",
                              "projection.method_x", choices=list(METHODS))
    method_y: str | None = _p(None, "Method for the y coordinate (None: the one of method=).",
                              "projection.method_y", choices=list(METHODS))
    exclude_pixel_range_x: tuple[int, ...] | None = _p(
        None, "Column ranges start,end (end exclusive; several pairs) left out of the "
        "projection onto y (e.g. a beam stop arm).", "projection.exclude_pixel_range_x",
        units="px")
    exclude_pixel_range_y: tuple[int, ...] | None = _p(
        None, "Row ranges start,end (end exclusive; several pairs) left out of the "
        "projection onto x.", "projection.exclude_pixel_range_y", units="px")
    exclude_intensity_percent: float = _p(
        0.01, "Leave out this percentage of the brightest pixels (midpoint).",
        "projection.midpoint.exclude_intensity_percent", units="%")
    intersection_range: tuple[float, ...] = _p(
        (0.3, 0.9, 0.01), "Levels start,stop,step (fractions of the profile maximum) at which "
        "midpoints are taken.", "projection.midpoint.intersection_range", length=3)
    midpoint_convolution_width: int = _p(
        80, "Width of the box that smooths the mean projection (midpoint).",
        "projection.midpoint.convolution_width", units="px")
    dead_pixel_range_x: tuple[int, ...] | None = _p(
        None, "x ranges start,end where the profile is not trusted (a stretch touching one "
        "gives no midpoint).", "projection.midpoint.dead_pixel_range_x", units="px")
    dead_pixel_range_y: tuple[int, ...] | None = _p(
        None, "y ranges start,end where the profile is not trusted (midpoint).",
        "projection.midpoint.dead_pixel_range_y", units="px")
    intersection_min_width: int = _p(
        10, "Stretches above a level narrower than this give no midpoint.",
        "projection.midpoint.intersection_min_width", units="px")
    maximum_bad_pixel_threshold: float | None = _p(
        None, "Pixels above this count are left out (maximum).",
        "projection.maximum.bad_pixel_threshold", units="counts")
    n_convolutions: int = _p(1, "Times the mean projection is smoothed (maximum).",
                             "projection.maximum.n_convolutions")
    maximum_convolution_width: int = _p(
        1, "Width of the smoothing box of the mean projection (maximum).",
        "projection.maximum.convolution_width", units="px")
    bin_width: int = _p(20, "Width of the bins of the mean projection (maximum).",
                        "projection.maximum.bin_width", units="px")
    bin_step: int = _p(10, "Step between bins (maximum).", "projection.maximum.bin_step",
                       units="px")
    inversion_bad_pixel_threshold: float | None = _p(
        None, "Pixels above this count are left out (inversion).",
        "projection.inversion.bad_pixel_threshold", units="counts")
    guess_position: tuple[float, ...] | None = _p(
        None, "x,y around which the inversion window lies (None: the current beam centre).",
        "projection.inversion.guess_position", units="px", length=2)
    inversion_window_width: int = _p(
        400, "Trial positions within this many pixels of the guess (inversion).",
        "projection.inversion.inversion_window_width", units="px")
    background_cutoff: float | None = _p(
        None, "Pixels below this count are left out (inversion).",
        "projection.inversion.background_cutoff", units="counts")
    inversion_convolution_width: int = _p(
        1, "Width of the smoothing box of the max projection (inversion).",
        "projection.inversion.convolution_width", units="px")


@dataclass
class AxisResult:
    """One coordinate: the method, the position (px) and the figure that says how sure."""

    axis: str
    method: str
    position: float
    detail: str = ""


@dataclass
class ProjectionResult:
    """Beam centre from the images, per imageset; shifts are new minus old centre."""

    methods: tuple = ("", "")
    panel: int = 0
    n_images: list = field(default_factory=list)
    old_centre_px: list = field(default_factory=list)  # per imageset (x, y)
    new_centre_px: list = field(default_factory=list)
    old_centre_mm: list = field(default_factory=list)
    new_centre_mm: list = field(default_factory=list)
    axes: list = field(default_factory=list)  # per imageset: [AxisResult x, AxisResult y]

    @property
    def shift_px(self) -> tuple:
        return tuple(float(b - a) for a, b in zip(self.old_centre_px[0], self.new_centre_px[0]))

    def metrics(self) -> dict:
        x, y = self.new_centre_px[0]
        dx, dy = self.shift_px
        return {"beam_x_px": round(x, 2), "beam_y_px": round(y, 2), "shift_x_px": round(dx, 2),
                "shift_y_px": round(dy, 2), "method": "/".join(self.methods)}

    def format_text(self) -> str:
        lines = []
        for k, axes in enumerate(self.axes):
            lines.append(f"Imageset {k}: average of {self.n_images[k]} images, panel "
                         f"{self.panel}")
            lines.append(tabulate([[a.axis, a.method, f"{a.position:.2f}", a.detail]
                                   for a in axes], headers=["axis", "method", "px", "figure"]))
            lines.append("Old beam centre: {:.2f}, {:.2f} mm ({:.1f}, {:.1f} px)".format(
                *self.old_centre_mm[k], *self.old_centre_px[k]))
            lines.append("New beam centre: {:.2f}, {:.2f} mm ({:.1f}, {:.1f} px)".format(
                *self.new_centre_mm[k], *self.new_centre_px[k]))
            dx, dy = (b - a for a, b in zip(self.old_centre_px[k], self.new_centre_px[k]))
            lines.append(f"Shift: {dx:.1f}, {dy:.1f} px")
        return "\n".join(lines)


def _pairs(values, name: str, size: int) -> list[tuple[int, int]]:
    if not values:
        return []
    if len(values) % 2:
        raise ProjectionSearchError(f"{name} takes start,end pairs (px, end exclusive), but "
                                    f"{len(values)} numbers were given.")
    out = [(int(values[i]), int(values[i + 1])) for i in range(0, len(values), 2)]
    for a, b in out:
        if not 0 <= a < b <= size:
            raise ProjectionSearchError(f"{name}: the range {a},{b} is not inside the image "
                                        f"(0 to {size} px) or is empty; give start < end.")
    return out


def check_params(p: ProjectionParams, method: str) -> tuple[str, str]:
    """The (x, y) methods; raises ProjectionSearchError for values that cannot work."""
    mx, my = p.method_x or method, p.method_y or method
    for name, m in (("method_x", mx), ("method_y", my)):
        if m not in METHODS:
            raise ProjectionSearchError(f"{name}={m}: the image projection methods are "
                                        f"{', '.join(METHODS)} (method=default uses spots).")
    start, stop, step = (tuple(p.intersection_range) + (None, None, None))[:3]
    if len(p.intersection_range) != 3 or not (0 <= start < stop <= 1 and step > 0):
        raise ProjectionSearchError(
            f"intersection_range={','.join(f'{v:g}' for v in p.intersection_range)}: give "
            "start,stop,step with 0 <= start < stop <= 1 and step > 0 (fractions of the "
            "profile maximum), e.g. 0.3,0.9,0.01 (the default).")
    if not 0 <= p.exclude_intensity_percent < 100:
        raise ProjectionSearchError(f"exclude_intensity_percent={p.exclude_intensity_percent} "
                                    "must be at least 0 and below 100 (%).")
    bad = [f"{n}={getattr(p, n)}" for n in (
        "midpoint_convolution_width", "maximum_convolution_width", "inversion_convolution_width",
        "n_convolutions", "bin_width", "bin_step", "inversion_window_width")
        if getattr(p, n) < (0 if n.endswith("convolution_width") else 1)]
    if p.intersection_min_width < 0:
        bad.append(f"intersection_min_width={p.intersection_min_width}")
    if bad:
        raise ProjectionSearchError(f"{', '.join(bad)}: widths, steps and counts must be "
                                    "positive (convolution widths and intersection_min_width "
                                    "0 or more).")
    return mx, my


def smooth(profile: np.ndarray, width: int) -> np.ndarray:
    """Box average of ``width`` px (odd, centred; windows truncated at the ends), as DIALS's
    ``smooth`` (its window is 2 * (width // 2) px)."""
    h = int(width) // 2
    if h <= 0:
        return profile.copy()
    n = len(profile)
    c = np.concatenate([[0.0], np.cumsum(profile)])
    lo = np.clip(np.arange(n) - h, 0, n)
    hi = np.clip(np.arange(n) + h + 1, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)


def _fill(profile: np.ndarray) -> np.ndarray:
    """NaNs (columns with no valid pixel) interpolated from their neighbours."""
    bad = ~np.isfinite(profile)
    if bad.all():
        raise ProjectionSearchError("No valid pixel is left to project: check the trusted "
                                    "range, the mask and the exclude ranges.")
    if bad.any():
        i = np.arange(len(profile))
        profile = profile.copy()
        profile[bad] = np.interp(i[bad], i[~bad], profile[~bad])
    return profile


def project(image: np.ndarray, valid: np.ndarray, axis: str, how: str) -> np.ndarray:
    """Projection onto ``axis`` ('x': over rows, one value per column; 'y': over columns) of
    the valid pixels: their mean ('mean') or maximum ('max')."""
    a = 0 if axis == "x" else 1
    with np.errstate(invalid="ignore", divide="ignore"):
        if how == "mean":
            prof = np.where(valid, image, 0.0).sum(axis=a) / valid.sum(axis=a)
        else:
            prof = np.where(valid, image, -np.inf).max(axis=a)
            prof[~np.isfinite(prof)] = np.nan
    return _fill(prof)


def _valid_for(valid: np.ndarray, axis: str, p: ProjectionParams) -> np.ndarray:
    """Valid pixels minus the excluded rows (projection onto x) or columns (onto y)."""
    ny, nx = valid.shape
    v = valid.copy()
    if axis == "x":
        for a, b in _pairs(p.exclude_pixel_range_y, "exclude_pixel_range_y", ny):
            v[a:b] = False
    else:
        for a, b in _pairs(p.exclude_pixel_range_x, "exclude_pixel_range_x", nx):
            v[:, a:b] = False
    return v


def midpoint_position(image, valid, axis: str, p: ProjectionParams) -> AxisResult:
    """Centre of the groups of midpoints of the stretches above each level (DIALS midpoint)."""
    v = _valid_for(valid, axis, p)
    if p.exclude_intensity_percent > 0 and v.any():
        cut = np.percentile(image[v], 100.0 - p.exclude_intensity_percent)
        v &= image <= cut
    prof = smooth(project(image, v, axis, "mean"), p.midpoint_convolution_width)
    prof = prof - min(prof.min(), 0.0)
    prof = prof / prof.max() if prof.max() > 0 else prof
    n = len(prof)
    dead = np.zeros(n, bool)
    name = "dead_pixel_range_x" if axis == "x" else "dead_pixel_range_y"
    for a, b in _pairs(p.dead_pixel_range_x if axis == "x" else p.dead_pixel_range_y, name, n):
        dead[a:b] = True
    start, stop, step = p.intersection_range
    points = []  # (x, level, width)
    for level in np.arange(start, stop, step):
        above = np.concatenate([[False], prof > level, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(above))
        for s, e in zip(edges[::2], edges[1::2] - 1):  # stretch s..e inclusive
            if s == 0 or e == n - 1 or dead[s - 1:e + 2].any() or e - s + 1 <= \
                    p.intersection_min_width:
                continue
            left = s - 1 + (level - prof[s - 1]) / (prof[s] - prof[s - 1])
            right = e + (prof[e] - level) / (prof[e] - prof[e + 1])
            points.append((0.5 * (left + right) + 0.5, level, e - s + 1))
    if not points:
        raise ProjectionSearchError(
            f"midpoint found no stretch above the levels {start:g} to {stop:g} of the {axis} "
            "profile's maximum: the image has no scattering that falls off around the beam. "
            "Try method=inversion or maximum, or lower intersection_range.")
    groups: list[list] = []
    for pt in points:
        for g in groups:
            if abs(pt[0] - np.mean([q[0] for q in g])) <= GROUP_DISTANCE:
                g.append(pt)
                break
        else:
            groups.append([pt])
    groups.sort(key=lambda g: -np.mean([q[2] for q in g]))
    best = max(groups[:N_WIDEST_GROUPS], key=len)
    xs = np.array([q[0] for q in best])
    return AxisResult(axis, "midpoint", float(xs.mean()),
                      f"{len(best)} of {len(points)} midpoints, spread {xs.std():.1f} px, "
                      f"{len(groups)} group(s)")


def _peak(y: np.ndarray, i: int) -> float:
    """Sub-pixel vertex of the parabola through y[i-1], y[i], y[i+1] (i if at an end)."""
    if 0 < i < len(y) - 1:
        den = y[i - 1] - 2 * y[i] + y[i + 1]
        if den < 0:
            return i + 0.5 * (y[i - 1] - y[i + 1]) / den
    return float(i)


def maximum_position(image, valid, axis: str, p: ProjectionParams) -> AxisResult:
    """The maximum of the max projection inside the brightest bin of the mean projection."""
    v = _valid_for(valid, axis, p)
    if p.maximum_bad_pixel_threshold is not None:
        v &= image <= p.maximum_bad_pixel_threshold
    pmax = project(image, v, axis, "max")
    pmean = project(image, v, axis, "mean")
    for _ in range(p.n_convolutions):
        pmean = smooth(pmean, p.maximum_convolution_width)
    n = len(pmax)
    if p.bin_width > n:
        raise ProjectionSearchError(f"bin_width={p.bin_width} is wider than the image ({n} px "
                                    f"along {axis}).")
    starts = np.arange(0, max(((n - p.bin_width) // p.bin_step) * p.bin_step, 1), p.bin_step)
    c = np.concatenate([[0.0], np.cumsum(pmean)])
    sums = c[starts + p.bin_width] - c[starts]
    b0 = int(starts[int(np.argmax(sums))])
    inside = pmax[b0:b0 + p.bin_width]
    i = b0 + int(np.argmax(inside))
    return AxisResult(axis, "maximum", _peak(pmax, i) + 0.5,
                      f"bin {b0}-{b0 + p.bin_width} px, max {pmax[i]:.4g} counts")


def inversion_position(image, valid, axis: str, p: ProjectionParams,
                       guess: float) -> AxisResult:
    """The mirror position (pixel edge) whose inversion of the max projection best overlays
    it: the mean of profile x mirrored profile over the window around ``guess``."""
    v = _valid_for(valid, axis, p)
    img = image
    if p.inversion_bad_pixel_threshold is not None or p.background_cutoff is not None:
        img = image.copy()
        if p.inversion_bad_pixel_threshold is not None:
            img[img > p.inversion_bad_pixel_threshold] = 0.0
        if p.background_cutoff is not None:
            img[img < p.background_cutoff] = 0.0
    prof = smooth(project(img, v, axis, "max"), p.inversion_convolution_width)
    n = len(prof)
    c = int(round(guess))
    trials = np.arange(max(c - p.inversion_window_width, 1),
                       min(c + p.inversion_window_width, n - 1))
    if not len(trials):
        raise ProjectionSearchError(f"guess_position {guess:g} px is off the image (0 to {n} "
                                    f"px along {axis}).")
    corr = np.empty(len(trials))
    for k, m in enumerate(trials):
        h = min(m, n - m)  # pixels m-h..m-1 mirror m..m+h-1 about the edge at m
        corr[k] = 2.0 * np.dot(prof[m - h:m][::-1], prof[m:m + h]) / n
    best = int(np.argmax(corr))
    others = np.abs(trials - trials[best]) > 10
    runner = corr[others].max() if others.any() else corr[best]
    return AxisResult(axis, "inversion", float(trials[0] + _peak(corr, best)),
                      f"overlay {corr[best]:.4g}, best away from it (>10 px) {runner:.4g}")


def beam_position(image: np.ndarray, valid: np.ndarray, methods: tuple[str, str],
                  p: ProjectionParams, guess_px=(None, None)) -> tuple[AxisResult, AxisResult]:
    """(x, y) of the beam on one panel's average image (slow, fast), DIALS pixel coordinates."""
    out = []
    for axis, method, g in zip("xy", methods, guess_px):
        if method == "midpoint":
            out.append(midpoint_position(image, valid, axis, p))
        elif method == "maximum":
            out.append(maximum_position(image, valid, axis, p))
        else:
            n = image.shape[1 if axis == "x" else 0]
            out.append(inversion_position(image, valid, axis, p, n / 2 if g is None else g))
    return out[0], out[1]


def average_image(reader, panel: int, trusted_min: float, user_mask=None
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean of each pixel over the images where it is valid (above the trusted minimum and
    not masked), the pixels valid on at least one image, and the number of images."""
    total, count = None, None
    for i in range(len(reader)):
        frame = np.asarray(reader.read(i)[panel], float)
        ok = frame > trusted_min
        if user_mask is not None:
            ok &= user_mask
        if total is None:
            total, count = np.zeros(frame.shape), np.zeros(frame.shape, np.int64)
        total += np.where(ok, frame, 0.0)
        count += ok
    if total is None:
        raise ProjectionSearchError("The imageset has no images to average.")
    valid = count > 0
    return np.where(valid, total / np.maximum(count, 1), 0.0), valid, len(reader)


def search_by_projection(experiments, method: str, p: ProjectionParams, readers=None,
                         masks=None):
    """Experiments with each imageset's detectors moved so the beam meets the position found
    on its average image, and the :class:`ProjectionResult`. ``readers[k]`` reads the images
    of experiments[k] (default: an ImageSequenceReader per imageset); ``masks``: a user mask
    per panel (True = good pixel)."""
    from ..formats.reader import ImageSequenceReader
    from ..models.experiment import ExperimentList
    from .beam_search import _beam_panel, _shift_detector

    methods = check_params(p, method)
    if p.guess_position is not None and len(p.guess_position) != 2:
        raise ProjectionSearchError("guess_position takes x,y (px).")
    if not len(experiments):
        raise ProjectionSearchError("There are no experiments: run import first.")
    i_panel, _ = _beam_panel(experiments)
    result = ProjectionResult(methods=methods, panel=i_panel)
    out = list(experiments)
    for iset in experiments.imagesets():
        members = [j for j, e in enumerate(experiments) if e.imageset is iset]
        e = experiments[members[0]]
        panel = e.detector[i_panel]
        try:
            reader = readers[members[0]] if readers is not None else ImageSequenceReader(e)
            image, valid, n = average_image(reader, i_panel, panel.trusted_range[0],
                                            None if masks is None else masks[i_panel])
        except (OSError, GonioError) as err:
            if isinstance(err, ProjectionSearchError):
                raise
            raise ProjectionSearchError(
                f"The images cannot be read ({err}): method={method} works on the images, "
                "which must be where they were imported from. method=default needs only the "
                "strong spots.") from None
        old_mm = panel.beam_centre_mm(e.beam.s0)
        old_px = panel.millimeter_to_pixel(old_mm[None])[0]
        guess = p.guess_position if p.guess_position is not None else old_px
        axes = beam_position(image, valid, methods, p, guess)
        d = np.array([axes[0].position, axes[1].position]) - old_px
        shift_lab = -(d[0] * panel.fast_axis * panel.pixel_size[0]
                      + d[1] * panel.slow_axis * panel.pixel_size[1])
        for j in members:
            out[j] = experiments[j].replace(
                detector=_shift_detector(experiments[j].detector, shift_lab))
        new_panel = out[members[0]].detector[i_panel]
        new_mm = new_panel.beam_centre_mm(e.beam.s0)
        result.n_images.append(n)
        result.axes.append(list(axes))
        result.old_centre_mm.append(tuple(float(v) for v in old_mm))
        result.new_centre_mm.append(tuple(float(v) for v in new_mm))
        result.old_centre_px.append(tuple(float(v) for v in old_px))
        result.new_centre_px.append(tuple(float(v) for v in
                                          new_panel.millimeter_to_pixel(new_mm[None])[0]))
    return ExperimentList(out), result
