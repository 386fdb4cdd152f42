"""``gonio process --many LIST_OR_GLOB``: many sweeps, one gonio session each, in parallel with Dask.

    gonio process --many '/data/*/*_00001.cbf' [--out DIR] [--workers N | --scheduler ADDRESS]
                  [--nproc N] [step.param=value ...] [stop_after=STEP]

The sweeps are given by a glob (each matching image file stands for its sweep:
files are grouped by their template, the image number replaced by #) or by a
text file listing one template or file per line. Each sweep is processed by
``process`` in its own session folder (``DIR/NAME``, named after the template),
by a task of a ``dask.distributed`` cluster: a :class:`distributed.LocalCluster`
on this machine by default (one single-threaded worker process per core), or
the existing cluster whose scheduler is at ``--scheduler`` (an address such as
tcp://host:8786, or a scheduler file; e.g. a cluster started by dask-jobqueue on
SLURM/PBS/SGE; docs/process.md). Only the template and the
folder travel through the scheduler: the images are read where they are, the
sessions written where they are, so both must be visible to every worker.

A sweep that fails is reported in the table at the end and never stops the
others. A session that finished (its ``gonio_process.json`` marker, written by
``process`` at the end) is skipped when the batch is run again; one that was
interrupted continues from its last good step.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from gonio.core.errors import GonioError


class ProcessManyError(GonioError):
    pass


_NUMBER = re.compile(r"(\d+)(\.[A-Za-z0-9]+(?:\.gz|\.bz2)?)$")
_CONTAINERS = (".nxs", ".h5", ".hdf5")


@dataclass
class Options:
    spec: str
    out: Path
    workers: int
    scheduler: str | None
    nproc: int
    words: list[str]  # the process parameters, for every sweep


USAGE = ("usage: gonio process --many LIST_OR_GLOB [--out DIR] [--workers N | --scheduler ADDRESS] "
         "[--nproc N] [step.param=value ...] [stop_after=STEP]")


def parse_args(args: list[str], cwd: Path) -> Options:
    spec, out, workers, scheduler, nproc, words = None, cwd / "processed", 0, None, 0, []
    it = iter(args)
    for a in it:
        if a in ("--many", "--out", "--workers", "--scheduler", "--nproc"):
            value = next(it, None)
            if value is None:
                raise ProcessManyError(f"{a} needs a value. {USAGE}")
            if a == "--many":
                spec = value
            elif a == "--out":
                out = (cwd / value).absolute()
            elif a == "--scheduler":
                scheduler = value
            else:
                try:
                    n = int(value)
                except ValueError:
                    n = -1
                if n < 1:
                    raise ProcessManyError(f"{a} takes a whole number of 1 or more, not {value!r}.")
                workers, nproc = (n, nproc) if a == "--workers" else (workers, n)
        elif a.startswith("--"):
            raise ProcessManyError(f"unknown option {a}. {USAGE}")
        elif "=" in a:
            words.append(a)
        else:
            raise ProcessManyError(
                f"process --many takes its sweeps from LIST_OR_GLOB, not from {a!r} on the line; "
                f"quote a glob so that the shell does not expand it. {USAGE}")
    if spec is None:
        raise ProcessManyError(USAGE)
    if workers and scheduler:
        raise ProcessManyError("--workers is for the local cluster; an existing cluster "
                               "(--scheduler) has its own workers.")
    # a typo in a parameter must fail here, not once per sweep on the cluster
    from gonio.shell.commands import lookup

    lookup("process").paramset.parse(words, cwd=cwd)
    return Options(spec, out, workers, scheduler, nproc, words)


def template_of(path: str) -> str:
    """The sweep template of an image file: its last number replaced by # (name_#####.cbf)."""
    if path.lower().endswith(_CONTAINERS):
        return path
    m = _NUMBER.search(Path(path).name)
    if not m:
        return path
    name = Path(path).name
    start = len(name) - len(m.group(0))
    return str(Path(path).with_name(name[:start] + "#" * len(m.group(1)) + m.group(2)))


def expand_sweeps(spec: str, cwd: Path) -> list[str]:
    """The sweeps (templates or files) named by a list file or a glob, in sorted order."""
    p = Path(os.path.expanduser(spec))
    p = p if p.is_absolute() else cwd / p
    if p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list", ""):
        lines = [ln.strip() for ln in p.read_text().splitlines()]
        sweeps = [ln for ln in lines if ln and not ln.startswith("#")]
        sweeps = [s if Path(s).is_absolute() else str(p.parent / s) for s in sweeps]
        if not sweeps:
            raise ProcessManyError(f"The list {p} names no sweep (one template or file per line).")
        return list(dict.fromkeys(sweeps))
    files = sorted(f for f in glob.glob(str(p)) if Path(f).is_file())
    if not files:
        raise ProcessManyError(f"No files match {spec}. Give a glob of image files (quoted, e.g. "
                               "'/data/*/*_00001.cbf': each file stands for its sweep) or a text "
                               "file with one template per line.")
    return sorted(dict.fromkeys(template_of(f) for f in files))


