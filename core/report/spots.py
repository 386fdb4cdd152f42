"""Spot finding figures (as dials.report's): strong spots per image and their resolution."""

from __future__ import annotations

import numpy as np

from .axes import Series, d_spacing, image_number, per_image, resolution_axis, s2
from .html import COLOURS, Section, figure


def _name(label: str, i: int, n_expt: int) -> str:
    parts = [p for p in (label, f"expt {i}" if n_expt > 1 else "") if p]
    return " ".join(parts) or "strong spots"


def spots_per_image(series: list[Series]) -> dict:
    traces = []
    for k, (label, experiments, table) in enumerate(series):
        images = image_number(experiments, table)
        ids = table["id"] if "id" in table else np.zeros(len(table), np.int64)
        for i in range(len(experiments)):
            x, n = per_image(images[ids == i], np.ones(int((ids == i).sum())), "count")
            traces.append({"type": "scatter", "mode": "lines", "x": x, "y": n,
                           "name": _name(label, i, len(experiments)),
                           "line": {"color": COLOURS[(k * 3 + i) % len(COLOURS)]}})
    return figure(traces, "Strong spots per image", "image", "number of spots")


def resolution_histogram(series: list[Series], n_bins: int = 50) -> dict:
    all_d = [d_spacing(e, t) for _, e, t in series]
    finite = np.concatenate([d[np.isfinite(d) & (d > 0)] for d in all_d])
    if not len(finite):
        return figure([], "Strong spots by resolution", "resolution (A)", "number of spots")
    edges = np.linspace(0, s2(finite.min()) * 1.0001, n_bins + 1)
    traces = []
    for k, ((label, _, _), d) in enumerate(zip(series, all_d)):
        h, _ = np.histogram(s2(d[np.isfinite(d) & (d > 0)]), edges)
        traces.append({"type": "bar", "x": 0.5 * (edges[1:] + edges[:-1]), "y": h,
                       "name": label or "strong spots", "opacity": 0.7 if len(series) > 1 else 1,
                       "marker": {"color": COLOURS[k]}})
    return figure(traces, "Strong spots by resolution", "resolution (A)", "number of spots",
                  xaxis=resolution_axis(1 / np.sqrt(edges[1:])), barmode="overlay", bargap=0)


def section(series: list[Series]) -> Section:
    n = sum(len(t) for _, _, t in series)
    text = f"<p>{n} strong spots.</p>" if len(series) == 1 else ""
    return Section("Spot finding", text, [spots_per_image(series), resolution_histogram(series)])
