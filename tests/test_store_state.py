"""Encoding of processing states into artifacts: unchanged parts are shared, tables decode lazily."""

import numpy as np
import pytest
from conftest import data_path

from gonio.core.models.beam import Beam
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.reflection_table import ReflectionTable
from gonio.shell.session import Session
from gonio.store.state import State, Tables, _Pending, decode_state, encode_changes, freeze


def _state():
    t = ReflectionTable({"id": np.zeros(3, np.int32), "d": np.array([1.0, 2.0, 3.0])})
    return State(ExperimentList([Experiment(beam=Beam(wavelength=0.9))]), {"strong": t}, {"x": [1]})


def test_only_changed_parts_are_encoded_and_tables_decode_lazily():
    blobs = {}

    def put(changes):
        for k, v in changes.items():
            if v is not None:
                blobs[k] = v
        return {k: k for k in changes if changes[k] is not None}

    s0 = State()
    s1 = _state()
    manifest = put(encode_changes(s0, s1))
    assert set(manifest) == {"experiments", "reflections/strong", "columns/strong/id",
                             "columns/strong/d", "data/x", "order"}
    loaded = decode_state(manifest, blobs.__getitem__)
    assert isinstance(loaded.reflections, Tables)
    assert isinstance(loaded.reflections.raw("strong"), _Pending)  # not decoded yet
    s2 = loaded.evolve(data={"y": 2})
    assert isinstance(s2.reflections.raw("strong"), _Pending)  # evolve does not decode
    changes = encode_changes(loaded, s2)
    assert set(changes) == {"data/y"}  # the table is shared, not written again
    assert np.array_equal(s2.reflections["strong"]["d"], [1.0, 2.0, 3.0])
    assert loaded.experiments[0].beam.wavelength == 0.9


def test_newest_table_and_drop():
    s = _state()
    t = ReflectionTable({"id": np.zeros(1, np.int32)})
    s2 = s.evolve(reflections={"indexed": t})
    assert s2.newest_table == "indexed"
    s3 = s2.evolve(drop=("indexed",))
    assert list(s3.reflections) == ["strong"] and encode_changes(s2, s3)["reflections/indexed"] is None


def _store():
    """A dict blob store and a manifest-keeping ``commit(old, new)`` (as History does)."""
    blobs: dict[str, bytes] = {}

    def commit(manifest, changes):
        manifest = dict(manifest)
        for name, data in changes.items():
            if data is None:
                manifest.pop(name, None)
            else:
                h = f"h{len(blobs)}"
                blobs[h] = data
                manifest[name] = h
        return manifest

    return blobs, commit


def test_a_step_stores_only_the_columns_it_changed():
    blobs, commit = _store()
    t = ReflectionTable({"id": np.zeros(4, np.int32), "d": np.arange(4.0),
                         "miller_index": np.ones((4, 3), np.int32)}, {0: "abc"})
    s1 = State(ExperimentList(), {"indexed": t})
    m1 = commit({}, encode_changes(State(), s1))
    # reindex-like: a new table sharing every column but the Miller indices
    t2 = ReflectionTable({k: t[k] for k in t.keys()}, t.experiment_identifiers)
    t2["miller_index"] = -t["miller_index"]
    s2 = s1.evolve(reflections={"indexed": t2})
    changes = encode_changes(s1, s2)
    # id is re-set through an int32 conversion (a copy), d is the same array
    assert set(changes) == {"reflections/indexed", "columns/indexed/miller_index",
                            "columns/indexed/id"}
    m2 = commit(m1, changes)
    assert m2["columns/indexed/d"] == m1["columns/indexed/d"]  # inherited, not written again
    back = decode_state(m2, blobs.__getitem__).reflections["indexed"]
    assert list(back.keys()) == ["id", "d", "miller_index"]
    assert np.array_equal(back["miller_index"], -np.ones((4, 3))) and back.experiment_identifiers == {0: "abc"}
    # a decoded table is known to be stored by columns: a change of one column stores one
    loaded = decode_state(m2, blobs.__getitem__)
    t3 = loaded.reflections["indexed"]
    t4 = ReflectionTable({k: t3[k] for k in t3.keys() if k != "id"}, t3.experiment_identifiers)
    t4["d"] = t3["d"] * 2
    changes = encode_changes(loaded, loaded.evolve(reflections={"indexed": t4}))
    # (miller_index is re-set through its int32 conversion, a copy: stored again)
    assert set(changes) == {"reflections/indexed", "columns/indexed/d", "columns/indexed/id",
                            "columns/indexed/miller_index"}
    assert changes["columns/indexed/id"] is None  # the dropped column's artifact goes
    m3 = commit(m2, changes)
    back = decode_state(m3, blobs.__getitem__).reflections["indexed"]
    assert list(back.keys()) == ["d", "miller_index"] and np.array_equal(back["d"], 2 * np.arange(4.0))
    # dropping the table drops its columns
    s5 = loaded.evolve(drop=("indexed",))
    changes = encode_changes(loaded, s5)
    assert changes["reflections/indexed"] is None
    assert {k for k, v in changes.items() if v is None} == {
        "reflections/indexed", "columns/indexed/id", "columns/indexed/d",
        "columns/indexed/miller_index"}


