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


def _ref_label(r: dict) -> str:
    return f"ring {r['ring']}, image {r['image']:.0f}"


def reference_profile_slices(summary: dict) -> dict:
    """Heatmaps of the reference profiles in the e1-e2 plane (Kabsch (2010) frame), a
    column per scan range and a row per resolution ring, from the integrate step's summary
    (:func:`gonio.core.integration.integrate.reference_summary`)."""
    refs = summary["references"]
    cols = sorted({(r["sweep"], r["scan_block"]) for r in refs})
    rows = sorted({r["ring"] for r in refs})
    gap = 0.04
    w, h = (1 - gap * (len(cols) - 1)) / len(cols), (1 - gap * (len(rows) - 1)) / len(rows)
    traces, layout = [], {}
    for r in refs:
        i, j = rows.index(r["ring"]), cols.index((r["sweep"], r["scan_block"]))
        k = i * len(cols) + j + 1
        a = "" if k == 1 else str(k)  # plotly's first axes are x, y
        n = len(r["slice"])
        e = ((np.arange(n) - n // 2) * summary["slice_step"]).round(3).tolist()
        traces.append({"type": "heatmap", "z": r["slice"], "x": e, "y": e,
                       "xaxis": f"x{a}", "yaxis": f"y{a}", "zmin": 0, "zmax": 100,
                       "colorscale": "Viridis", "showscale": k == 1,
                       "name": f"{_ref_label(r)}, x {r['x']:.0f} y {r['y']:.0f} px, "
                               f"{r['n_reference']} references"})
        x0, y1 = j * (w + gap), 1 - i * (h + gap)
        last = i == len(rows) - 1
        layout[f"xaxis{a}"] = {"domain": [x0, x0 + w], "anchor": f"y{a}", "constrain": "domain",
                               "showticklabels": last,
                               "title": {"text": f"e1, image ~{r['image']:.0f}"} if last else {}}
        layout[f"yaxis{a}"] = {"domain": [y1 - h, y1], "anchor": f"x{a}", "constrain": "domain",
                               "scaleanchor": f"x{a}", "showticklabels": j == 0,
                               "title": {"text": f"e2, ring {r['ring']}"} if j == 0 else {}}
    return {"data": traces, "layout": {
        "title": {"text": "Reference profiles in e1-e2 (rings: low to high angle)", "x": 0.02},
        "height": 140 * len(rows) + 80, "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        **layout}}


def reference_rocking_profiles(summary: dict) -> dict:
    """The reference profiles along e3 (the rotation): their rocking curves."""
    traces = []
    for k, r in enumerate(summary["references"]):
        n = len(r["rocking"])
        e3 = ((np.arange(n) - n // 2) * summary["rocking_step"]).round(3).tolist()
        traces.append({"type": "scatter", "mode": "lines", "x": e3, "y": r["rocking"],
                       "name": _ref_label(r), "line": {"color": COLOURS[k % 10]}})
    return figure(traces, "Reference profiles along e3 (rocking curves)",
                  "e3 (foreground edge = 1)", "% of the peak")


def section(series: list[Series], references: dict | None = None) -> Section:
    """``references``: the integrate step's reference-profile summary, drawn when given and
    not empty (tables imported from DIALS have none)."""
    text = ""
    if len(series) == 1:
        t = series[0][2]
        n_sum = int(t.get_flags(Flags.integrated_sum).sum())
        n_prf = int(t.get_flags(Flags.integrated_prf).sum())
        text = (f"<p>{len(t)} reflections; {n_sum} integrated by summation, {n_prf} by profile "
                "fitting.</p>")
    figs = [isigma_vs_resolution(series), isigma_vs_image(series)]
    bg = background_vs_image(series)
    if bg is not None:
        figs.append(bg)
    if references and references.get("references"):
        figs += [reference_profile_slices(references), reference_rocking_profiles(references)]
    return Section("Integration", text, figs)
