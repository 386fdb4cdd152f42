"""Partial measurements of one reflection summed before scaling, as dials.scale does.

dials.integrate can split a reflection over several shoeboxes (same experiment and
``partial_id``, each with partiality < 0.99). dials.scale (DIALS 3.x,
``sum_partial_reflections``) combines them into the first one before anything else:
summation intensities and variances added, profile intensities averaged with weights
I^2 / V, partialities added; the others leave the table. Only rows whose every intensity
kind present (profile, summation, scaled) has a positive variance take part. Which rows
are excluded from scaling was decided before, on each part alone, and stays so.

Here the combined values go into the first row of a copy of the table and the absorbed
rows are returned to be flagged excluded, so that the output keeps every input row.
"""

from __future__ import annotations

import numpy as np

from gonio.core.export.filtering import combine_partials
from gonio.core.reflection_table import ReflectionTable

_KINDS = (("profile", "intensity.prf"), ("sum", "intensity.sum"), ("scale", "intensity.scale"))


def sum_partials(table: ReflectionTable) -> tuple[ReflectionTable, np.ndarray]:
    """(table with each partial reflection's parts combined into its first row, bool (N,)
    of the rows absorbed into another). The table is returned as it is when nothing is
    combined."""
    absorbed = np.zeros(len(table), bool)
    if "partiality" not in table or "partial_id" not in table:
        return table, absorbed
    kinds = [(k, c) for k, c in _KINDS if c + ".value" in table and c + ".variance" in table]
    cand = table["partiality"] < 0.99
    for _, c in kinds:
        cand &= table[c + ".variance"] > 0
    rows = np.flatnonzero(cand)
    if len(rows) < 2:
        return table, absorbed
    sub = table.select(rows)
    sub["_row"] = rows
    combined = combine_partials(sub, [k for k, _ in kinds])
    if len(combined) == len(sub):
        return table, absorbed
    absorbed[rows] = True
    absorbed[combined["_row"]] = False
    out = table.copy()
    first = combined["_row"]
    out["partiality"][first] = combined["partiality"]
    for _, c in kinds:
        for part in (".value", ".variance"):
            out[c + part][first] = combined[c + part]
    return out, absorbed
