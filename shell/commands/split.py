"""Experiment selection (``experiments=0,2``) and the ``split`` command.

Several sweeps (or crystals) live in one state as several experiments, numbered from 0
as ``show`` lists them. The commands that work per experiment (findspots, index, refine,
integrate) take ``experiments=`` to work on some of them only: the chosen experiments
and the rows of their reflections go to the step, and the result is put back at their
places; the other experiments, and their rows in every table, pass through unchanged.

``split`` is dials.split_experiments for a session: ``split experiments=1,3`` makes a
new step whose state keeps only those experiments (tables filtered, ``id`` renumbered;
``undo`` brings the others back); ``split`` alone writes one ``split_N.expt`` /
``split_N.refl`` pair per experiment into the session folder, as dials.split_experiments
does, and leaves the state as it is.
"""

from __future__ import annotations

import numpy as np

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class ExperimentSelectionError(GonioError):
    pass


#: data entries that describe the experiments as a whole (stale after a selection)
_DATA_OF_ALL = ("rbs",)


def selection_param() -> Param:
    """The ``experiments=`` parameter of the commands that work per experiment."""
    return Param("experiments", "ints", None, "work on these experiments only (numbers as "
                 "`show` lists them, e.g. experiments=0,2); the others pass through "
                 "unchanged. None: all", allow_none=True)


def params() -> list[Param]:
    return [
        Param("experiments", "ints", None, "keep only these experiments (a new step); None: "
              "write one file pair per experiment instead", allow_none=True),
        Param("output.prefix", "str", "split", "with no experiments=: write PREFIX_N.expt "
              "and PREFIX_N.refl for every experiment N"),
        Param("output.table", "str", None, "the table written with no experiments= "
              "(default: the newest)", allow_none=True),
    ]


