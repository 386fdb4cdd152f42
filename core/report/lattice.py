"""The reciprocal lattice as dials.reciprocal_lattice_viewer shows it, as a plotly 3D page.

Strong-spot centroids are mapped to reciprocal-lattice points (rlp, 1/A, in the
phi = 0 crystal frame) with the indexing code's own mapping
(:func:`gonio.core.geometry.spots.map_to_reciprocal_space`): a wrong beam
centre smears the lattice rows, a wrong rotation axis bends them, a second
lattice shows as unindexed points in rows of their own. Indexed points are
coloured by experiment (lattice), unindexed ones grey; each crystal's
reciprocal axes a*, b*, c* (the columns of A = UB) are drawn from the origin.
"""

from __future__ import annotations

import numpy as np

from ..geometry.spots import centroid_px_to_mm, map_to_reciprocal_space
from ..models.experiment import ExperimentList
from ..reflection_table import Flags, ReflectionTable
from .html import COLOURS, decimate

MAX_POINTS = 40000  # a rotatable page stays smooth with this many points


def reciprocal_lattice_points(experiments: ExperimentList, table: ReflectionTable) -> np.ndarray:
    """rlp (N, 3) (1/A) of each reflection's observed centroid, with its experiment's geometry
    (``id``; -1, unindexed, uses the first experiment sharing the images: experiment 0)."""
    keep = ["xyzobs.px.value", "id", "panel"]
    t = ReflectionTable({k: table[k] for k in keep if k in table})
    if "xyzobs.px.variance" in table:
        t["xyzobs.px.variance"] = table["xyzobs.px.variance"]
    t["id"] = np.where(t["id"] < 0, 0, t["id"]) if "id" in t else np.zeros(len(t), np.int64)
    centroid_px_to_mm(experiments, t)
    map_to_reciprocal_space(experiments, t)
    return t["rlp"]


def lattice_figure(experiments: ExperimentList, table: ReflectionTable, title: str) -> dict:
    """A plotly figure dict: rlps (indexed per experiment, unindexed grey) and crystal axes."""
    rlp = reciprocal_lattice_points(experiments, table)
    ids = table["id"] if "id" in table else np.zeros(len(table), np.int64)
    indexed = np.zeros(len(table), bool)
    if "flags" in table:
        indexed = table.get_flags(Flags.indexed)
    if "miller_index" in table:
        indexed &= table["miller_index"].any(axis=1)
    keep = np.zeros(len(table), bool)
    keep[decimate(len(table), MAX_POINTS)] = True
    traces = []

    def points(sel, name, colour):
        sel = sel & keep
        traces.append({"type": "scatter3d", "mode": "markers", "name": f"{name} ({int(sel.sum())})",
                       "x": rlp[sel, 0], "y": rlp[sel, 1], "z": rlp[sel, 2],
                       "marker": {"size": 2, "color": colour}, "hoverinfo": "name"})

    points(~indexed, "unindexed", "#999999")
    for i in np.unique(ids[indexed]) if indexed.any() else []:
        points(indexed & (ids == i), f"indexed, experiment {i}", COLOURS[int(i) % len(COLOURS)])
    for i, e in enumerate(experiments):
        if e.crystal is None:
            continue
        A = np.asarray(e.crystal.A)
        for j, name in enumerate(("a*", "b*", "c*")):
            v = A[:, j]
            traces.append({"type": "scatter3d", "mode": "lines+text", "name": f"{name} ({i})",
                           "x": [0, v[0]], "y": [0, v[1]], "z": [0, v[2]],
                           "text": ["", f"{name}{i if len(experiments) > 1 else ''}"],
                           "line": {"width": 6, "color": COLOURS[(i + j) % len(COLOURS)]},
                           "showlegend": j == 0 or len(experiments) == 1})
    axis = {"showbackground": False, "zeroline": True}
    return {"data": traces, "layout": {
        "title": {"text": title}, "height": 820, "margin": {"l": 0, "r": 0, "t": 40, "b": 0},
        "scene": {"aspectmode": "data", "xaxis": {**axis, "title": {"text": "x (1/A)"}},
                  "yaxis": {**axis, "title": {"text": "y (1/A)"}},
                  "zaxis": {**axis, "title": {"text": "z (1/A)"}}},
        "legend": {"itemsizing": "constant"}}}
