"""Encoding of processing states into artifacts: unchanged parts are shared, tables decode lazily."""

import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.reflection_table import ReflectionTable
from gonio.store.state import State, Tables, _Pending, decode_state, encode_changes


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
    assert set(manifest) == {"experiments", "reflections/strong", "data/x", "order"}
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
