"""Indexing and refinement figures (as dials.report's): positional residuals against image and
position on the detector, RMSD per image, and the scan-varying cell and orientation
(dials.plot_scan_varying_model)."""

from __future__ import annotations

import numpy as np

from ..refinement.report import scan_point_cells, scan_point_rotation_deg
from ..reflection_table import Flags, ReflectionTable
from .axes import Series, image_number, per_image
from .html import COLOURS, Section, decimate, figure

MAX_POINTS = 2500  # per scatter trace: keeps a report small and quick to draw
MIN_PER_BIN = 20  # reflections per RMSD point (images are grouped in blocks when fewer)


def has_residuals(table: ReflectionTable) -> bool:
    """Observed and calculated centroids, for reflections used in refinement or indexed (a
    table of integrate's predictions has both columns but neither flag)."""
    return ("xyzcal.px" in table and "xyzobs.px.value" in table and "flags" in table
            and bool(table.get_flags(Flags.used_in_refinement | Flags.indexed,
                                     all_bits=False).any()))


def residuals(experiments, table: ReflectionTable):
    """(image, x_px, y_px, dx_px, dy_px, dphi_deg) of the reflections used in refinement
    (else of the indexed ones); residual = calculated - observed, as DIALS."""
    used = table.get_flags(Flags.used_in_refinement)
    sel = used if used.any() else table.get_flags(Flags.indexed)
    if "miller_index" in table:
        sel &= table["miller_index"].any(axis=1)
    t = table.select(sel)
    obs, cal = t["xyzobs.px.value"], t["xyzcal.px"]
    if "xyzcal.mm" in t and "xyzobs.mm.value" in t:
        dphi = np.degrees(t["xyzcal.mm"][:, 2] - t["xyzobs.mm.value"][:, 2])
    else:
        osc = np.array([e.scan.oscillation[1] if e.scan is not None else 0.0 for e in experiments])
        dphi = (cal[:, 2] - obs[:, 2]) * osc[t["id"]]
    return (image_number(experiments, t), obs[:, 0], obs[:, 1], cal[:, 0] - obs[:, 0],
            cal[:, 1] - obs[:, 1], dphi)


def _label(label, what):
    return f"{label} {what}".strip()


def residuals_vs_image(series: list[Series]) -> list[dict]:
    figs = []
    for j, (what, unit) in enumerate([("x", "px"), ("y", "px"), ("phi", "deg")]):
        traces = []
        for k, (label, experiments, table) in enumerate(series):
            r = residuals(experiments, table)
            keep = decimate(len(r[0]), MAX_POINTS, seed=j)
            traces.append({"type": "scatter", "mode": "markers", "x": r[0][keep],
                           "y": r[3 + j][keep], "name": label or f"d{what}",
                           "marker": {"size": 3, "color": COLOURS[k], "opacity": 0.5}})
        figs.append(figure(traces, f"Residual {what} (calc - obs) against image", "image",
                           f"d{what} ({unit})"))
    return figs


def rmsd_per_image(series: list[Series]) -> dict:
    traces = []
    for k, (label, experiments, table) in enumerate(series):
        r = residuals(experiments, table)
        # blocks of images holding ~MIN_PER_BIN reflections each, so that each RMSD means something
        span = int(r[0].max() - r[0].min() + 1) if len(r[0]) else 1
        block = max(1, int(np.ceil(span * MIN_PER_BIN / max(len(r[0]), 1))))
        image = (r[0] - r[0].min()) // block * block + r[0].min() if len(r[0]) else r[0]
        for j, (what, axis) in enumerate([("x (px)", "y"), ("y (px)", "y"), ("phi (deg)", "y2")]):
            x, rms = per_image(image, r[3 + j], "rms")
            x = x + 0.5 * (block - 1)  # the block's middle image
            traces.append({"type": "scatter", "mode": "lines", "x": x, "y": rms, "yaxis": axis,
                           "name": _label(label, f"RMSD {what}"),
                           "line": {"color": COLOURS[(3 * k + j) % len(COLOURS)],
                                    "dash": "dot" if j == 2 else "solid"}})
    return figure(traces, "RMSD per image" + (f" (blocks of {block} images)" if block > 1 else ""),
                  "image", "RMSD x, y (px)",
                  yaxis2={"title": {"text": "RMSD phi (deg)"}, "overlaying": "y", "side": "right",
                          "rangemode": "tozero"}, yaxis={"rangemode": "tozero"},
                  legend={"orientation": "h", "y": -0.25}, height=400)


