"""Select and correct the intensities to export or merge (dials.export's filter).

The rules of DIALS (dials/util/filter_reflections.py), on whole arrays:

1. reflections assigned to an experiment (``id >= 0``);
2. the chosen intensity kinds (``profile``, ``sum``, ``scale``) must all be
   valid: ``integrated_prf`` / ``integrated_sum`` flags, and for ``scale`` no
   ``bad_for_scaling`` flag and ``inverse_scale_factor > 0``; the other
   intensity columns are dropped; positive variances only;
3. optional ``d_min`` / ``d_max`` (on the ``d`` column);
4. corrections: profile intensities times LP/QE, summation intensities times
   LP/(QE * partiality) (both need partiality > 0 and QE > 0), scaled
   intensities divided by ``inverse_scale_factor`` (variances by its square);
5. partials of one reflection (same ``id`` and ``partial_id``, partiality <
   0.99) combined: summation intensities added, profile intensities averaged
   with weights I^2/V, scaled ones with weights 1/V; the combined row keeps
   the total partiality; then rows with partiality < ``partiality_threshold``
   are dropped (``fractioncalc`` = partiality, or 1 without partialities);
6. optional ``min_isigi`` on every chosen kind.
"""

from __future__ import annotations

import numpy as np

from gonio.core.errors import GonioError
from gonio.core.reflection_table import Flags, ReflectionTable

#: intensity kinds and their DIALS column prefix
KIND_COLUMN = {"profile": "intensity.prf", "sum": "intensity.sum", "scale": "intensity.scale"}
_FLAG = {"profile": Flags.integrated_prf, "sum": Flags.integrated_sum}


class NoReflectionsError(GonioError):
    pass


def is_scaled(table: ReflectionTable) -> bool:
    return "intensity.scale.value" in table and "inverse_scale_factor" in table


def default_intensity_choice(table: ReflectionTable) -> list[str]:
    """DIALS's ``intensity=auto``: scale for scaled data, else profile+sum (those present)."""
    if is_scaled(table):
        return ["scale"]
    return [k for k in ("profile", "sum") if f"{KIND_COLUMN[k]}.value" in table]


def _keep(table: ReflectionTable, sel: np.ndarray, what: str) -> ReflectionTable:
    if not sel.any():
        raise NoReflectionsError(
            f"No reflections are left after {what}. Check the data (were they integrated"
            " and scaled?) or relax the selection (partiality_threshold, d_min, intensity=).")
    return table if sel.all() else table.select(sel)


def filter_for_export(table: ReflectionTable, intensity_choice: list[str],
                      partiality_threshold: float = 0.99, combine_partials: bool = True,
                      min_isigi: float | None = None, d_min: float | None = None,
                      d_max: float | None = None, filter_ice_rings: bool = False) -> ReflectionTable:
    """A new table with corrected intensities of the chosen kinds (module docstring)."""
    choice = list(intensity_choice)
    for kind in choice:
        needed = [f"{KIND_COLUMN[kind]}.value", f"{KIND_COLUMN[kind]}.variance"]
        if kind == "scale":
            needed.append("inverse_scale_factor")
        missing = [c for c in needed if c not in table]
        if missing:
            raise NoReflectionsError(
                f"Cannot use intensity kind '{kind}': the reflections have no "
                f"{', '.join(missing)}. Choose among {', '.join(default_intensity_choice(table)) or 'none'}"
                " (intensity=...).")
    if "profile" in choice and len(choice) > 1 and not table.get_flags(Flags.integrated_prf).any():
        choice.remove("profile")  # as DIALS: no profile-fitted reflections -> the others
    t = _keep(table, table["id"] >= 0, "removing reflections not assigned to an experiment")
    sel = np.ones(len(t), dtype=bool)
    for kind in choice:
        if kind in _FLAG:
            sel &= t.get_flags(_FLAG[kind])
        else:
            sel &= ~t.get_flags(Flags.bad_for_scaling, all_bits=False)
            sel &= t["inverse_scale_factor"] > 0
    t = _keep(t, sel, f"selecting valid {'+'.join(choice)} intensities")
    for kind, prefix in KIND_COLUMN.items():
        if kind not in choice:
            for suffix in (".value", ".variance"):
                if prefix + suffix in t:
                    del t[prefix + suffix]
    sel = np.ones(len(t), dtype=bool)
    for kind in choice:
        sel &= t[f"{KIND_COLUMN[kind]}.variance"] > 0
    t = _keep(t, sel, "removing non-positive variances")
    if filter_ice_rings:
        t = _keep(t, ~t.get_flags(Flags.in_powder_ring), "removing ice-ring reflections")
    if d_min is not None or d_max is not None:
        span = f"the data extend from {t['d'].max():.2f} to {t['d'].min():.2f} A"
        if d_min is not None:
            t = _keep(t, t["d"] > d_min, f"the resolution cut d_min={d_min} ({span})")
        if d_max is not None:
            t = _keep(t, t["d"] < d_max, f"the resolution cut d_max={d_max} ({span})")
    t = _apply_corrections(t, choice)
    t = _combine_and_threshold(t, choice, partiality_threshold, combine_partials)
    if min_isigi is not None:
        sel = np.ones(len(t), dtype=bool)
        for kind in choice:
            p = KIND_COLUMN[kind]
            sel &= t[p + ".value"] / np.sqrt(t[p + ".variance"]) >= min_isigi
        t = _keep(t, sel, f"the cut I/sigma >= {min_isigi}")
    return t


