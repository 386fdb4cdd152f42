"""``gonio demo``: make a small simulated sweep in a fresh folder and process it.

Runs ``session_examples/demo.gonio`` in ``./gonio-demo`` (or the folder given),
then, on a terminal, opens the interactive shell on that session.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "session_examples" / "demo.gonio"


def _fresh_folder(base: Path) -> Path:
    folder, n = base, 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def demo(args: list[str]) -> int:
    from gonio.shell.main import prepare_kernels, run_lines, split_commands
    from gonio.shell.progress import Progress
    from gonio.shell.session import Session

    if not SCRIPT.is_file():
        print(f"Error: the demo script {SCRIPT} is missing; gonio demo runs from a source "
              "checkout installed with pip install -e.", file=sys.stderr)
        return 1
    folder = _fresh_folder(Path(args[0] if args else "gonio-demo").absolute())
    print(f"gonio demo: a simulated sweep processed in {folder}")
    lines = split_commands(SCRIPT.read_text())
    prepare_kernels(lines)
    session = Session(folder, progress=Progress(sys.stderr))
    try:
        rc = run_lines(session, lines, echo=True)
        if rc == 0 and sys.stdin.isatty():
            from gonio.shell.repl import repl

            return repl(session)
        if rc == 0:
            print(f"\nThe session is kept in {folder}: cd there and run gonio to continue "
                  "(history, show, undo, ...).")
        return rc
    finally:
        session.close()
