"""Integration figures (as dials.report's): I/sigma against resolution and image for summation
and profile fitting, and the background per image."""

from __future__ import annotations

import numpy as np

from ..reflection_table import Flags, ReflectionTable
from .axes import Series, d_spacing, image_number, per_image, per_shell, resolution_axis, s2
from .html import COLOURS, Section, figure

KINDS = (("sum", Flags.integrated_sum), ("prf", Flags.integrated_prf))


def i_over_sigma(table: ReflectionTable, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(selection, I/sigma) of the reflections integrated by ``kind`` ("sum" or "prf")."""
    flag = dict(KINDS)[kind]
    value, var = f"intensity.{kind}.value", f"intensity.{kind}.variance"
    if value not in table or var not in table:
        return np.zeros(len(table), bool), np.zeros(0)
    sel = table.get_flags(flag) & (table[var] > 0)
    return sel, table[value][sel] / np.sqrt(table[var][sel])


def _traces(series, x_of, fig_kind):
    traces = []
    for k, (label, experiments, table) in enumerate(series):
        for j, (kind, _) in enumerate(KINDS):
            sel, isig = i_over_sigma(table, kind)
            if not sel.any():
                continue
            x, y = x_of(experiments, table, sel, isig)
            traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": y,
                           "name": f"{label} {kind}".strip(), "marker": {"size": 4},
                           "line": {"color": COLOURS[(2 * k + j) % 10],
                                    "dash": "dot" if kind == "sum" else "solid"}})
    return traces


def isigma_vs_resolution(series: list[Series]) -> dict:
    ds = []

    def by_d(experiments, table, sel, isig):
        d = d_spacing(experiments, table)[sel]
        centre, mean = per_shell(d, isig)
        ds.extend(centre)
        return s2(centre), mean

    traces = _traces(series, by_d, "d")
    return figure(traces, "<I/sigma> against resolution", "resolution (A)", "<I/sigma>",
                  xaxis=resolution_axis(ds))


def isigma_vs_image(series: list[Series]) -> dict:
    def by_image(experiments, table, sel, isig):
        column = "xyzcal.px" if "xyzcal.px" in table else "xyzobs.px.value"
        return per_image(image_number(experiments, table, column)[sel], isig)

    return figure(_traces(series, by_image, "image"), "<I/sigma> against image", "image",
                  "<I/sigma>")


def background_vs_image(series: list[Series]) -> dict | None:
    traces = []
    for k, (label, experiments, table) in enumerate(series):
        if "background.mean" not in table:
            continue
        sel = table.get_flags(Flags.integrated_sum)
        column = "xyzcal.px" if "xyzcal.px" in table else "xyzobs.px.value"
        x, y = per_image(image_number(experiments, table, column)[sel], table["background.mean"][sel])
        traces.append({"type": "scatter", "mode": "lines", "x": x, "y": y,
                       "name": label or "background", "line": {"color": COLOURS[k]}})
    if not traces:
        return None
    return figure(traces, "Mean background per pixel against image", "image", "counts / px")


def has_integrated(table: ReflectionTable) -> bool:
    return bool((table.get_flags(Flags.integrated, all_bits=False)).any()) if "flags" in table \
        else False


def section(series: list[Series]) -> Section:
    text = ""
    if len(series) == 1:
        t = series[0][2]
        n_sum = int(t.get_flags(Flags.integrated_sum).sum())
        n_prf = int(t.get_flags(Flags.integrated_prf).sum())
        text = (f"<p>{len(t)} reflections; {n_sum} integrated by summation, {n_prf} by profile "
                "fitting.</p>")
    figs = [isigma_vs_resolution(series), isigma_vs_image(series)]
    bg = background_vs_image(series)
    return Section("Integration", text, figs + ([bg] if bg is not None else []))
