"""``gonio demo``: make a small simulated sweep in a fresh folder and process it.

Runs ``session_examples/demo.gonio`` (simulate, then the DIALS workflow from import to the
merged MTZ) in ``./gonio-demo`` (or the folder given), printing each step's comment before
the step, and at the end what was written where; then, on a terminal, opens the
interactive shell on that session.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "session_examples" / "demo.gonio"


def _fresh_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... : the first that is missing or an empty folder
    (a file of that name is passed over, never touched)."""
    folder, n = base, 1
    while folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.0f} kB"


def written(folder: Path) -> list[str]:
    """One line per file or folder the demo wrote in ``folder``: its path relative to the
    folder and its size (a folder: its number of files and their size)."""
    lines = []
    for path in sorted(folder.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if path.is_dir():
            files = [f for f in path.rglob("*") if f.is_file()]
            what = ("the session: its history and stored tables (gonio there resumes it)"
                    if path.name == ".gonio" else
                    f"{len(files)} files" + (", the images" if any(
                        f.suffix == ".cbf" for f in files) else ""))
            lines.append(f"  {path.name}/  {what}, {_size(sum(f.stat().st_size for f in files))}")
        else:
            lines.append(f"  {path.name}  {_size(path.stat().st_size)}")
    return lines


def _steps(text: str) -> list[tuple[list[str], str]]:
    """The script's commands, each with the comment lines just before it (after the
    script's header, which ends with a line holding only '#')."""
    from gonio.shell.main import split_commands

    steps, comment = [], []
    for line in split_commands(text):
        if line == "#":
            comment = []
        elif line.startswith("#"):
            comment.append(line)
        else:
            steps.append((comment, line))
            comment = []
    return steps


def demo(args: list[str]) -> int:
    from gonio.shell.main import prepare_kernels, run_lines
    from gonio.shell.progress import Progress
    from gonio.shell.session import Session

    if not SCRIPT.is_file():
        print(f"Error: the demo script {SCRIPT} is missing; gonio demo runs from a source "
              "checkout installed with pip install -e.", file=sys.stderr)
        return 1
    base = Path(args[0] if args else "gonio-demo").absolute()
    try:
        folder = _fresh_folder(base)
    except OSError as e:
        print(f"Error: cannot make a folder for the demo at {base} ({e.strerror or e}); give "
              "gonio demo a folder you can write in, e.g. gonio demo ~/gonio-demo.",
              file=sys.stderr)
        return 1
    print(f"gonio demo: a simulated sweep processed in {folder}")
    steps = _steps(SCRIPT.read_text())
    prepare_kernels([line for _, line in steps])
    session = Session(folder, progress=Progress(sys.stderr))
    try:
        rc = 0
        for comment, line in steps:
            print("\n" + "\n".join(comment), flush=True)
            rc = run_lines(session, [line], echo=True)
            if rc:
                break
        if rc == 0:
            print(f"\nWritten in {folder}:", *written(folder), sep="\n")
        if rc == 0 and sys.stdin.isatty():
            from gonio.shell.repl import repl

            return repl(session)
        if rc == 0:
            print(f"\nThe session is kept in {folder}: cd there and run gonio to continue "
                  "(history, show, undo, ...).")
        return rc
    finally:
        session.close()
