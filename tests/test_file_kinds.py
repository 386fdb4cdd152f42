"""gonio replaces its own outputs but never a file of another kind (core/io/file_kinds.py)."""

from __future__ import annotations

import io

import gemmi
import numpy as np
import pytest

from gonio.core.io.atomic import write_atomic
from gonio.core.io.dials_refl import write_refl
from gonio.core.io.file_kinds import OverwriteError, check_replaceable, file_kind, kind_of
from gonio.core.reflection_table import ReflectionTable


def _png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def test_each_kind_gonio_writes_is_recognised_by_its_content(tmp_path):
    from gonio.core.report.html import page

    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 1")
    mtz.cell = gemmi.UnitCell(10, 10, 10, 90, 90, 90)
    table = ReflectionTable({"miller_index": np.zeros((2, 3), np.int32),
                             "intensity.sum.value": np.ones(2)})
    write_refl(table, tmp_path / "t.refl")
    expected = {
        "an MTZ file": bytes(mtz.write_to_bytes()),
        "a PNG picture": _png(),
        "an HTML page": page("gonio report", []).encode(),
        "a DIALS reflection file": (tmp_path / "t.refl").read_bytes(),
        "a JSON file": b'\n {"__id__": "ExperimentList"}',
        "an XDS_ASCII file": b"!FORMAT=XDS_ASCII    MERGE=FALSE\n",
        "an mmCIF file": b"data_gonio\n_entry.id gonio\n",
        "a SHELX instruction file": b"TITL 19 in P212121\nCELL 0.9795 ...\n",
        "a SHELX reflection file": b"   1   0   0   12.34    1.23\n   2   0   0-123.45   99.99\n",
        "a CBF image": b"###CBF: VERSION 1.5\r\n",
        "an SMV image": b"{\nHEADER_BYTES=  512;\n",
    }
    for kind, data in expected.items():
        assert kind_of(data[:256]) == kind, kind
    for text in (b"root:x:0:0:root:/root:/bin/bash\n", b"my notes\n", b"\x00\x01\x02", b""):
        assert kind_of(text) is None


def test_a_file_is_replaced_only_by_one_of_its_kind(tmp_path):
    path = tmp_path / "out.mtz"
    check_replaceable(path, "an MTZ file")  # missing: fine
    path.write_bytes(b"")
    check_replaceable(path, "an MTZ file")  # empty: fine
    path.write_bytes(b"MTZ \x00\x00")
    check_replaceable(path, "an MTZ file")
    with pytest.raises(OverwriteError, match="is an MTZ file, not an HTML page"):
        check_replaceable(path, "an HTML page")
    path.write_text("precious")
    for kind in ("an MTZ file", None):
        with pytest.raises(OverwriteError, match="a file gonio did not write"):
            check_replaceable(path, kind)
    with pytest.raises(OverwriteError, match="is a folder"):
        check_replaceable(tmp_path, "an MTZ file")


def test_atomic_writes_keep_a_foreign_file(tmp_path):
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(OverwriteError):
        write_atomic(path, b"<!DOCTYPE html><html></html>")
    assert path.read_text().startswith("root:x:0:0")
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"]  # no temporary file left
    write_atomic(path, b"replaced", replace_any=True)  # the session store's own files
    assert path.read_bytes() == b"replaced"
    write_atomic(tmp_path / "page.html", b"<!DOCTYPE html><html>1</html>")
    write_atomic(tmp_path / "page.html", b"<!DOCTYPE html><html>2</html>")
    assert file_kind(tmp_path / "page.html") == "an HTML page"
