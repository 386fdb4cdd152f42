"""The export and merge commands in a session: files, names, steps and bad input."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from tests.merge_export_data import dataset, record_state


@pytest.fixture(scope="module")
def data():
    return dataset(n_sweeps=2, seed=21, n_unique_dmin=2.5)


@pytest.fixture
def scaled_session(session, data):
    expts, table, _ = data
    record_state(session, expts, {"integrated": table, "scaled": table})
    return session


def _unchanged(session, before):
    assert session.head == before
    assert not [p for p in session.folder.iterdir() if p.suffix in (".mtz", ".tmp", ".HKL")]


def test_export_default_mtz_is_scaled_mtz_and_a_step(scaled_session):
    s = scaled_session
    before = s.head
    r = s.run_line("export")
    assert r.ok, r.text
    path = s.folder / "scaled.mtz"
    m = gemmi.read_mtz_file(str(path))
    assert "SCALEUSED" in m.column_labels()
    assert s.head == before + 1
    assert s.state.data["export"]["files"] == [str(path)]
    assert set(s.state.reflections) == {"integrated", "scaled"}  # tables unchanged
    assert "Batches: 1-50, 101-150" in r.text


def test_export_before_scaling_writes_integrated_mtz(session, data):
    expts, table, _ = data
    t = table.copy()
    for c in ("intensity.scale.value", "intensity.scale.variance", "inverse_scale_factor"):
        del t[c]
    record_state(session, expts, {"integrated": t}, command="integrate")
    assert session.run_line("export").ok
    m = gemmi.read_mtz_file(str(session.folder / "integrated.mtz"))
    assert m.column_labels()[5:9] == ["IPR", "SIGIPR", "I", "SIGI"]


@pytest.mark.parametrize("fmt, names", [
    ("mtz", ["scaled.mtz"]),
    ("xds_ascii", ["DIALS_0.HKL", "DIALS_1.HKL"]), ("shelx", ["dials.hkl", "dials.ins"]),
    ("mmcif", ["scaled.cif"]), ("json", ["rlp.json"])])
def test_formats_and_default_names(scaled_session, fmt, names):
    from gonio.core.io.file_kinds import file_kind

    for _ in range(2):  # a second export replaces the first's files
        r = scaled_session.run_line(f"export format={fmt}")
        assert r.ok, r.text
    for n in names:
        assert (scaled_session.folder / n).stat().st_size > 200
        assert file_kind(scaled_session.folder / n) is not None, n  # known: it may be replaced


def test_files_of_another_kind_are_not_written_over(scaled_session):
    """A name that holds a file of another kind (the user's notes, or gonio's MTZ named
    by mistake as the report) is refused before anything is written or recorded."""
    s = scaled_session
    notes = s.folder / "notes.txt"
    notes.write_text("mine")
    assert s.run_line("export").ok and s.run_line("save output.prefix=kept").ok
    before = s.head
    mtz = (s.folder / "scaled.mtz").read_bytes()
    for line, words in [
            ("export mtz.hklout=notes.txt", "is a file gonio did not write, not an MTZ file"),
            ("export format=shelx shelx.ins=notes.txt", "notes.txt already exists"),
            ("report output=scaled.mtz", "is an MTZ file, not an HTML page"),
            ("merge output.mtz=notes.txt", "does not write over a file of another kind"),
            ("save output.prefix=notes.txt", "notes.txt.refl already exists"),
            ("export mtz.hklout=kept.refl", "is a DIALS reflection file, not an MTZ file")]:
        if line.startswith("save"):
            (s.folder / "notes.txt.refl").write_text("mine")
        r = s.run_line(line)
        assert not r.ok and words in r.text, (line, r.text)
    assert s.head == before
    assert notes.read_text() == (s.folder / "notes.txt.refl").read_text() == "mine"
    assert (s.folder / "scaled.mtz").read_bytes() == mtz
    assert not (s.folder / "notes.txt.expt").exists()  # neither file of save was written
    assert not (s.folder / "dials.hkl").exists()  # nor the .hkl beside the refused .ins


def test_output_names_and_split_experiments(scaled_session, tmp_path):
    s = scaled_session
    sub = s.folder / "out"
    sub.mkdir()
    assert s.run_line("export mtz.hklout=out/all.mtz split_experiments=True").ok
    m0 = gemmi.read_mtz_file(str(sub / "all_0.mtz"))
    m1 = gemmi.read_mtz_file(str(sub / "all_1.mtz"))
    assert [b.number for b in m0.batches] == list(range(1, 51))
    assert [b.number for b in m1.batches] == list(range(101, 151))
    assert s.run_line("export format=shelx shelx.hklout=out/x.hkl shelx.ins=out/x.ins").ok
    assert (sub / "x.ins").read_text().startswith("TITL 19 in P212121")


def test_merge_writes_merged_mtz_with_statistics(scaled_session):
    s = scaled_session
    r = s.run_line("merge")
    assert r.ok, r.text
    assert "Wilson B" in r.text and "cc1/2" in r.text and "French & Wilson" in r.text
    m = gemmi.read_mtz_file(str(s.folder / "merged.mtz"))
    assert {"IMEAN", "F", "DANO"} <= set(m.column_labels())
    assert s.state.data["merge"]["file"] == str(s.folder / "merged.mtz")
    r = s.run_line("merge output.mtz=other.mtz anomalous=False truncate=False")
    assert r.ok
    assert gemmi.read_mtz_file(str(s.folder / "other.mtz")).column_labels() == \
        ["H", "K", "L", "IMEAN", "SIGIMEAN", "N"]


def test_merge_before_scale_says_what_is_missing(session, data):
    expts, table, _ = data
    t = table.copy()
    del t["inverse_scale_factor"]
    record_state(session, expts, {"integrated": t}, command="integrate")
    before = session.head
    r = session.run_line("merge")
    assert not r.ok
    assert "run scale first" in r.text.lower() and "integrated" in r.text
    _unchanged(session, before)


def test_merge_of_imported_scaled_dials_data(session, data, tmp_path):
    """DIALS scaled.refl imported: the table is scaled even if not named so."""
    expts, table, _ = data
    record_state(session, expts, {"integrated": table}, command="import")
    assert session.run_line("merge").ok


def test_bad_export_input_leaves_the_session(scaled_session):
    s = scaled_session
    before = s.head
    r = s.run_line("export format=pdf")
    assert not r.ok and all(f in r.text for f in ("mtz", "xds_ascii", "shelx", "mmcif", "json"))
    r = s.run_line("export mtz.hklout=nowhere/scaled.mtz")
    assert not r.ok and "does not exist" in r.text
    r = s.run_line("export d_min=80")
    assert not r.ok and "d_min=80" in r.text and "extend from" in r.text
    r = s.run_line("merge d_min=80")
    assert not r.ok and "leave no reflections" in r.text
    r = s.run_line("merge output.mtz=nowhere/merged.mtz")
    assert not r.ok and "does not exist" in r.text
    for name in ("crystal_names", "dataset_names"):
        r = s.run_line(f'merge output.{name}=" , "')
        assert not r.ok and f"output.{name}" in r.text and "one per wavelength" in r.text
        assert "internal error" not in r.text
    _unchanged(s, before)
    assert not (s.folder / "merged.mtz").exists()


def test_export_before_integrate(session, data):
    expts, table, _ = data
    strong = table.copy()
    record_state(session, expts, {"strong": strong}, command="findspots")
    r = session.run_line("export")
    assert not r.ok and "integrate first" in r.text


def test_write_is_atomic(scaled_session, monkeypatch):
    """A failure while writing leaves the previous file whole and no temporary file."""
    s = scaled_session
    assert s.run_line("export").ok
    path = s.folder / "scaled.mtz"
    old = path.read_bytes()
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    head = s.head
    r = s.run_line("export min_isigi=0")
    assert not r.ok and "Could not write" in r.text and "disk full" in r.text
    assert path.read_bytes() == old and s.head == head
    assert not [p for p in s.folder.iterdir() if p.name.endswith(".tmp")]
    assert np.frombuffer(old[:4], np.uint8).tobytes() == b"MTZ "


def test_format_as_a_word_and_stray_words(scaled_session):
    s = scaled_session
    assert s.run_line("export mmcif").ok
    assert (s.folder / "scaled.cif").exists()
    head = s.head
    r = s.run_line("export mtz extra")
    assert not r.ok and "format=NAME" in r.text and s.head == head
