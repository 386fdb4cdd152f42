"""The processing state after a step, and its encoding into stored artifacts.

A state is what the next command works on: the experiment list, named
reflection tables (``strong``, ``indexed``, ...) and small named results
(JSON-serialisable, e.g. the rbs solution table). Each part is one artifact
in the blob store, so a step that changes only the experiments shares the
reflection tables of its parent.

Artifact names: ``experiments`` (DIALS .expt JSON), ``reflections/<name>``
(a table), ``columns/<name>/<column>`` (its columns), ``data/<name>`` (JSON).

A table is stored column by column: ``reflections/<name>`` is a small header
(msgpack: :data:`COLUMN_TABLE`, the row count, the experiment identifiers and
the column names in order) and each column is a one-column DIALS .refl
msgpack of its own, so a step that changes a few columns of a table (reindex:
the Miller indices; refine: the predictions and flags) stores only those: a
column that is the same array as in the state the step started from keeps
its parent's artifact (and one that is the same array as a column of another
of its tables, as index's ``indexed`` keeps the shoeboxes of ``strong``, shares
that column's blob: :class:`~gonio.store.artifacts.SameAs`). So a step must
never write into the arrays of the state it started from (states are values: a
step makes new columns, as
``ReflectionTable.copy`` or a new array does; ``set_flags`` writes in place, so
a step that sets flags copies the flags column first). Tables stored whole as
one DIALS .refl msgpack (by gonio before column storage) are read as before.

A session folder is data only: decoding a stored state parses JSON and
msgpack into plain values and numpy arrays, and nothing else. A stored table
in any other form (a Python pickle, which the DIALS 1.x file reader accepts
for files a user imports) is refused with :class:`UnsafeArtifactError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import msgpack
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.io.dials_expt import expt_from_bytes, expt_to_bytes
from gonio.core.io.dials_refl import refl_from_bytes, refl_to_bytes
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable
from gonio.store.artifacts import SameAs
from gonio.store.errors import CorruptHistoryError, UnsafeArtifactError

#: First element of the header of a table stored column by column.
COLUMN_TABLE = "gonio::column_table"


class _Pending:
    """A stored table not decoded yet (decoded on first access)."""

    __slots__ = ("load",)

    def __init__(self, load):
        self.load = load


class Tables(dict):
    """Named reflection tables; stored ones are decoded on first access, so moving
    through the history (undo, goto) costs nothing until a table is used.

    ``by_columns`` maps the name of a table stored column by column (as the state's
    step has it in its manifest) to the names of its stored columns."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_columns: dict[str, list[str]] = {}

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if isinstance(value, _Pending):
            value = value.load()
            super().__setitem__(name, value)
        return value

    def get(self, name, default=None):
        return self[name] if name in self else default

    def items(self):
        return [(k, self[k]) for k in self]

    def values(self):
        return [self[k] for k in self]

    def raw(self, name):
        """The table or its pending loader, without decoding (for identity checks)."""
        return super().__getitem__(name)


@dataclass
class State:
    experiments: ExperimentList = field(default_factory=ExperimentList)
    reflections: dict[str, ReflectionTable] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.reflections, Tables):
            self.reflections = Tables(self.reflections)

    @property
    def is_empty(self) -> bool:
        return not self.experiments and not self.reflections

    @property
    def newest_table(self) -> str | None:
        """Name of the most recently made reflection table (insertion order)."""
        return next(reversed(self.reflections), None) if self.reflections else None

    def evolve(self, experiments=None, reflections=None, data=None, drop=()) -> State:
        """A new state: given parts replaced, tables/data named in ``drop`` removed.

        A table given in ``reflections`` moves to the end (it becomes the newest).
        """
        refl = Tables()
        for k in self.reflections:
            if k not in drop and k not in (reflections or {}):
                dict.__setitem__(refl, k, self.reflections.raw(k))
                if k in self.reflections.by_columns:
                    refl.by_columns[k] = self.reflections.by_columns[k]
        refl.update(reflections or {})
        dat = {k: v for k, v in self.data.items() if k not in drop}
        dat.update(data or {})
        return State(self.experiments if experiments is None else experiments, refl, dat)