def session_folders(sweeps: list[str], out: Path) -> list[Path]:
    """One folder per sweep, named after the template (parent folder added when names repeat)."""
    def stem(s: str, parents: int) -> str:
        path = Path(s)
        name = re.sub(r"[#_.-]+$", "", path.name.split(".")[0].replace("#", "")) or "sweep"
        return "_".join([*path.parent.parts[len(path.parent.parts) - parents:], name])

    names = [stem(s, 0) for s in sweeps]
    if len(set(names)) < len(names):
        names = [stem(s, 1) for s in sweeps]
    seen: dict[str, int] = {}
    folders = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        folders.append(out / (n if seen[n] == 1 else f"{n}_{seen[n]}"))
    return folders


def finished(folder: Path, stop_after: str) -> bool:
    """Whether a process of this session already ran successfully at least up to stop_after."""
    from gonio.shell.commands.process import PIPELINE, read_marker

    marker = read_marker(folder) or {}
    return bool(marker.get("finished")) and \
        PIPELINE.index(marker["stop_after"]) >= PIPELINE.index(stop_after)


# -- the worker ------------------------------------------------------------------------------
#: The modules process's steps import, loaded by :func:`warm_up` before a worker's first sweep.
WARM_MODULES = (
    "gonio.shell.session", "gonio.shell.commands.process", "gonio.store.history",
    "gonio.core.importer", "gonio.core.spotfinding.finder", "gonio.core.indexing.index",
    "gonio.core.lattice.rbs", "gonio.core.lattice.reindex", "gonio.core.refinement.engine",
    "gonio.core.integration.integrate", "gonio.core.symmetry.laue_group",
    "gonio.core.scaling.engine", "gonio.core.merging.statistics", "gonio.core.merge.merge",
    "gonio.core.export.mtz", "scipy.optimize")
_warm: list = []  # the thread of warm_up, once started in this process


def warm_up() -> None:
    """Make this process (a Dask worker) ready for sweeps, in a background thread started
    as the worker starts, so that its first sweep does not pay for it: gonio's kernel cache
    folder (workers started by ``dask worker`` do not have it in their environment), the
    kernels of process loaded from it (prepared first if this machine never did), and the
    modules of the steps imported (:data:`WARM_MODULES`)."""
    if _warm:
        return
    import threading
    from importlib import import_module

    from gonio.core import jit

    jit.use_cache_dir()

    def run():
        from gonio.shell.main import prepare_kernels

        prepare_kernels(["process"])
        for module in WARM_MODULES:
            import_module(module)

    _warm.append(threading.Thread(target=run, name="gonio-warm-up", daemon=True))
    _warm[0].start()


def dask_setup(worker) -> None:
    """Dask's preload hook: ``dask worker --preload gonio.shell.process_many`` (and the local
    cluster of process --many) warm the worker up as it starts (:func:`warm_up`)."""
    warm_up()


