"""Reciprocal-lattice points for viewers (dials.export format=json).

``{"rlp": [x0, y0, z0, x1, ...], "imageset_id": [...], "experiment_id": [...],
"experiments": {...}}``: the observed centroids mapped to reciprocal space
(1/A, crystal frame at phi = 0; :mod:`gonio.core.geometry.spots`), rounded to
``n_digits`` decimals, with the DIALS experiment list when asked for.
"""

from __future__ import annotations

import json

import numpy as np

from gonio.core.geometry.spots import centroid_px_to_mm, map_to_reciprocal_space
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable


def rlp_dict(experiments: ExperimentList, table: ReflectionTable, n_digits: int | None = 6) -> dict:
    t = table.select(table["id"] >= 0)
    t = t.copy()
    centroid_px_to_mm(experiments, t)
    map_to_reciprocal_space(experiments, t)
    rlp = t["rlp"] if n_digits is None else np.round(t["rlp"], n_digits)
    if "imageset_id" in t:
        imageset_id, expt_id = t["imageset_id"].tolist(), t["id"].tolist()
    else:
        imageset_id, expt_id = t["id"].tolist(), None
    return {"rlp": rlp.ravel().tolist(), "imageset_id": imageset_id, "experiment_id": expt_id}


def rlp_json(experiments: ExperimentList, table: ReflectionTable, compact: bool = True,
             n_digits: int | None = 6, with_experiments: bool = True) -> str:
    from gonio.core.io.dials_expt import experiments_to_dict

    d = rlp_dict(experiments, table, n_digits)
    if with_experiments:
        d["experiments"] = experiments_to_dict(experiments)
    if compact:
        return json.dumps(d, separators=(",", ":"), ensure_ascii=True)
    return json.dumps(d, separators=(",", ": "), indent=1, ensure_ascii=True)