def parse_selection(values, n: int) -> list[int] | None:
    """The chosen experiment numbers (sorted, unique), None for all; an error when one is
    not an experiment of the state."""
    if values is None:
        return None
    sel = [int(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    bad = [v for v in sel if not 0 <= v < n]
    if not n:
        raise ExperimentSelectionError(
            "experiments= selects among the experiments of the session, but there are none "
            "yet: import images or an .expt file first.")
    if bad:
        raise ExperimentSelectionError(
            f"experiments={','.join(str(v) for v in sel)}: there is no experiment "
            f"{bad[0]}; the session has {n} experiment(s), numbered 0 to {n - 1} (see show). "
            "Give numbers from that range.")
    if len(set(sel)) != len(sel):
        raise ExperimentSelectionError(
            f"experiments={','.join(str(v) for v in sel)} names an experiment twice: give "
            "each number once.")
    return sorted(sel)


def _imageset_numbers(experiments) -> list[int]:
    """The imageset (0, 1, ... in order of first use) of each experiment."""
    out, seen = [], []
    for e in experiments:
        k = next((j for j, ref in enumerate(seen) if ref is e.imageset or
                  (ref is not None and ref == e.imageset)), None)
        if k is None:
            seen.append(e.imageset)
            k = len(seen) - 1
        out.append(k)
    return out


def whole_imagesets(experiments, sel: list[int]) -> list[int]:
    """``sel`` grown to every experiment of the imagesets it touches (all lattices of a
    sweep: re-indexing works on whole sweeps)."""
    isets = _imageset_numbers(experiments)
    chosen = {isets[i] for i in sel}
    return [i for i in range(len(experiments)) if isets[i] in chosen]


def _current_ids(table, identifiers) -> np.ndarray:
    """The experiment of each row as a position in ``identifiers`` (the experiments the
    table goes with), through the table's experiment identifiers where they name one of
    them (a table made before index added lattices keeps pointing at its sweeps), else the
    ``id`` column as it is."""
    ids = np.asarray(table["id"], np.int64) if "id" in table else np.zeros(len(table), np.int64)
    known = {old: identifiers.index(x) for old, x in table.experiment_identifiers.items()
             if x in identifiers}
    if not known or all(k == v for k, v in known.items()):
        return ids
    out = ids.copy()
    for old, new in known.items():
        out[ids == old] = new
    return out


def _rows(table, keep_ids: dict, keep_isets: dict, identifiers: list):
    """The rows of ``table`` whose experiment is a key of ``keep_ids`` (id renumbered to
    its value), plus unassigned rows (id < 0) whose imageset is a key of ``keep_isets``."""
    ids = _current_ids(table, identifiers)
    lut = np.full(max(ids.max(initial=-1), max(keep_ids, default=-1)) + 2, -2, np.int64)
    for old, new in keep_ids.items():
        lut[old] = new
    new_ids = np.where(ids >= 0, lut[np.clip(ids, 0, len(lut) - 1)], -1)
    keep = new_ids >= 0
    if "imageset_id" in table:
        iset = np.asarray(table["imageset_id"], np.int64)
        ilut = np.full(max(iset.max(initial=-1), max(keep_isets, default=-1)) + 2, -2, np.int64)
        for old, new in keep_isets.items():
            ilut[old] = new
        new_iset = ilut[np.clip(iset, 0, len(ilut) - 1)]
        keep |= (ids < 0) & (new_iset >= 0)
    sub = table.select(keep)
    if "id" in sub:
        sub["id"] = new_ids[keep].astype(table["id"].dtype)
    if "imageset_id" in sub:
        sub["imageset_id"] = np.maximum(new_iset[keep], 0).astype(table["imageset_id"].dtype)
    sub.experiment_identifiers = {new: identifiers[old] for old, new in keep_ids.items()
                                  if old < len(identifiers)}
    return sub


def _with_imagesets(table, experiments):
    """The table with an ``imageset_id`` column (from ``id``) where it has none: with several
    lattices on a sweep, experiment and imageset numbers differ, and index reads spots
    by imageset."""
    if "id" in table and len(table) and "imageset_id" not in table and len(experiments):
        isets = np.asarray(_imageset_numbers(experiments), np.int32)
        table["imageset_id"] = isets[np.clip(table["id"], 0, len(isets) - 1)]
    return table


def select_state(state, sel: list[int]):
    """A state with only the experiments ``sel`` (in that order), their rows of every
    table renumbered, and the data that describe all experiments dropped."""
    from gonio.core.models.experiment import ExperimentList
    from gonio.store.state import State

    isets = _imageset_numbers(state.experiments)
    keep_ids = {old: new for new, old in enumerate(sel)}
    keep_isets = {}
    for old in sel:
        keep_isets.setdefault(isets[old], len(keep_isets))
    idents = state.experiments.identifiers()
    experiments = ExperimentList(state.experiments[i] for i in sel)
    tables = {name: _with_imagesets(_rows(t, keep_ids, keep_isets, idents), experiments)
              for name, t in state.reflections.items()}
    data = {k: v for k, v in state.data.items() if k not in _DATA_OF_ALL}
    return State(experiments, tables, data)


def merge_selected(state, sel: list[int], experiments, tables: dict, stale=(), data=None):
    """The state with the experiments ``sel`` replaced by ``experiments`` (the result of a
    step run on :func:`select_state`), and its tables ``tables`` put back.

    Results whose imageset is that of a chosen experiment take its place (index may make
    several per sweep), in order; the others pass through, with their rows of the given
    tables and of the ``stale`` ones (made from the old models of the chosen ones: those
    rows are dropped); other tables are kept as they are.
    """
    from gonio.core.models.experiment import ExperimentList
    from gonio.core.reflection_table import ReflectionTable

    chosen = set(sel)
    out, where_old, where_new, placed = ExperimentList(), {}, {}, set()
    for i, e in enumerate(state.experiments):
        if i not in chosen:
            where_old[i] = len(out)
            out.append(e)
            continue
        for j, x in enumerate(experiments):
            if j not in placed and (x.imageset is e.imageset or x.imageset == e.imageset):
                placed.add(j)
                where_new[j] = len(out)
                out.append(x)
    for j, x in enumerate(experiments):  # results of no chosen imageset (none expected)
        if j not in placed:
            where_new[j] = len(out)
            out.append(x)
    isets_out = _imageset_numbers(out)
    isets_old = _imageset_numbers(state.experiments)
    isets_new = _imageset_numbers(experiments)
    chosen_isets = {isets_old[i] for i in sel}
    keep_isets_old = {isets_old[i]: isets_out[k] for i, k in where_old.items()
                      if isets_old[i] not in chosen_isets}
    keep_isets_new = {isets_new[j]: isets_out[k] for j, k in where_new.items()}
    merged = {}  # the step's own tables last: they become the newest
    for name in [n for n in stale if n in state.reflections and n not in tables] + list(tables):
        parts = []
        if name in state.reflections:
            parts.append(_rows(state.reflections[name], where_old, keep_isets_old,
                               state.experiments.identifiers()))
        if name in tables:
            parts.append(_rows(tables[name], where_new, keep_isets_new,
                               [x.identifier for x in experiments]))
        parts = [p for p in parts if len(p)] or parts[-1:]
        t = parts[0] if len(parts) == 1 else ReflectionTable.concatenate(parts)
        t.experiment_identifiers = {k: out[k].identifier for k in
                                    np.unique(t["id"][t["id"] >= 0]).tolist()} \
            if "id" in t and len(t) else {}
        if len(t) or name in tables:
            merged[name] = _with_imagesets(t, out)
    drop = tuple(n for n in stale if n not in merged)
    return state.evolve(experiments=out, reflections=merged, data=data,
                        drop=drop + _DATA_OF_ALL)


def run(ctx: Context, parsed) -> Outcome:
    state = ctx.state
    n = len(state.experiments)
    sel = parse_selection(parsed.values.get("experiments"), n)
    if n < 2:
        raise ExperimentSelectionError(
            f"split needs several experiments, and the session has {n}: there is nothing to "
            "split. Import several sweeps (or .expt files) first; save writes the single "
            "experiment's files.")
    if sel is None:
        return _write_each(ctx, state, parsed.values)
    new = select_state(state, sel)
    text = (f"Kept experiment(s) {', '.join(str(i) for i in sel)} of {n} (now numbered "
            f"0 to {len(sel) - 1}); undo brings the others back.")
    from gonio.shell.render import experiments_overview

    return Outcome(state=new, text=experiments_overview(new) + "\n" + text,
                   metrics={"experiments": len(sel), "kept": sel})


def _write_each(ctx: Context, state, values) -> Outcome:
    """dials.split_experiments: PREFIX_N.expt and PREFIX_N.refl per experiment."""
    from pathlib import Path

    from gonio.core.io.dials_expt import write_expt
    from gonio.core.io.dials_refl import write_refl
    from gonio.core.io.file_kinds import JSON, REFL, check_replaceable

    name = values.get("output.table") or state.newest_table
    if name is not None and name not in state.reflections:
        raise ExperimentSelectionError(
            f"There is no reflection table '{name}'; the state has "
            f"{', '.join(state.reflections) or 'none'}.")
    prefix = values.get("output.prefix") or "split"
    base = Path(prefix) if Path(prefix).is_absolute() else Path(ctx.cwd) / prefix
    if not base.parent.is_dir():
        raise ExperimentSelectionError(f"The folder {base.parent} does not exist; create it "
                                       "or choose another prefix.")
    n = len(state.experiments)
    width = len(str(n - 1))
    for i in range(n):  # every file checked before the first is written
        stem = f"{base}_{i:0{width}d}"
        check_replaceable(stem + ".expt", JSON)
        if name is not None:
            check_replaceable(stem + ".refl", REFL)
    written = []
    for i in range(n):
        part = select_state(state, [i])
        stem = f"{base}_{i:0{width}d}"
        write_expt(part.experiments, stem + ".expt")
        written.append(stem + ".expt")
        if name is not None:
            write_refl(part.reflections[name], stem + ".refl")
            written.append(stem + ".refl")
    return Outcome(text=f"Wrote {len(written)} files: " + ", ".join(written))
