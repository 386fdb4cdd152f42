"""A regular (non-editable) install works: build the wheel, install it, run the program.

The wheel is built from a copy of the source tree and installed with
``--no-deps`` into a fresh virtual environment that sees this environment's
packages (numpy, numba, ...) through a .pth file, so nothing is downloaded.
The install location is made read-only (for a non-root user) and the kernel
cache goes to a private per-user folder: ``gonio demo`` then runs from the
installed files alone, compiling its kernels into that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{args}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_wheel_installs_and_runs_demo_and_help(tmp_path):
    pytest.importorskip("wheel", reason="building a wheel without isolation needs 'wheel'")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for d in ("core", "shell", "store", "session_examples"):
        shutil.copytree(REPO / d, src / d, ignore=ignore)
    for f in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("gonio-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"]).stdout.strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_this_env.pth").write_text("\n".join(sorted(here)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)])
    installed = site / "gonio"
    assert (installed / "session_examples" / "demo.gonio").is_file()
    for p in [installed, *installed.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)  # a read-only install (not for root)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    gonio = str(venv / "bin" / "gonio")
    where = _run([str(python), "-c", "import gonio.shell.demo as d; print(d.__file__)"],
                 cwd=work, env=env).stdout.strip()
    assert where.startswith(str(installed))

    out = _run([gonio, "-c", "help"], cwd=work, env=env, stdin=subprocess.DEVNULL).stdout
    assert "findspots" in out and "index" in out
    assert not (work / ".gonio").exists()  # help opens no session

    r = _run([gonio, "demo"], cwd=work, env=env, stdin=subprocess.DEVNULL)
    assert "is missing" not in r.stderr
    assert "best recommended=9 tP" in r.stdout  # lysozyme, P 43 21 2: tetragonal
    assert "percent_indexed=100" in r.stdout
    assert (work / "gonio-demo" / ".gonio").is_dir()
    # the kernels were cached in the per-user folder, not in the install
    assert list((tmp_path / "cache" / "gonio" / "numba").rglob("*.nbi"))
    assert not list(installed.rglob("*.nbi"))
    for p in [installed, *installed.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)  # let tmp_path be removed