def freeze(state: State) -> None:
    """Make the arrays of ``state``'s decoded tables read-only, once a step has made it.

    A table is stored column by column and a column that is the same array as in the
    parent state keeps the parent's artifact (:func:`encode_changes`), so a later step
    that wrote into such an array in place would leave the stored session different
    from what it computed, silently. Read-only arrays turn that into an immediate
    error; steps make new arrays (``ReflectionTable.copy``, ``np.array(...)``)."""
    for name in state.reflections:
        table = state.reflections.raw(name)
        if isinstance(table, ReflectionTable):
            for _, values in table.items():
                if isinstance(values, np.ndarray):
                    values.flags.writeable = False


def encode_changes(old: State, new: State) -> dict[str, bytes | SameAs | None]:
    """Artifacts that differ between two states (None = removed); a table that changed
    is stored column by column, its columns that are the same arrays as in ``old``
    left out (they keep the artifacts of ``old``'s step), and a column that is the same
    array as a column of another table of ``old`` given as :class:`SameAs` that column's
    artifact."""
    out: dict[str, bytes | SameAs | None] = {}
    if new.experiments is not old.experiments:
        out["experiments"] = expt_to_bytes(new.experiments)
    old_names = list(old.reflections)
    for name in new.reflections:
        if name not in old.reflections or old.reflections.raw(name) is not new.reflections.raw(name):
            out.update(_encode_table(name, old, new))
    for name in old_names:
        if name not in new.reflections:
            out[f"reflections/{name}"] = None
            for column in old.reflections.by_columns.get(name, ()):
                out[_column_artifact(name, column)] = None
    for name, value in new.data.items():
        if name not in old.data or old.data[name] is not value:
            out[f"data/{name}"] = json.dumps(value).encode()
    for name in old.data:
        if name not in new.data:
            out[f"data/{name}"] = None
    # keep table order (newest last) as its own small artifact
    if list(new.reflections) != old_names:
        out["order"] = json.dumps(list(new.reflections)).encode()
    return out


def _column_artifact(table: str, column: str) -> str:
    return f"columns/{table}/{column}"


def _encode_table(name: str, old: State, new: State) -> dict[str, bytes | None]:
    """The header and the changed columns of table ``name`` of ``new`` (and None for the
    columns ``old``'s step stored that the new table no longer has); marks the table as
    stored by columns in ``new``."""
    table = new.reflections[name]
    stored = old.reflections.by_columns.get(name, ()) if name in old.reflections else ()
    before = old.reflections.raw(name) if stored else None
    out: dict[str, bytes | SameAs | None] = {}
    identifiers = {int(k): str(v) for k, v in table.experiment_identifiers.items()}
    elsewhere = _stored_columns(old, besides=name)
    for column, values in table.items():
        if isinstance(before, ReflectionTable) and column in stored and column in before \
                and before[column] is values:
            continue  # the same array as the stored one: its artifact is inherited
        same = elsewhere.get(id(values))
        if same is not None and same[1] is values:
            out[_column_artifact(name, column)] = SameAs(same[0])
            continue
        out[_column_artifact(name, column)] = refl_to_bytes(
            ReflectionTable({column: values}, identifiers))
    for column in stored:
        if column not in table:
            out[_column_artifact(name, column)] = None
    out[f"reflections/{name}"] = msgpack.packb(
        [COLUMN_TABLE, 1, {"nrows": len(table), "identifiers": identifiers,
                           "columns": list(table.keys())}], use_bin_type=True)
    new.reflections.by_columns[name] = list(table.keys())
    return out


def _stored_columns(state: State, besides: str) -> dict[int, tuple[str, object]]:
    """id(array) -> (artifact name, array) of the stored columns of ``state``'s decoded
    tables other than ``besides`` (a column is one object, whatever the table holding it)."""
    out: dict[int, tuple[str, object]] = {}
    for other, columns in state.reflections.by_columns.items():
        table = state.reflections.raw(other) if other in state.reflections else None
        if other == besides or not isinstance(table, ReflectionTable):
            continue
        for column in columns:
            if column in table:
                out.setdefault(id(table[column]), (_column_artifact(other, column),
                                                   table[column]))
    return out


