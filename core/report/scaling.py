"""Scaling figures (as dials.scale's report): merging statistics against resolution, scale
factors against image, Wilson plot and the normal probability plot of the deviations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..merging.equivalents import group_equivalents, map_to_asu
from ..merging.statistics import MergingStatistics, merging_statistics
from ..models.experiment import ExperimentList
from ..reflection_table import Flags, ReflectionTable
from .axes import image_number, per_image, resolution_axis, s2
from .html import COLOURS, Section, decimate, figure, table_html

MAX_POINTS = 2500  # per scatter trace


@dataclass
class ScaledSeries:
    """One scaled data set to plot: the table ``scaled`` and its merging statistics."""

    label: str
    experiments: ExperimentList
    table: ReflectionTable
    stats: MergingStatistics


def scaled_observations(table: ReflectionTable):
    """(selection, I, sigma) of the scaled observations: scaled (when any row has the flag),
    not excluded or outliers,
    positive scale factor and variance; I and sigma divided by inverse_scale_factor."""
    scaled = table.get_flags(Flags.scaled)
    sel = scaled if scaled.any() else np.ones(len(table), bool)  # DIALS's files do not set it
    sel &= ~table.get_flags(Flags.bad_for_scaling, all_bits=False)
    sel &= (table["inverse_scale_factor"] > 0) & (table["intensity.scale.variance"] > 0)
    g = table["inverse_scale_factor"][sel]
    return (sel, table["intensity.scale.value"][sel] / g,
            np.sqrt(table["intensity.scale.variance"][sel]) / g)


def statistics(experiments: ExperimentList, table: ReflectionTable, n_bins: int = 20,
               anomalous: bool = False) -> MergingStatistics:
    """Merging statistics of the scaled observations (crystal 0's cell and space group)."""
    sel, intensity, sigma = scaled_observations(table)
    crystal = experiments[0].crystal
    return merging_statistics(table["miller_index"][sel], intensity, sigma,
                              crystal.unit_cell.parameters, crystal.space_group,
                              anomalous=anomalous, n_bins=n_bins)


def normal_probability(hkl, intensity, sigma, space_group, max_points: int = 2000):
    """(expected normal quantiles, sorted deviations) of the normalised deviations of the
    reflections measured at least twice: each observation against the weighted mean of its
    equivalents without it, delta_hl = (I_hl - <I_h>_others) / sqrt(sigma_hl^2 + sigma(<I_h>_others)^2)
    (equal sigmas: sqrt((n_h - 1)/n_h) (I_hl - <I_h>_others) / sigma_hl; Howell & Smith (1992)
    J. Appl. Cryst. 25, 81). Straight with slope 1 when the sigmas are right."""
    from scipy.special import ndtri  # the normal quantile function, without scipy.stats' import

    m = map_to_asu(hkl, space_group)
    g = group_equivalents(m.hkl_asu)
    w = 1.0 / sigma**2
    w_others = g.sum(w)[g.group] - w
    multi = g.count[g.group] >= 2
    mean_others = (g.sum(w * intensity)[g.group] - w * intensity)[multi] / w_others[multi]
    delta = (intensity[multi] - mean_others) / np.sqrt(sigma[multi] ** 2 + 1 / w_others[multi])
    delta = np.sort(delta[np.isfinite(delta)])
    if not len(delta):
        return np.zeros(0), np.zeros(0)
    expected = ndtri((np.arange(len(delta)) + 0.5) / len(delta))
    keep = np.unique(np.linspace(0, len(delta) - 1, min(max_points, len(delta))).astype(int))
    return expected[keep], delta[keep]


def _mid_s2(s) -> float:
    return 0.5 * (s2(s.d_max) + s2(s.d_min))


def statistics_vs_resolution(series: list[ScaledSeries]) -> list[dict]:
    what = [("cc_half", "CC1/2", 1), ("mean_i_over_sigma", "<I/sigma>", 1),
            ("completeness", "completeness (%)", 100), ("multiplicity", "multiplicity", 1)]
    d_all = [s.d_min for x in series for s in x.stats.shells]
    figs = []
    for attr, title, factor in what:
        traces = []
        for k, x in enumerate(series):
            traces.append({"type": "scatter", "mode": "lines+markers", "name": x.label or title,
                           "x": [_mid_s2(s) for s in x.stats.shells],
                           "y": [getattr(s, attr) * factor for s in x.stats.shells],
                           "line": {"color": COLOURS[k]}})
            if attr == "cc_half" and x.stats.anomalous:
                traces.append({"type": "scatter", "mode": "lines+markers",
                               "name": f"{x.label} CC_ano".strip(),
                               "x": [_mid_s2(s) for s in x.stats.shells],
                               "y": [s.cc_anom for s in x.stats.shells],
                               "line": {"color": COLOURS[k], "dash": "dot"}})
        figs.append(figure(traces, f"{title} against resolution", "resolution (A)", title,
                           xaxis=resolution_axis(d_all)))
    return figs


def scale_vs_image(series: list[ScaledSeries]) -> dict:
    traces = []
    for k, x in enumerate(series):
        sel, _, _ = scaled_observations(x.table)
        t = x.table.select(sel)
        image = image_number(x.experiments, t)
        g = t["inverse_scale_factor"]
        keep = decimate(len(g), MAX_POINTS)
        traces.append({"type": "scatter", "mode": "markers", "x": image[keep], "y": g[keep],
                       "name": f"{x.label} observations".strip(),
                       "marker": {"size": 3, "color": COLOURS[k], "opacity": 0.3}})
        xi, mean = per_image(image, g)
        traces.append({"type": "scatter", "mode": "lines", "x": xi, "y": mean,
                       "name": f"{x.label} mean per image".strip(), "line": {"color": COLOURS[k]}})
    return figure(traces, "Inverse scale factor against image", "image", "inverse scale factor")


def wilson_plot(series: list[ScaledSeries]) -> dict:
    traces = []
    for k, x in enumerate(series):
        shells = [s for s in x.stats.shells if s.mean_i > 0]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": x.label or "ln <I>",
                       "x": [_mid_s2(s) for s in shells], "y": [np.log(s.mean_i) for s in shells],
                       "line": {"color": COLOURS[k]}})
    return figure(traces, "Wilson plot", "1/d^2 (A^-2)", "ln <I>")


