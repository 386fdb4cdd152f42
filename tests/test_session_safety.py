"""A session folder from someone else is data only: a crafted artifact (a pickle, msgpack with
unexpected types, broken JSON) is refused with a clear error and never runs code."""

from __future__ import annotations

import json
import os
import pickle

import msgpack
import pytest

from gonio.core.errors import GonioError
from gonio.core.io.dials_refl import ReflectionFileError
from gonio.shell.session import Session
from gonio.store.errors import UnsafeArtifactError
from gonio.store.history import History


class _Payload:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_session(folder, artifacts):
    """A session whose single step holds ``artifacts`` exactly (checksums consistent)."""
    with History.open(folder) as h:
        return h.commit_step("import", "import data", {}, artifacts, "", {}, 0.1, "t")


def test_pickled_table_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    crafted_session(tmp_path, {"reflections/strong": pickle.dumps(_Payload(marker), protocol=2)})
    s = Session(tmp_path)
    assert "strong" in s.state.reflections  # the name is listed; nothing decoded yet
    with pytest.raises(UnsafeArtifactError, match="'strong' of step 1 .* not in the format gonio writes"):
        s.state.reflections["strong"]  # noqa: B018
    r = s.run_line("save output.table=strong")
    assert not r.ok and "Error" in r.text
    s.close()
    assert not marker.exists()


def test_msgpack_table_with_unexpected_types_is_refused(tmp_path):
    evil = msgpack.packb([
        "dials::af::reflection_table", 1,
        {"nrows": 1, "identifiers": {}, "data": {"x": ["evil_type", [1, msgpack.ExtType(42, b"x")]]}},
    ])
    crafted_session(tmp_path, {"reflections/strong": evil})
    s = Session(tmp_path)
    with pytest.raises(ReflectionFileError, match="strong"):
        s.state.reflections["strong"]  # noqa: B018
    s.close()


@pytest.mark.parametrize("name, blob", [
    ("experiments", b"\x80\x04not json at all"),
    ("experiments", json.dumps({"__id__": "ExperimentList", "experiment": [{"beam": 0}],
                                "beam": [{"__class__": "os.system", "direction": "rm -rf"}]}).encode()),
    ("data/solutions", b"cos\nsystem\n(S'true'\ntR."),
    ("order", b"\xff\xfe"),
])
def test_crafted_json_artifacts_are_clear_errors(tmp_path, name, blob):
    crafted_session(tmp_path, {name: blob})
    s = Session(tmp_path)
    with pytest.raises(GonioError) as err:
        s.state  # noqa: B018
    assert "step 1 (import data)" in str(err.value)  # a sentence naming the step
    r = s.run_line("show")
    assert not r.ok and r.text.startswith("Error:") and "internal error" not in r.text
    s.close()


def test_nothing_in_the_session_folder_is_imported_or_executed(tmp_path):
    crafted_session(tmp_path, {"data/x": b"1"})
    marker = tmp_path / "ran"
    for name in ("__init__.py", "gonio.py", "sitecustomize.py", "conftest.py"):
        (tmp_path / ".gonio" / name).write_text(f"open({str(marker)!r}, 'w')\n")
    s = Session(tmp_path)
    assert s.run_line("history").ok and s.state.data == {"x": 1}
    s.close()
    assert not marker.exists()
