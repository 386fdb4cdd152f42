"""Quantities report figures are drawn against: image number, d-spacing, resolution axes."""

from __future__ import annotations

import numpy as np

from ..models.experiment import ExperimentList
from ..reflection_table import ReflectionTable

#: One plotted series: a label (empty for a plain report; step names when comparing), the
#: experiments and the reflection table of that step.
Series = tuple[str, ExperimentList, ReflectionTable]


def image_number(experiments: ExperimentList, table: ReflectionTable,
                 column: str = "xyzobs.px.value") -> np.ndarray:
    """Image number (as the scan counts them, from image_range[0]) of each reflection's z (px)."""
    z = table[column][:, 2]
    out = np.floor(z).astype(np.int64)
    ids = table["id"] if "id" in table else np.zeros(len(table), np.int64)
    for i, e in enumerate(experiments):
        if e.scan is not None:
            sel = ids == i
            out[sel] += e.scan.image_range[0] - e.scan.array_range[0]
    return out


def d_spacing(experiments: ExperimentList, table: ReflectionTable) -> np.ndarray:
    """d (A) of each reflection: the ``d`` column, else from its observed pixel position."""
    if "d" in table:
        return np.asarray(table["d"], float)
    d = np.full(len(table), np.nan)
    xy = table["xyzobs.px.value"][:, :2]
    ids = table["id"] if "id" in table else np.zeros(len(table), np.int64)
    panels = table["panel"].astype(np.int64) if "panel" in table else np.zeros(len(table), np.int64)
    for i, e in enumerate(experiments):
        if e.beam is None or e.detector is None:
            continue
        for j, panel in enumerate(e.detector):
            sel = (ids == i) & (panels == j)
            if sel.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    d[sel] = panel.resolution_at_pixel(e.beam.s0, xy[sel])
    return d


def resolution_axis(d_values) -> dict:
    """Plotly axis settings for an x axis in 1/d^2 (A^-2) labelled with d (A)."""
    d = np.asarray([v for v in d_values if v is not None and np.isfinite(v) and v > 0])
    if not len(d):
        return {"title": {"text": "resolution (A)"}}
    s2 = np.linspace((1 / d.max()) ** 2, (1 / d.min()) ** 2, 6)
    return {"title": {"text": "resolution (A)"}, "tickvals": list(s2),
            "ticktext": [f"{1 / np.sqrt(v):.2f}" if v > 0 else "inf" for v in s2]}


def equal_volume_shells(d: np.ndarray, n_bins: int) -> np.ndarray:
    """Shell edges in d (A, descending) with about equal numbers of reflections (d*^3 quantiles)."""
    d = d[np.isfinite(d) & (d > 0)]
    if not len(d):
        return np.zeros(0)
    q = np.quantile(1.0 / d**3, np.linspace(0, 1, n_bins + 1))
    return np.cbrt(1.0 / np.maximum(q, 1e-30))


def per_shell(d: np.ndarray, values: np.ndarray, n_bins: int = 20):
    """(d of shell centre, mean of values) over equal-count resolution shells (1/d^2 centres)."""
    ok = np.isfinite(d) & (d > 0) & np.isfinite(values)
    d, values = d[ok], values[ok]
    edges = equal_volume_shells(d, n_bins)
    if len(edges) < 2:
        return np.zeros(0), np.zeros(0)
    b = np.clip(np.searchsorted(-edges, -d, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(b, minlength=len(edges) - 1)
    mean = np.bincount(b, values, minlength=len(edges) - 1) / np.maximum(count, 1)
    centre = 1 / np.sqrt(0.5 * (edges[:-1] ** -2 + edges[1:] ** -2))
    keep = count > 0
    return centre[keep], mean[keep]


def per_image(images: np.ndarray, values: np.ndarray, reduce: str = "mean"):
    """(image numbers, mean / rms / count of values on each image that has any)."""
    ok = np.isfinite(values)
    images, values = images[ok], values[ok]
    if not len(images):
        return np.zeros(0, np.int64), np.zeros(0)
    lo = images.min()
    k = images - lo
    count = np.bincount(k)
    if reduce == "count":
        out = count.astype(float)
    elif reduce == "rms":
        out = np.sqrt(np.bincount(k, values**2) / np.maximum(count, 1))
    else:
        out = np.bincount(k, values) / np.maximum(count, 1)
    keep = count > 0
    return np.arange(len(count))[keep] + lo, out[keep]


def s2(d) -> np.ndarray:
    """1/d^2 (A^-2)."""
    return 1.0 / np.asarray(d, float) ** 2