def residuals_on_detector(series: list[Series]) -> dict:
    traces = []
    for k, (label, experiments, table) in enumerate(series):
        _, x, y, dx, dy, _ = residuals(experiments, table)
        keep = decimate(len(x), MAX_POINTS)
        traces.append({"type": "scatter", "mode": "markers", "x": x[keep], "y": y[keep],
                       "name": label or "|residual|",
                       "marker": {"size": 4, "color": np.hypot(dx, dy)[keep], "colorscale":
                                  "Viridis", "cmin": 0, "showscale": k == 0,
                                  "colorbar": {"title": {"text": "px"}}}})
    return figure(traces, "Positional residual |calc - obs| on the detector", "x (px)", "y (px)",
                  yaxis={"autorange": "reversed", "scaleanchor": "x"}, height=480)


def scan_varying(series: list[Series]) -> list[dict]:
    """Cell and orientation at every scan point of scan-varying crystals ([] if none)."""
    cell_traces, angle_traces, rot_traces = [], [], []
    for k, (label, experiments, _) in enumerate(series):
        for i, e in enumerate(experiments):
            if e.crystal is None or e.scan is None:
                continue
            cells = scan_point_cells(e.crystal)
            if cells is None:
                continue
            rot = scan_point_rotation_deg(e.crystal)
            image = e.scan.image_range[0] + np.arange(len(cells)) - 0.5  # image boundaries
            tag = _label(label, f"expt {i}" if len(experiments) > 1 else "")
            for j, name in enumerate("abc"):
                cell_traces.append({"type": "scatter", "mode": "lines", "x": image,
                                    "y": cells[:, j], "name": _label(tag, name),
                                    "line": {"color": COLOURS[(3 * k + j) % 10]}})
            for j, name in enumerate(["alpha", "beta", "gamma"]):
                angle_traces.append({"type": "scatter", "mode": "lines", "x": image,
                                     "y": cells[:, 3 + j], "name": _label(tag, name),
                                     "line": {"color": COLOURS[(3 * k + j) % 10]}})
            for j, name in enumerate(["Phi1", "Phi2", "Phi3"]):
                rot_traces.append({"type": "scatter", "mode": "lines", "x": image,
                                   "y": rot[:, j], "name": _label(tag, name),
                                   "line": {"color": COLOURS[(3 * k + j) % 10]}})
    if not cell_traces:
        return []
    return [figure(cell_traces, "Scan-varying cell lengths", "image", "length (A)"),
            figure(angle_traces, "Scan-varying cell angles", "image", "angle (deg)"),
            figure(rot_traces, "Scan-varying orientation (about lab x, y, z)", "image",
                   "rotation (deg)")]


def section(series: list[Series], title: str = "Indexing and refinement") -> Section:
    text = ""
    if len(series) == 1:
        _, experiments, table = series[0]
        r = residuals(experiments, table)
        rms = [float(np.sqrt(np.mean(v**2))) if len(v) else float("nan") for v in r[3:]]
        text = (f"<p>{len(r[0])} reflections; RMSD x {rms[0]:.3f} px, y {rms[1]:.3f} px, "
                f"phi {rms[2]:.4f} deg.</p>")
    figs = residuals_vs_image(series) + [rmsd_per_image(series), residuals_on_detector(series)]
    return Section(title, text, figs + scan_varying(series))
