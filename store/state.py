"""The processing state after a step, and its encoding into stored artifacts.

A state is what the next command works on: the experiment list, named
reflection tables (``strong``, ``indexed``, ...) and small named results
(JSON-serialisable, e.g. the rbs solution table). Each part is one artifact
in the blob store, so a step that changes only the experiments shares the
reflection tables of its parent.

Artifact names: ``experiments`` (DIALS .expt JSON), ``reflections/<name>``
(DIALS .refl msgpack), ``data/<name>`` (JSON).

A session folder is data only: decoding a stored state parses JSON and
msgpack into plain values and numpy arrays, and nothing else. A stored table
in any other form (a Python pickle, which the DIALS 1.x file reader accepts
for files a user imports) is refused with :class:`UnsafeArtifactError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gonio.core.errors import GonioError
from gonio.core.io.dials_expt import expt_from_bytes, expt_to_bytes
from gonio.core.io.dials_refl import refl_from_bytes, refl_to_bytes
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import ReflectionTable
from gonio.store.errors import CorruptHistoryError, UnsafeArtifactError


class _Pending:
    """A stored table not decoded yet (decoded on first access)."""

    __slots__ = ("load",)

    def __init__(self, load):
        self.load = load


class Tables(dict):
    """Named reflection tables; stored ones are decoded on first access, so moving
    through the history (undo, goto) costs nothing until a table is used."""

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
        refl.update(reflections or {})
        dat = {k: v for k, v in self.data.items() if k not in drop}
        dat.update(data or {})
        return State(self.experiments if experiments is None else experiments, refl, dat)


def encode_changes(old: State, new: State) -> dict[str, bytes | None]:
    """Artifacts that differ between two states (None = removed)."""
    out: dict[str, bytes | None] = {}
    if new.experiments is not old.experiments:
        out["experiments"] = expt_to_bytes(new.experiments)
    old_names = list(old.reflections)
    for name in new.reflections:
        if name not in old.reflections or old.reflections.raw(name) is not new.reflections.raw(name):
            out[f"reflections/{name}"] = refl_to_bytes(new.reflections[name])
    for name in old_names:
        if name not in new.reflections:
            out[f"reflections/{name}"] = None
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
        dict.__setitem__(
            reflections, n, _Pending(lambda blob=blob, n=n: _table(load(blob), n, where))
        )
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


def _table(data: bytes, name: str, where: str) -> ReflectionTable:
    """A stored table from its msgpack bytes; anything else is refused, never unpickled."""
    if data[:1] != b"\x93":  # every table gonio stores is a 3-element msgpack array
        raise UnsafeArtifactError(
            f"The table '{name}' of {where} is not in the format gonio writes (DIALS msgpack; it "
            f"starts with {bytes(data[:4])!r}), so gonio will not decode it: a session folder "
            "is read as data only. The folder was altered by something other than gonio; "
            "run `gonio check`, and use a step whose tables are intact."
        )
    return refl_from_bytes(data, source=f"the table '{name}' of {where}")
