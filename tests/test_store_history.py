"""History: commit, manifests, undo/redo/goto, branches, tree, errors (single process)."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.store.errors import (
    NoSuchArtifactError,
    NoSuchStepError,
    NothingToRedoError,
    NothingToUndoError,
)
from gonio.store.history import History


def commit(h, command, artifacts=None, **kw):
    args = dict(
        line=command,
        params={},
        artifacts=artifacts or {},
        log=f"{command} log",
        metrics={},
        duration_s=0.5,
        software_version="0.1.0",
    )
    args.update(kw)
    return h.commit_step(command, **args)


@pytest.fixture
def history(tmp_path):
    with History.open(tmp_path) as h:
        yield h


def test_new_session_is_empty_at_step_0(tmp_path, history):
    assert (tmp_path / ".gonio" / "history.sqlite").is_file()
    assert history.head is None
    assert history.steps() == [] and history.tree() == [] and history.children(0) == []
    assert history.manifest(None) == {} and history.manifest(0) == {} and history.path(0) == []


def test_commit_records_everything_and_manifests_inherit(history):
    before = datetime.now(UTC)
    s1 = commit(
        history,
        "import",
        {"experiments": b"E1"},
        line="import /data/x_####.cbf",
        params={
            "distance": 190.5,
            "beam_centre": (1024.5, 1030.0),
            "mask": None,
            "n": np.int64(3),
            "path": Path("/data/x.cbf"),
        },
        metrics={"n_images": 900, "rmsd": np.float64(0.25)},
        duration_s=2.5,
    )
    s2 = commit(history, "findspots", {"reflections/strong": b"R" * 5000})
    s3 = commit(history, "index", {"experiments": b"E2", "reflections/indexed": b"I"})
    s4 = commit(history, "refine", {"reflections/indexed": None, "reflections/refined": b"F"})
    assert [s1, s2, s3, s4] == [1, 2, 3, 4] and history.head == 4

    info = history.step(1)
    assert (info.id, info.parent_id, info.command, info.status) == (1, None, "import", "ok")
    assert info.line == "import /data/x_####.cbf" and info.log == "import log"
    assert info.params == {
        "distance": 190.5,
        "beam_centre": [1024.5, 1030.0],
        "mask": None,
        "n": 3,
        "path": "/data/x.cbf",
    }
    assert info.metrics == {"n_images": 900, "rmsd": 0.25}
    assert info.duration_s == 2.5 and info.software_version == "0.1.0"
    assert before <= info.finished <= datetime.now(UTC)
    assert abs((info.finished - info.started).total_seconds() - 2.5) < 1e-3
    assert history.step(4).parent_id == 3

    assert sorted(history.manifest(4)) == [
        "experiments",
        "reflections/refined",
        "reflections/strong",
    ]
    assert history.load(4, "experiments") == b"E2"
    assert history.load(4, "reflections/strong") == b"R" * 5000  # inherited from step 2
    assert history.load(2, "experiments") == b"E1"
    assert history.manifest(4)["reflections/strong"] == history.manifest(2)["reflections/strong"]
    with pytest.raises(NoSuchArtifactError, match="no 'reflections/indexed'.*experiments"):
        history.load(4, "reflections/indexed")
    assert [s.id for s in history.path(4)] == [1, 2, 3, 4]


def test_identical_artifacts_are_stored_once(tmp_path, history):
    commit(history, "import", {"experiments": b"same", "copy": b"same"})
    commit(history, "again", {"experiments": b"same", "other": b"different"})
    files = [p for p in (tmp_path / ".gonio" / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 2
    assert history.manifest(1)["experiments"] == history.manifest(2)["copy"]


def test_undo_redo_goto_and_branches(history):
    for name in ("import", "findspots", "index"):
        commit(history, name)
    assert history.undo() == 2 and history.head == 2
    assert history.undo() == 1
    assert history.redo() == 2 and history.redo() == 3
    with pytest.raises(NothingToRedoError, match="no step was made from step 3"):
        history.redo()
    assert history.head == 3

    history.undo()
    branch = commit(history, "index", line="index known_symmetry.space_group=P4")
    assert branch == 4 and history.step(4).parent_id == 2 and history.head == 4
    assert [s.id for s in history.children(2)] == [3, 4]
    assert [s.id for s in history.path(4)] == [1, 2, 4]
    # redo returns to the child we left, not just the newest one
    assert history.goto(3) == 3
    assert history.undo() == 2 and history.redo() == 3
    # going back along the branch remembers the way for redo
    assert history.goto(0) is None and history.head is None
    assert [history.redo() for _ in range(3)] == [1, 2, 3]
    assert history.goto(1) == 1 and history.redo() == 2 and history.redo() == 3
    # all undone to the start
    history.goto(1)
    assert history.undo() is None
    with pytest.raises(NothingToUndoError, match="at its start"):
        history.undo()
    assert history.head is None and len(history.steps()) == 4


def test_redo_without_memory_takes_newest_child(history):
    commit(history, "a")  # 1
    commit(history, "b")  # 2
    history.undo()
    commit(history, "c")  # 3, from 1
    commit(history, "d")  # 4, from 3
    history.goto(2)
    history.goto(3)  # from another branch: no way back remembered at 3
    commit(history, "e")  # 5, from 3
    history.goto(2)
    history.goto(3)
    assert [s.id for s in history.children(3)] == [4, 5]
    assert history.redo() == 5


def test_tree_display_order_and_depth(history):
    commit(history, "import")  # 1
    commit(history, "findspots")  # 2
    commit(history, "index")  # 3
    history.undo()
    commit(history, "index")  # 4 from 2
    commit(history, "refine")  # 5 from 4
    history.goto(1)
    commit(history, "findspots")  # 6 from 1
    history.goto(0)
    commit(history, "import")  # 7 from the start
    assert [(s.id, d) for s, d in history.tree()] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 1),
        (5, 1),
        (6, 1),
        (7, 1),
    ]
    assert [s.id for s in history.steps()] == [1, 2, 3, 4, 5, 6, 7]
    assert [s.id for s in history.children(0)] == [1, 7]


def test_errors_leave_the_history_unchanged(tmp_path, history):
    commit(history, "import", {"experiments": b"E"})
    commit(history, "findspots", {"reflections/strong": b"S"})
    blobs = sorted((tmp_path / ".gonio" / "blobs").rglob("*"))

    with pytest.raises(NoSuchStepError) as err:
        history.goto(7)
    assert "no step 7" in str(err.value) and "1-2" in str(err.value)
    with pytest.raises(NoSuchStepError, match="no step 9"):
        history.path(9)
    with pytest.raises(NoSuchStepError, match="Step 0 is the empty start"):
        history.step(0)
    with pytest.raises(TypeError, match="parameters cannot be recorded"):
        commit(history, "bad", {"x": b"new blob"}, params={"model": object()})
    with pytest.raises(TypeError, match="must be bytes"):
        commit(history, "bad", {"x": "text, not bytes"})
    assert isinstance(NoSuchStepError("x"), GonioError)

    assert history.head == 2 and [s.id for s in history.steps()] == [1, 2]
    assert sorted((tmp_path / ".gonio" / "blobs").rglob("*")) == blobs
    history.undo()
    with pytest.raises(NoSuchStepError):
        history.goto(3)
    assert history.head == 1 and history.redo() == 2


def test_empty_session_messages(history):
    with pytest.raises(NothingToRedoError, match="start of the session"):
        history.redo()
    with pytest.raises(NoSuchStepError, match="no steps yet"):
        history.goto(1)
    assert history.head is None


def test_two_handles_share_the_head(tmp_path, history):
    commit(history, "import")
    with History.open(tmp_path, create=False) as other:
        assert other.head == 1
        commit(other, "findspots")
        assert history.head == 2  # moved by the other handle
        assert commit(history, "index") == 3 and history.step(3).parent_id == 2
        assert [s.id for s in other.path(3)] == [1, 2, 3]
        assert history.step(2).session_id != history.step(1).session_id
