"""The ``gonio`` program.

    gonio                      open (or resume) the session kept in this folder
    gonio -c "import ...; show"  run commands given on the command line
    gonio run steps.gonio      run the commands in a file (one per line, # comments)
    gonio history --script     print a script reproducing the current branch
    gonio replay [N]           re-run the branch ending at step N (default: the head) as a new branch
    gonio demo [folder]        simulate a small sweep in a fresh folder and process it
    ... | gonio                commands piped on standard input

The exit code is 0 when every command succeeded and 1 at the first failure
(which stops a script).
"""

from __future__ import annotations

import os
import sys

USAGE = __doc__


def _session(folder: str = "."):
    from gonio.shell.progress import Progress
    from gonio.shell.session import Session

    return Session(folder, progress=Progress(sys.stderr))


def run_lines(session, lines, echo: bool = False) -> int:
    """Run command lines in order; stop at the first failure (exit code 1)."""
    for line in lines:
        if not line.strip() or line.strip().startswith("#"):
            continue
        if echo:
            print(f"gonio> {line}", flush=True)
        if line.strip() in ("exit", "quit"):
            return 0
        result = session.run_line(line)
        if result.text:
            print(result.text, file=sys.stdout if result.ok else sys.stderr, flush=True)
        if not result.ok:
            return 1
    return 0


def split_commands(text: str) -> list[str]:
    """Lines, and ';'-separated commands within a line (outside quotes)."""
    out = []
    for line in text.splitlines():
        cur, quote = "", ""
        for ch in line:
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == ";":
                out.append(cur)
                cur = ""
                continue
            cur += ch
        out.append(cur)
    return [c.strip() for c in out if c.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from gonio.core.errors import GonioError

    try:
        return _main(argv)
    except GonioError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "--version":
        from gonio.shell.session import software_version

        print(software_version())
        return 0
    if argv and argv[0] == "-c":
        if len(argv) < 2:
            print("gonio -c needs the commands, e.g. gonio -c \"import x.expt; show\"", file=sys.stderr)
            return 2
        with _closing(_session()) as s:
            return run_lines(s, split_commands(" ".join(argv[1:])))
    if argv and argv[0] == "run":
        if len(argv) != 2:
            print("usage: gonio run SCRIPT", file=sys.stderr)
            return 2
        try:
            text = open(argv[1]).read()
        except OSError as e:
            print(f"Error: cannot read the script {argv[1]}: {e.strerror}.", file=sys.stderr)
            return 1
        with _closing(_session()) as s:
            return run_lines(s, split_commands(text), echo=True)
    if argv and argv[0] == "history":
        with _closing(_session()) as s:
            return run_lines(s, [" ".join(argv)])
    if argv and argv[0] == "replay":
        with _closing(_session()) as s:
            return replay(s, argv[1:])
    if argv and argv[0] == "demo":
        from gonio.shell.demo import demo

        return demo(argv[1:])
    if argv:
        # a single command given directly: gonio show
        with _closing(_session()) as s:
            return run_lines(s, [" ".join(argv)])
    if not sys.stdin.isatty():
        with _closing(_session()) as s:
            return run_lines(s, split_commands(sys.stdin.read()))
    from gonio.shell.repl import repl

    with _closing(_session()) as s:
        return repl(s)


def replay(session, args: list[str]) -> int:
    """Re-run the branch ending at step N from its recorded command lines, as a new branch."""
    from gonio.core.errors import GonioError

    target = session.history.head
    if args:
        try:
            target = int(args[0])
        except ValueError:
            raise GonioError(f"replay takes a step number, not '{args[0]}'.") from None
    steps = session.history.path(target)
    if not steps:
        raise GonioError("There is nothing to replay: the branch is empty.")
    session.history.goto(None)
    print(f"Replaying {len(steps)} steps from the start as a new branch")
    return run_lines(session, [s.line for s in steps], echo=True)


class _closing:
    def __init__(self, session):
        self.session = session

    def __enter__(self):
        return self.session

    def __exit__(self, *exc):
        self.session.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
    os._exit(0)
