"""One self-contained HTML page of report sections, plotly.js embedded (works offline).

A :class:`Section` is a title, some HTML (tables, text) and plotly figure
dicts. :func:`page` writes the page: plotly.js (from the ``plotly`` package,
read once) in a ``<script>`` element, each figure as JSON drawn with
``Plotly.newPlot``. No script, style sheet or font is fetched from the
network. Non-finite numbers become JSON ``null`` (a gap in a line).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field

import numpy as np

# one colour per experiment / series (plotly's default cycle)
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Section:
    """A titled part of a report: ``html`` (already escaped) and figures shown after it."""

    title: str
    html: str = ""
    figures: list[dict] = field(default_factory=list)
    anchor: str = ""
    wide: bool = False  # figures take the page's full width


def figure(traces: list[dict], title: str, x_title: str, y_title: str, **layout) -> dict:
    """A plotly figure dict with titled axes."""
    lay = {"title": {"text": _text(title), "x": 0.02, "xanchor": "left"},
           "xaxis": {"title": {"text": _text(x_title)}},
           "yaxis": {"title": {"text": _text(y_title)}}, "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
           "height": 360, "hovermode": "closest"}
    for k, v in layout.items():
        if isinstance(v, dict) and isinstance(lay.get(k), dict):
            lay[k] = {**lay[k], **v}
        else:
            lay[k] = v
    return {"data": traces, "layout": lay}


def _text(label: str) -> str:
    """A label for plotly, which reads tags in text: <I> must not become italics."""
    return label.replace("<", "&lt;").replace(">", "&gt;")


def decimate(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points (a reproducible random subset, sorted)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def table_html(headers: list[str], rows: list[list], caption: str = "") -> str:
    """An HTML table (cells escaped)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _clean(obj):
    """JSON-ready: numpy to lists, non-finite floats to None, floats to 6 significant digits."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            if obj.ndim > 1:
                return [_clean(r) for r in obj]
            return [float(f"{v:.6g}") if math.isfinite(v) else None for v in obj.tolist()]
        return obj.tolist()
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return float(f"{v:.6g}") if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def figure_json(fig: dict) -> str:
    """The figure as compact JSON (safe inside a <script> element)."""
    return json.dumps(_clean(fig), separators=(",", ":")).replace("</", "<\\/")


def plotly_js() -> str:
    """The plotly.js bundle shipped with the ``plotly`` package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


_STYLE = """
body{font-family:sans-serif;margin:0 2em 2em 2em;color:#222;max-width:1400px}
h1{margin-top:.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f0f0f0}
caption{text-align:left;font-weight:bold;padding:.3em 0}
pre{background:#f7f7f7;padding:.6em;font-size:12px;overflow-x:auto}
.figs{display:flex;flex-wrap:wrap;gap:8px}.fig{width:640px;min-height:360px}
.wide .fig{width:100%;flex:1 1 100%}.compare{display:grid;grid-template-columns:1fr 1fr;gap:1em}
nav a{margin-right:1em}
"""


def page(title: str, sections: list[Section], subtitle: str = "") -> str:
    """The whole HTML document. Once every figure is drawn, ``<body data-drawn-ms>`` holds the
    time from the start of loading (ms), for tests and for checking a report stays quick."""
    parts, scripts = [], []
    nav = " ".join(f'<a href="#{html.escape(s.anchor or _anchor(s.title))}">{html.escape(s.title)}'
                   "</a>" for s in sections)
    n = 0
    for s in sections:
        figs = []
        for f in s.figures:
            div = f"fig{n}"
            n += 1
            figs.append(f'<div class="fig" id="{div}"></div>')
            scripts.append(f'drawn.push(Plotly.newPlot("{div}",...fig({figure_json(f)})));')
        parts.append(f'<section id="{html.escape(s.anchor or _anchor(s.title))}">'
                     f"<h2>{html.escape(s.title)}</h2>{s.html}"
                     f'<div class="figs{" wide" if s.wide else ""}">{"".join(figs)}</div>'
                     "</section>")
    sub = f"<p>{html.escape(subtitle)}</p>" if subtitle else ""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style><script>{plotly_js()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1>{sub}<nav>{nav}</nav>{''.join(parts)}"
            "<script>function fig(f){return [f.data,f.layout,{responsive:true,"
            "displaylogo:false}];}\nconst drawn=[];\n" + "\n".join(scripts)
            + "\nPromise.all(drawn).then(()=>{document.body.dataset.drawnMs="
            "Math.round(performance.now());});</script></body></html>")


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