def test_tables_stored_whole_still_open_and_are_stored_by_columns_when_changed():
    from gonio.core.io.dials_refl import refl_to_bytes

    blobs, commit = _store()
    t = ReflectionTable({"id": np.zeros(3, np.int32), "d": np.array([1.0, 2.0, 3.0])}, {0: "x"})
    m1 = commit({}, {"reflections/strong": refl_to_bytes(t)})  # as gonio stored tables before
    old = decode_state(m1, blobs.__getitem__)
    assert old.reflections["strong"] == t
    same = old.reflections["strong"]
    t2 = ReflectionTable({"id": same["id"], "d": same["d"]}, same.experiment_identifiers)
    t2["e"] = same["d"] + 1
    changes = encode_changes(old, old.evolve(reflections={"strong": t2}))
    # its columns had no artifacts of their own: all are stored, shared arrays included
    assert set(changes) == {"reflections/strong", "columns/strong/id", "columns/strong/d",
                            "columns/strong/e"}
    back = decode_state(commit(m1, changes), blobs.__getitem__).reflections["strong"]
    assert back == t2


def test_a_column_table_header_listing_a_missing_column_is_an_error():
    import pytest

    from gonio.store.errors import CorruptHistoryError

    blobs, commit = _store()
    t = ReflectionTable({"id": np.zeros(3, np.int32), "d": np.arange(3.0)})
    m = commit({}, encode_changes(State(), State(ExperimentList(), {"strong": t})))
    del m["columns/strong/d"]
    with pytest.raises(CorruptHistoryError, match="lists the column 'd', which is not stored"):
        decode_state(m, blobs.__getitem__).reflections["strong"]


def test_a_step_cannot_write_into_the_arrays_of_a_state_it_did_not_make(tmp_path):
    """Columns shared with the parent keep the parent's artifact: once a step has made a
    state, its arrays are read-only, so a later step that wrote into them in place (and
    would leave the stored session different from what it computed) fails at once."""
    s = _state()
    freeze(s)
    d = s.reflections["strong"]["d"]
    with pytest.raises(ValueError, match="read-only"):
        d[0] = 5.0
    new = s.reflections["strong"].copy()  # what a step does: new arrays
    new["d"][0] = 5.0
    assert s.reflections["strong"]["d"][0] == 1.0

    folder = data_path("x4_xds")
    session = Session(tmp_path)
    try:
        r = session.run_line(f"import {folder / 'indexed.expt'} {folder / 'indexed.refl'}")
        assert r.ok, r.text
        state = session.state_at(session.head)
        table = state.reflections[state.newest_table]
        assert not any(v.flags.writeable for _, v in table.items() if isinstance(v, np.ndarray))
    finally:
        session.close()


def test_a_column_another_table_keeps_shares_its_blob(tmp_path):
    """A new table that keeps a column of another stored table (index's ``indexed`` keeps the
    shoeboxes of ``strong``) records a reference to that column's artifact: not encoded,
    hashed or written again, the same blob in both manifests, decoded alike. A reference to
    an artifact the parent lacks records nothing."""
    from gonio.store.artifacts import SameAs
    from gonio.store.errors import CorruptHistoryError
    from gonio.store.history import History

    strong = ReflectionTable({"id": np.zeros(4, np.int32), "xyz": np.arange(12.0).reshape(4, 3),
                              "n_signal": np.arange(4)}, {0: "abc"})
    s1 = State(ExperimentList(), {"strong": strong})
    h = History.open(tmp_path)
    try:
        def record(old, new, parent):
            return h.record_step("step", "step", {}, encode_changes(old, new), "", {}, 0.1,
                                 "test", parent=parent).step

        first = record(State(), s1, None)
        indexed = ReflectionTable({"xyz": strong["xyz"], "n_signal": strong["n_signal"] + 1,
                                   "miller_index": np.ones((4, 3), np.int32)}, {0: "abc"})
        s2 = s1.evolve(reflections={"indexed": indexed})
        changes = encode_changes(s1, s2)
        assert changes["columns/indexed/xyz"] == SameAs("columns/strong/xyz")
        assert isinstance(changes["columns/indexed/n_signal"], bytes)  # a new array
        second = record(s1, s2, first)
        m1, m2 = h.manifest(first), h.manifest(second)
        assert m2["columns/indexed/xyz"] == m1["columns/strong/xyz"]
        back = decode_state(m2, h.loader(second)).reflections["indexed"]
        assert back.keys() == indexed.keys()
        assert all(np.array_equal(back[k], indexed[k]) for k in indexed.keys())
        n_steps = len(h.steps())
        with pytest.raises(CorruptHistoryError, match="columns/strong/nothing"):
            h.record_step("step", "step", {}, {"columns/x/y": SameAs("columns/strong/nothing")},
                          "", {}, 0.1, "test", parent=second)
        assert len(h.steps()) == n_steps and h.head == second
    finally:
        h.close()