def normal_probability_plot(series: list[ScaledSeries]) -> dict:
    traces = []
    for k, x in enumerate(series):
        sel, intensity, sigma = scaled_observations(x.table)
        sg = x.experiments[0].crystal.space_group
        e, d = normal_probability(x.table["miller_index"][sel], intensity, sigma, sg)
        traces.append({"type": "scatter", "mode": "markers", "x": e, "y": d,
                       "name": x.label or "deviations", "marker": {"size": 3, "color": COLOURS[k]}})
    lim = [-4, 4]
    traces.append({"type": "scatter", "mode": "lines", "x": lim, "y": lim, "name": "y = x",
                   "line": {"color": "#888", "dash": "dash"}})
    return figure(traces, "Normal probability plot of the deviations", "expected (normal)",
                  "observed delta", yaxis={"range": [-6, 6]})


def model_curves(model: dict, n: int = 200):
    """(phi (deg), scale term, B (A^2) or None) of a physical scaling model as DIALS stores it in
    an .expt, evaluated with its Gaussian smoothers over the rotation range; None when the model
    is not one (or its parameters do not fit the smoother layout)."""
    from ..scaling.model import smoother_design

    cfg = model.get("configuration_parameters", {})
    if "scale" not in model or "valid_osc_range" not in cfg or "scale_rot_interval" not in cfg:
        return None
    lo, hi = cfg["valid_osc_range"]
    phi = np.linspace(lo, hi, n)

    def curve(name, interval_key):
        p = np.asarray(model[name]["parameters"], float)
        design = smoother_design(phi, (lo, hi), cfg[interval_key])
        return design.value(p) if design.n_param == len(p) else None

    scale = curve("scale", "scale_rot_interval")
    if scale is None:
        return None
    decay = curve("decay", "decay_rot_interval") if "decay" in model and \
        "decay_rot_interval" in cfg else None
    return phi, scale, decay


def model_figures(series: list[ScaledSeries]) -> list[dict]:
    """The scale and decay (B) terms against rotation angle, one curve per experiment."""
    scale_traces, decay_traces = [], []
    for k, x in enumerate(series):
        for i, e in enumerate(x.experiments):
            curves = model_curves(e.scaling_model) if e.scaling_model else None
            if curves is None:
                continue
            phi, scale, decay = curves
            name = " ".join(p for p in (x.label, f"expt {i}") if p)
            colour = COLOURS[(k + i) % len(COLOURS)]
            scale_traces.append({"type": "scatter", "mode": "lines", "x": phi, "y": scale,
                                 "name": name, "line": {"color": colour}})
            if decay is not None:
                decay_traces.append({"type": "scatter", "mode": "lines", "x": phi, "y": decay,
                                     "name": name, "line": {"color": colour}})
    figs = []
    if scale_traces:
        figs.append(figure(scale_traces, "Scale term of the scaling model", "rotation angle (deg)",
                           "scale"))
    if decay_traces:
        figs.append(figure(decay_traces, "Decay term (relative B) of the scaling model",
                           "rotation angle (deg)", "B (A^2)"))
    return figs


def absorption_figures(series: list[ScaledSeries]) -> list[dict]:
    """The absorption surface (crystal frame) of each experiment scaled by gonio: models
    written by other programs are left out, their harmonics' order and phases being theirs."""
    from ..scaling.model import HARMONICS, absorption_surface

    figs = []
    for x in series:
        for i, e in enumerate(x.experiments):
            m = e.scaling_model or {}
            cfg = m.get("configuration_parameters", {})
            if "absorption" not in m or cfg.get("gonio_harmonics") != HARMONICS:
                continue
            p = m["absorption"]["parameters"]
            if len(p) != cfg["lmax"] * (cfg["lmax"] + 2):
                continue
            polar, azimuth, values = absorption_surface(p, cfg["lmax"])
            name = " ".join(q for q in (x.label, f"expt {i}") if q)
            figs.append(figure([{"type": "heatmap", "x": azimuth, "y": polar, "z": values,
                                 "colorscale": "RdBu", "reversescale": True,
                                 "colorbar": {"title": {"text": "term"}}}],
                               f"Absorption surface {name}".strip(),
                               "azimuth (deg, crystal frame)", "polar angle (deg)"))
    return figs


def statistics_table(stats: MergingStatistics) -> str:
    return table_html(list(stats.HEADERS), stats.table_rows(),
                      "Merging statistics (the last row is overall)")


def section(series: list[ScaledSeries]) -> Section:
    text = ""
    if len(series) == 1:
        r = series[0].stats.resolution
        cut = f"{r.cc_half:.2f} A" if r.cc_half is not None else "not reached"
        text = (statistics_table(series[0].stats)
                + f"<p>Resolution where CC1/2 falls to {r.cc_half_limit}: {cut}.</p>")
    figs = statistics_vs_resolution(series) + [scale_vs_image(series)] + model_figures(series) \
        + absorption_figures(series) + [wilson_plot(series), normal_probability_plot(series)]
    return Section("Scaling", text, figs)
