"""The session upkeep subcommands of the ``gonio`` program.

    gonio check [FOLDER]        verify every step and artifact (changes nothing)
    gonio repair [FOLDER]       keep every intact step, mark the damaged ones
    gonio gc [FOLDER]           remove artifacts no step uses; sizes of the session and branches
    gonio copy SRC DEST         copy a session (e.g. a read-only one) to continue it in DEST

Each prints a report and returns the exit code (0: fine, 1: damage found or
an error). The store does the work (:mod:`gonio.store.maintenance`).
"""

from __future__ import annotations

import sys

SUBCOMMANDS = ("check", "repair", "gc", "copy")


def run(argv: list[str]) -> int:
    """Run ``gonio <subcommand> ...`` (``argv[0]`` is one of :data:`SUBCOMMANDS`)."""
    name, args = argv[0], argv[1:]
    if name == "copy":
        if len(args) != 2:
            print("usage: gonio copy SRC DEST (copies the session in folder SRC to folder DEST)",
                  file=sys.stderr)
            return 2
        return _copy(*args)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(f"usage: gonio {name} [FOLDER]", file=sys.stderr)
        return 2
    folder = args[0] if args else "."
    return {"check": _check, "repair": _repair, "gc": _gc}[name](folder)


def _check(folder: str) -> int:
    from gonio.store.maintenance import check

    report = check(folder)
    print(report.text(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _repair(folder: str) -> int:
    from gonio.store.maintenance import repair

    report = repair(folder)
    print(report.text())
    print(report.check.text())
    return 1 if report.check.database_problem else 0


def _gc(folder: str) -> int:
    from gonio.store.history import History
    from gonio.store.maintenance import collect_garbage

    with History.open(folder, create=False) as history:
        print(collect_garbage(history).text())
    return 0


def _copy(source: str, dest: str) -> int:
    from gonio.store.maintenance import copy_session

    n, missing = copy_session(source, dest)
    print(f"Copied the session of {source} ({n} steps) to {dest}; continue it there with "
          f"`cd {dest}; gonio` (`history` shows the branches, `goto N` picks one).")
    if missing:
        print(f"Warning: {len(missing)} artifact(s) were already missing in {source}; the steps "
              f"using them are damaged in the copy too (`gonio check {dest}` lists them).",
              file=sys.stderr)
        return 1
    return 0
