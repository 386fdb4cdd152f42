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
