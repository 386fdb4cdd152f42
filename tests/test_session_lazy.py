"""Opening a session loads nothing until it is used: no step but the head, no table."""

from __future__ import annotations

import os

from gonio.shell.session import Session
from gonio.store.blobs import BlobStore
from gonio.store.history import History


def test_open_reads_only_the_head_record_and_decodes_no_table(tmp_path, monkeypatch):
    with History.open(tmp_path) as h:
        for i in range(1, 41):
            h.commit_step("s", f"s {i}", {}, {"reflections/t": b"\x93" + os.urandom(20_000),
                                              "data/i": str(i).encode()}, "", {}, 0.1, "t")
    read = []
    real_get = BlobStore.get
    monkeypatch.setattr(BlobStore, "get", lambda self, h: read.append(h) or real_get(self, h))
    s = Session(tmp_path)
    assert read == [] and s.history._steps == {}  # opening read no step and no artifact
    state = s.state
    assert state.data == {"i": 40} and list(state.reflections) == ["t"]
    assert list(s.history._steps) == [40]  # the head's record only
    assert read == [s.history.manifest(40)["data/i"]]  # the table stays on disk until used
    s.close()
