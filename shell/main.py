"""The ``gonio`` program.

    gonio                      open (or resume) the session kept in this folder
    gonio -c "import ...; show"  run commands given on the command line
    gonio run steps.gonio      run the commands in a file (one per line, # comments)
    gonio history --script     print a script reproducing the current branch
    gonio replay [N]           re-run the branch ending at step N (default: the head) as a new branch
    gonio demo [folder]        simulate a small sweep in a fresh folder and process it
    gonio process IMAGES [step.param=value] [stop_after=STEP] [-q]   the whole pipeline
    gonio process --many LIST_OR_GLOB [--scheduler ADDRESS]  many sweeps with Dask (docs/process.md)
    gonio --read-only ...      open the session without changing it (also automatic when
                               the folder is not writable): history, show, diff, goto, save
    gonio check | repair | gc  verify / recover / clean up the session (docs/sessions.md)
    gonio copy SRC DEST        copy the session in SRC to DEST, to continue it there
    ... | gonio                commands piped on standard input

The exit code is 0 when every command succeeded and 1 at the first failure
(which stops a script).
"""

from __future__ import annotations

import os
import sys

USAGE = __doc__


_READ_ONLY = False  # set by --read-only


def _session(folder: str = ".", progress: bool = True):
    from gonio.shell.progress import Progress
    from gonio.shell.session import Session

    return Session(folder, progress=Progress(sys.stderr, enabled=progress),
                   read_only=_READ_ONLY)


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


#: The kernel units (``gonio.core.jit.UNITS``) each step compiles on its first run, the
#: one that takes longest first: while a step waits for a unit that the background process
#: compiles it prepares the next ones that compile faster (``jit.prepare_meanwhile``), so
#: that the two halves of integrate's kernels compile on two cores at once.
#: findspots writes the strong table's shoebox column (``gonio.core.io.shoebox_kernels``)
#: when the step is recorded; it and integrate decode miniCBF images
#: (``gonio.core.formats.byte_offset``). integrate's ``simple`` background models are a unit of their
#: own (``...box_kernels.simple``), compiled when a step first reaches them.
STEP_KERNELS = {
    "findspots": ("gonio.core.spotfinding.threshold", "gonio.core.spotfinding",
                  "gonio.core.io.shoebox_kernels", "gonio.core.formats.byte_offset"),
    "integrate": ("gonio.core.integration", "gonio.core.integration.box_kernels",
                  "gonio.core.formats.byte_offset"),
    "process": ("gonio.core.spotfinding.threshold", "gonio.core.spotfinding",
                "gonio.core.io.shoebox_kernels", "gonio.core.formats.byte_offset",
                "gonio.core.integration", "gonio.core.integration.box_kernels"),
}
#: Units a step needs only after a while (process integrates after finding spots, indexing
#: and refining): prepared in the background even when the step comes first.
LATER_KERNELS = {"process": ("gonio.core.integration", "gonio.core.integration.box_kernels")}


def prepare_kernels(lines: list[str] | None = None) -> None:
    """Start compiling, in a background process, the kernels that the commands
    ``lines`` need (all units when None: an interactive session) and that this
    machine never prepared (the first command's own units are left to that
    command, which compiles them meanwhile in this process; and a command that
    has to wait for the background process prepares the units the commands need
    next meanwhile); and start loading those already prepared in a thread, while
    the session opens."""
    from gonio.core import jit

    if lines is None:
        jit.prepare_in_background()
        jit.load_in_background()
        return
    steps = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    needed = list(dict.fromkeys(u for step in steps for u in STEP_KERNELS.get(step, ())))
    later = LATER_KERNELS.get(steps[0], ()) if steps else ()
    first = tuple(u for u in STEP_KERNELS.get(steps[0], ()) if u not in later) if steps else ()
    if [u for u in needed if u not in first]:  # the next steps wait for them: nice 0
        jit.prepare_in_background([u for u in needed if u not in first], nice=0)
    jit.prepare_meanwhile([u for u in needed if u not in later])
    if needed:
        jit.load_in_background(needed)