def _apply_corrections(t: ReflectionTable, choice: list[str]) -> ReflectionTable:
    sel = np.ones(len(t), dtype=bool)
    qe = t["qe"] if "qe" in t else t["dqe"] if "dqe" in t else None
    if qe is not None and ("profile" in choice or "sum" in choice):
        sel &= qe > 0
    if "partiality" in t:
        sel &= t["partiality"] > 0
    t = _keep(t, sel, "removing zero partialities and detector efficiencies")
    t = t.copy()
    conv = np.ones(len(t))
    qe = t["qe"] if "qe" in t else t["dqe"] if "dqe" in t else None
    if qe is not None:
        conv = conv / qe
    if "lp" in t:
        conv = conv * t["lp"]
    for kind in choice:
        p = KIND_COLUMN[kind]
        if kind == "profile":
            c = conv
        elif kind == "sum":
            c = conv / t["partiality"] if "partiality" in t else conv
        else:
            c = 1.0 / t["inverse_scale_factor"]
        t[p + ".value"] = t[p + ".value"] * c
        t[p + ".variance"] = t[p + ".variance"] * c * c
    return t


def _combine_and_threshold(t: ReflectionTable, choice, threshold, combine) -> ReflectionTable:
    if "partiality" not in t:
        t["fractioncalc"] = np.ones(len(t))
        return t
    if combine and "partial_id" in t:
        t = combine_partials(t, choice)
    t["fractioncalc"] = t["partiality"].copy()
    return _keep(t, t["partiality"] >= threshold, f"the cut partiality >= {threshold}")


def combine_partials(t: ReflectionTable, choice) -> ReflectionTable:
    """Rows of one partial reflection (same id, partial_id) combined into the first (DIALS)."""
    cand = np.flatnonzero(t["partiality"] < 0.99)
    if len(cand) == 0:
        return t
    key = t["id"][cand].astype(np.int64) * (1 << 40) + t["partial_id"][cand].astype(np.int64)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    multi = counts[inverse] > 1
    rows, group = cand[multi], inverse[multi]
    if len(rows) == 0:
        return t
    _, group = np.unique(group, return_inverse=True)
    n = group.max() + 1
    first = np.full(n, len(t), dtype=np.int64)
    np.minimum.at(first, group, rows)
    t = t.copy()
    t["partiality"][first] = np.bincount(group, weights=t["partiality"][rows], minlength=n)
    for kind in choice:
        p = KIND_COLUMN[kind]
        I, V = t[p + ".value"][rows], t[p + ".variance"][rows]
        if kind == "sum":
            vI = np.bincount(group, weights=I, minlength=n)
            vV = np.bincount(group, weights=V, minlength=n)
        elif kind == "profile":
            w = I * I / V
            sw = np.bincount(group, weights=w, minlength=n)
            ok = sw > 0
            vI = np.where(ok, np.bincount(group, weights=w * I, minlength=n) / np.where(ok, sw, 1), 0.0)
            vV = np.where(ok, np.bincount(group, weights=w * V, minlength=n) / np.where(ok, sw, 1),
                          np.bincount(group, weights=V, minlength=n))
        else:
            sw = np.bincount(group, weights=1.0 / V, minlength=n)
            vI = np.bincount(group, weights=I / V, minlength=n) / sw
            vV = 1.0 / sw
        t[p + ".value"][first] = vI
        t[p + ".variance"][first] = vV
    drop = np.zeros(len(t), dtype=bool)
    drop[rows] = True
    drop[first] = False
    return t.select(~drop)