def decode_state(manifest: dict[str, str], load, where: str = "the stored state") -> State:
    """Rebuild a state from a manifest (name -> hash) with ``load(hash) -> bytes``.

    ``where`` names the state in errors (e.g. "step 7 (index)").
    """
    experiments = ExperimentList()
    if "experiments" in manifest:
        try:
            experiments = expt_from_bytes(load(manifest["experiments"]))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise _not_json("experiments", where) from None
        except GonioError as e:
            raise CorruptHistoryError(f"The experiments of {where} cannot be read: {e}") from None
    order = _json(load(manifest["order"]), "order", where) if "order" in manifest else []
    order = [n for n in order if isinstance(n, str)] if isinstance(order, list) else []
    names = [n.split("/", 1)[1] for n in manifest if n.startswith("reflections/")]
    names = [n for n in order if n in names] + [n for n in names if n not in order]
    reflections = Tables()
    for n in names:
        blob = manifest[f"reflections/{n}"]
        prefix = _column_artifact(n, "")
        columns = {a[len(prefix):]: h for a, h in manifest.items() if a.startswith(prefix)}
        if columns:
            reflections.by_columns[n] = list(columns)
        dict.__setitem__(reflections, n, _Pending(
            lambda blob=blob, n=n, columns=columns: _table(load(blob), n, where, columns, load)))
    data = {
        n.split("/", 1)[1]: _json(load(h), n, where)
        for n, h in manifest.items()
        if n.startswith("data/")
    }
    return State(experiments, reflections, data)


def _json(data: bytes, name: str, where: str):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise _not_json(name, where) from None


def _not_json(name: str, where: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(
        f"The artifact '{name}' of {where} is not the JSON gonio writes, so gonio will not use it: "
        "a session folder is read as data only. The folder was altered by something other "
        "than gonio; run `gonio check`, and use a step whose artifacts are intact."
    )


def _table(data: bytes, name: str, where: str, columns: dict[str, str] | None = None,
           load=None) -> ReflectionTable:
    """A stored table from its msgpack bytes (a whole DIALS table, or the header of one
    stored by columns, whose column blobs ``columns`` (column -> hash) ``load`` reads);
    anything else is refused, never unpickled."""
    if data[:1] != b"\x93":  # every table gonio stores is a 3-element msgpack array
        raise _not_table(name, where, f"it starts with {bytes(data[:4])!r}")
    if not data.startswith(_COLUMN_TABLE_PREFIX):
        return refl_from_bytes(data, source=f"the table '{name}' of {where}")
    try:
        _, _, header = msgpack.unpackb(data, raw=False, strict_map_key=False)
        nrows, order = int(header["nrows"]), [str(c) for c in header["columns"]]
        identifiers = {int(k): str(v) for k, v in header["identifiers"].items()}
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException):
        raise _not_table(name, where, "its header cannot be read") from None
    table = ReflectionTable(experiment_identifiers=identifiers)
    for column in order:
        if column not in (columns or {}):
            raise CorruptHistoryError(f"The table '{name}' of {where} lists the column "
                                      f"'{column}', which is not stored. Run `gonio check`, "
                                      "and use a step whose tables are intact.")
        part = load(columns[column])
        if part[:1] != b"\x93":
            raise _not_table(name, where, f"its column '{column}' is not DIALS msgpack")
        one = refl_from_bytes(part, source=f"the column '{column}' of the table '{name}' "
                                           f"of {where}")
        if column not in one or len(one) != nrows:
            raise CorruptHistoryError(f"The column '{column}' of the table '{name}' of {where} "
                                      "does not match its table. Run `gonio check`, and use a "
                                      "step whose tables are intact.")
        table[column] = one[column]
    return table


#: How the header of a table stored by columns begins (a msgpack array of 3 whose first
#: element is the string COLUMN_TABLE).
_COLUMN_TABLE_PREFIX = b"\x93" + msgpack.packb(COLUMN_TABLE, use_bin_type=True)


def _not_table(name: str, where: str, why: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(
        f"The table '{name}' of {where} is not in the format gonio writes (DIALS msgpack; "
        f"{why}), so gonio will not decode it: a session folder is read as data only. The "
        "folder was altered by something other than gonio; run `gonio check`, and use a "
        "step whose tables are intact."
    )
