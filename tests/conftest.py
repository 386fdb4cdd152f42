"""Shared fixtures: where the real data lives, and a fresh processing folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """Path into ../shared/data; skips the test with a reason when the data are absent."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (../shared/data beside the repository)")
    return p


def lcysteine_sweeps():
    """(experiments, reflections) of the three .expt/.refl pairs DIALS scaled together in
    ../shared/data/l_cysteine_4_sweeps_scaled, as one list (ids renumbered); skips without
    the data."""
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl
    from gonio.core.models.experiment import ExperimentList
    from gonio.core.reflection_table import ReflectionTable

    tables, exps = [], ExperimentList()
    for name in ("scaled_20_25", "scaled_30", "scaled_35"):
        t = read_refl(data_path("l_cysteine_4_sweeps_scaled", name + ".refl"))
        e = read_expt(data_path("l_cysteine_4_sweeps_scaled", name + ".expt"))
        t["id"] = t["id"] + len(exps)
        t.experiment_identifiers = {k + len(exps): v for k, v in t.experiment_identifiers.items()}
        exps.extend(e)
        tables.append(t)
    return exps, ReflectionTable.concatenate(tables)


def python_output(code: str, timeout: float = 120) -> str:
    """Standard output of ``code`` run by this Python in a new process (what a fresh
    process imports is the point of such tests); fails with its standard error."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def run_ok(session, line: str):
    """Run a shell line that must succeed; its Result."""
    r = session.run_line(line)
    assert r.ok, r.text
    return r


def run_fail(session, line: str) -> str:
    """Run a shell line that must fail with a one-paragraph error and leave the session
    exactly as it was (same head, no step recorded); the error text."""
    head, n_steps = session.head, len(session.history.steps())
    r = session.run_line(line)
    assert not r.ok, r.text
    assert r.text.startswith("Error: ") and "Traceback" not in r.text
    assert session.head == head and len(session.history.steps()) == n_steps
    return r.text


@pytest.fixture
def session(tmp_path):
    from gonio.shell.session import Session

    s = Session(tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def x4_session(tmp_path_factory):
    """A session holding DIALS's indexed x4 models and reflections (one per test module)."""
    from gonio.shell.session import Session

    folder = data_path("x4_xds")
    s = Session(tmp_path_factory.mktemp("x4"))
    r = s.run_line(f"import {folder / 'indexed.expt'} {folder / 'indexed.refl'}")
    assert r.ok, r.text
    yield s, folder
    s.close()