def _warm_up_plugin():
    """A worker plugin that warms up every worker of an existing cluster (:func:`warm_up`)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class WarmUp(WorkerPlugin):
        name = "gonio-warm-up"

        def setup(self, worker):
            warm_up()

    return WarmUp()


# -- the task (runs on a worker) ------------------------------------------------------------
def process_sweep(sweep: str, folder: str, words: list[str], nproc: int = 0) -> dict:
    """Process one sweep in its session folder; never raises (the error is in the result)."""
    if _warm:  # what the warm-up imports, this would import meanwhile: no two threads
        _warm[0].join()  # importing the same modules at once (Python may refuse a cycle)
    from gonio.core import jit
    from gonio.shell.commands import lookup
    from gonio.shell.commands.process import _quote, read_marker, run_pipeline
    from gonio.shell.session import Session

    jit.use_cache_dir()
    t0 = time.perf_counter()
    out = {"sweep": sweep, "folder": folder, "ok": False, "error": "", "summary": None}
    Path(folder).mkdir(parents=True, exist_ok=True)
    if not nproc:
        nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        session = Session(folder, nproc=nproc)
        try:
            # a session interrupted earlier continues from its last good step
            start = [] if _has_pipeline_step(session) else [sweep]
            parsed = lookup("process").paramset.parse(start + words, cwd=folder)
            with open(Path(folder) / "gonio_process.log", "a") as log:
                log.write(f"# gonio> process {' '.join(_quote(w) for w in start + words)}\n")
                run_pipeline(session, parsed, echo=lambda text: (log.write(text + "\n"),
                                                                 log.flush()))
        finally:
            session.close()
        out.update(ok=True, summary=read_marker(folder))
    except GonioError as e:
        out["error"] = " ".join(str(e).split())
    except Exception as e:  # a bug or a broken file system: reported for this sweep only
        out["error"] = f"internal error ({type(e).__name__}: {e})"
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _has_pipeline_step(session) -> bool:
    from gonio.shell.commands.process import _canonical

    history = session.history
    return bool(history.head) and any(_canonical(s.command) for s in history.path(history.head))


# -- the client -------------------------------------------------------------------------------
def main(args: list[str], cwd: Path | None = None, stream=None) -> int:
    """Run the batch; exit code 0 when every sweep succeeded (or had finished), else 1."""
    stream = stream or sys.stdout
    cwd = (cwd or Path.cwd()).absolute()
    opts = parse_args(args, cwd)
    sweeps = expand_sweeps(opts.spec, cwd)
    folders = session_folders(sweeps, opts.out)
    from gonio.shell.commands import lookup
    from gonio.shell.commands.process import read_marker

    stop_after = lookup("process").paramset.parse(opts.words).values["stop_after"]
    done = {f for f in folders if finished(f, stop_after)}
    todo = [(s, f) for s, f in zip(sweeps, folders) if f not in done]
    results = {str(f): {"sweep": s, "folder": str(f), "ok": True, "skipped": True,
                        "summary": read_marker(f), "error": "", "seconds": 0.0}
               for s, f in zip(sweeps, folders) if f in done}
    print(f"process --many: {len(sweeps)} sweeps, {len(sweeps) - len(todo)} already finished "
          f"(skipped), sessions in {opts.out}", file=stream, flush=True)
    if todo:
        results.update(_run_on_cluster(todo, opts, stream))
    rows = [results[str(f)] for f in folders]
    print(result_table(rows), file=stream, flush=True)
    return 0 if all(r["ok"] for r in rows) else 1


def _run_on_cluster(todo, opts: Options, stream) -> dict:
    from distributed import Client, LocalCluster, wait

    cores = os.cpu_count() or 1
    if opts.scheduler:
        if Path(opts.scheduler).is_file():  # a scheduler file (dask scheduler --scheduler-file)
            cluster, client = None, Client(scheduler_file=opts.scheduler, timeout="30s")
        else:
            cluster, client = None, Client(opts.scheduler, timeout="30s")
        client.register_plugin(_warm_up_plugin())
        nproc = opts.nproc
        where = f"the Dask cluster at {opts.scheduler}"
    else:
        workers = opts.workers or cores
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=_dashboard_address(),
                               preload=[__name__])  # warm_up as each worker starts
        client = Client(cluster)
        nproc = opts.nproc or max(1, cores // workers)
        where = f"a local Dask cluster of {workers} worker processes"
    try:
        link = client.dashboard_link if _dashboard_address() else ""
        print(f"Running {len(todo)} sweeps on {where}" + (f"; dashboard {link}" if link else ""),
              file=stream, flush=True)
        futures = {client.submit(process_sweep, s, str(f), opts.words, nproc, pure=False,
                                 key=f"process-{f.name}-{time.time_ns()}"): f for s, f in todo}
        results, pending, last = {}, set(futures), None
        while pending:
            try:
                done, pending = wait(pending, timeout=2, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in 2 s: only the running count may change
                done = set()
            for fut in done:
                f = futures[fut]
                try:
                    r = fut.result()
                except Exception as e:  # the worker died (killed, out of memory)
                    r = {"sweep": "", "folder": str(f), "ok": False, "summary": None,
                         "error": f"the task failed on the cluster ({type(e).__name__}: {e})",
                         "seconds": 0.0}
                results[str(f)] = r
                print(f"  {f.name}: " + ("done" if r["ok"] else "FAILED: " + r["error"][:200]),
                      file=stream, flush=True)
            n_run = _running(client, pending)
            n_failed = sum(not r["ok"] for r in results.values())
            status = (len(results) - n_failed, n_run, n_failed, len(pending) - n_run)
            if status != last:
                print("  [done {} | running {} | failed {} | queued {}]".format(*status),
                      file=stream, flush=True)
                last = status
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _running(client, pending) -> int:
    """Sweeps being processed: those handed to a worker, at most one per worker thread
    (the scheduler hands a worker slightly more tasks than it has threads)."""
    try:
        keys = {k for ks in client.processing().values() for k in ks}
        threads = sum(client.nthreads().values())
    except Exception:  # the scheduler is not answering: count nothing as running
        return 0
    return min(threads, sum(f.key in keys for f in pending))


def _dashboard_address() -> str | None:
    """The dashboard on a free port when bokeh is installed (Dask's dashboard needs it)."""
    import importlib.util

    return ":0" if importlib.util.find_spec("bokeh") else None


def result_table(rows: list[dict]) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        s = r.get("summary") or {}
        status = "skipped (finished)" if r.get("skipped") else "ok" if r["ok"] else "FAILED"
        table.append([
            Path(r["folder"]).name, status, s.get("space_group", ""),
            _f(s.get("d_min"), "{:.2f}"), _f(s.get("completeness"), "{:.1%}"),
            _f(s.get("cc_half"), "{:.3f}"), _f(s.get("i_over_sigma"), "{:.1f}"),
            _f(r.get("seconds") or None, "{:.0f}"),
            textwrap.fill(r["error"], 70) if r["error"] else r["folder"]])
    return tabulate(table, headers=["sweep", "status", "space group", "d_min (A)", "completeness",
                                    "CC1/2", "I/sigma", "time (s)", "session / error"],
                    disable_numparse=True)


def _f(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)