def _help(lines: list[str]) -> int:
    """``help`` lines, run without opening the session (start-up stays fast)."""
    from gonio.core.errors import GonioError
    from gonio.shell.command import Context
    from gonio.shell.commands import lookup
    from gonio.shell.params import split_line

    command = lookup("help")
    for line in lines:
        try:
            parsed = command.paramset.parse(split_line(line)[1:], cwd=os.getcwd())
            out = command.function()(Context(load_state=lambda: None, cwd=os.getcwd()), parsed)
        except GonioError as e:
            print(f"Error: {e}", file=sys.stderr)
            return 1
        print(out.text, flush=True)
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
    from gonio.core import jit
    from gonio.core.errors import GonioError

    jit.use_cache_dir()  # every numba kernel of this program caches in the user's folder
    _end_without_collecting()
    try:
        return _main(argv)
    except GonioError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of a pipe stopped early (gonio -c help | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # as a shell reports a process ended by SIGPIPE
    except KeyboardInterrupt:  # Ctrl-C: the running step is not recorded
        print("\nInterrupted: the step that was running was not recorded.", file=sys.stderr)
        return 130


def _end_without_collecting() -> None:
    """Let the program end without the garbage collector's passes over the libraries it
    loaded: Python's finalisation runs the collector several times while it clears the
    modules, each pass over the ~200,000 objects of numba, scipy, SQLAlchemy and gonio
    (0.4-1 s at the end of a ``gonio process``); frozen (``gc.freeze``, at exit) they are
    only freed. Registered once per program."""
    global _FREEZE_REGISTERED
    if not _FREEZE_REGISTERED:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _FREEZE_REGISTERED = True


_FREEZE_REGISTERED = False


def _main(argv: list[str]) -> int:
    global _READ_ONLY
    _READ_ONLY = bool(argv) and argv[0] == "--read-only"  # for this call only
    if _READ_ONLY:
        argv = argv[1:]
    if argv and argv[0] in ("check", "repair", "gc", "copy"):
        from gonio.shell.maintenance import run

        return run(argv)
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
        lines = split_commands(" ".join(argv[1:]))
        if all(line.split()[0] == "help" for line in lines):
            return _help(lines)  # needs no session: opens no history database
        prepare_kernels(lines)
        with _closing(_session()) as s:
            return run_lines(s, lines)
    if argv and argv[0] == "run":
        if len(argv) != 2:
            print("usage: gonio run SCRIPT", file=sys.stderr)
            return 2
        try:
            text = open(argv[1]).read()
        except OSError as e:
            print(f"Error: cannot read the script {argv[1]}: {e.strerror}.", file=sys.stderr)
            return 1
        lines = split_commands(text)
        prepare_kernels(lines)
        with _closing(_session(progress=False)) as s:  # a script's log: no progress bars
            return run_lines(s, lines, echo=True)
    if argv and argv[0] == "history":
        with _closing(_session()) as s:
            return run_lines(s, [" ".join(argv)])
    if argv and argv[0] == "replay":
        with _closing(_session()) as s:
            return replay(s, argv[1:])
    if argv and argv[0] == "demo":
        from gonio.shell.demo import demo

        return demo(argv[1:])
    if argv and argv[0] == "process" and "--many" in argv:
        from gonio.shell.process_many import main as process_many

        return process_many(argv[1:])
    if argv:
        # a single command given directly: gonio show
        prepare_kernels([" ".join(argv)])
        with _closing(_session()) as s:
            return run_lines(s, [" ".join(argv)])
    if not sys.stdin.isatty():
        lines = split_commands(sys.stdin.read())
        prepare_kernels(lines)
        with _closing(_session()) as s:
            return run_lines(s, lines)
    from gonio.shell.repl import repl

    prepare_kernels(None)  # compiled while the shell waits for input
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
