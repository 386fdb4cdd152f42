"""``gonio process`` end to end on a simulated 120-image 1M-pixel sweep, against DIALS.

The sweep is the one of bench_integrate.py (``lysozyme`` preset, 1024 x 1024 px
Pilatus-like panel, 120 images of miniCBF, made once in a temporary folder). The
whole ``gonio process`` program is timed as a new process (start-up, import, every
step, the MTZ files), with warm kernel caches (a first, untimed run of each tree
compiles what is missing), ``repeats`` times in fresh session folders. Reported for
every run: wall time, CPU time (user + system of the program and its children) and
the load average (the machine may be shared: CPU time is the steadier figure then),
and for each step its wall and CPU time (CPU of the whole program while the step
ran: its worker threads and the recording of the step before in the background
included); then the best and median wall time of each tree and the best one's ratio
to DIALS's 161 s for the same kind of sweep on a 2-core machine (target: 10x).

``--tree=NAME=PATH`` (repeatable) runs the gonio source tree at PATH (e.g. a
``git worktree add /tmp/old HEAD~1``) instead of the installed one, through a
package folder of links put first on PYTHONPATH; the trees then take turns, run by
run (A/B interleaved, so that a change of load hits them alike). Without it the
installed tree runs alone (as ``new``).

The timed program runs with its bytecode compiled, as an installed gonio does (pip
compiles a wheel's modules when it installs them; an editable install writes them on its
first run): ``PYTHONDONTWRITEBYTECODE`` is removed from its environment and
``PYTHONPYCACHEPREFIX`` points into the benchmark's temporary folder (so that nothing is
written into the source trees), where the first, untimed run of each tree writes them.
With ``--no-bytecode`` every run compiles gonio's ~200 modules again (~0.5 s of CPU), as
the runs of the benchmark did in an environment that sets ``PYTHONDONTWRITEBYTECODE``.
The kernels are cached in the benchmark's temporary folder too (``NUMBA_CACHE_DIR``), so
that nothing another gonio on the machine does to the user's kernel cache (compiling other
sources, or stamping it for another numba) makes a timed run compile in the background.

Usage: python benchmarks/bench_process.py [n_images=120] [repeats=3] [--tree=NAME=PATH]...
       [--no-bytecode]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIALS_SECONDS = 161.0

#: Run in the timed program: gonio's main, with each step's wall and CPU time written
#: to standard error as one JSON line (CPU of the whole process: worker threads and the
#: background recording included).
WRAPPER = """
import json, sys, time
import gonio.shell.session as S
run_line = S.Session.run_line
def timed(self, line, defer=False):
    t0, c0 = time.perf_counter(), time.process_time()
    r = run_line(self, line, defer)
    sys.stderr.write("BENCH_STEP " + json.dumps([line.split()[0], time.perf_counter() - t0,
                                                 time.process_time() - c0]) + "\\n")
    return r
S.Session.run_line = timed
from gonio.shell.main import main
sys.exit(main(sys.argv[1:]))
"""


def shim(tree: Path, folder: Path) -> Path:
    """A folder whose ``gonio`` package is the source tree ``tree`` (links)."""
    pkg = folder / "gonio"
    pkg.mkdir(parents=True)
    for sub in ("core", "store", "shell", "session_examples"):
        (pkg / sub).symlink_to(tree / sub)
    return folder


def run(template: str, folder: Path, pythonpath: Path | None, pycache: Path | None,
        kernels: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(kernels))
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    if pycache is not None:  # compiled once, by the untimed first run
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", WRAPPER, "process", template, "-q"], cwd=folder,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"gonio process failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    steps: dict = {}
    for line in r.stderr.splitlines():
        if line.startswith("BENCH_STEP "):
            name, w, c = json.loads(line[len("BENCH_STEP "):])
            if name != "process":
                old = steps.get(name, (0.0, 0.0))
                steps[name] = (old[0] + w, old[1] + c)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "load": load, "steps": steps,
            "outside": wall - sum(w for w, _ in steps.values())}


def show(name: str, res: dict) -> None:
    steps = ", ".join(f"{k} {w:.2f}/{c:.2f}" for k, (w, c) in res["steps"].items())
    print(f"  {name}: wall {res['wall']:.1f} s, CPU {res['cpu']:.1f} s, load {res['load']:.1f}; "
          f"outside the steps {res['outside']:.2f} s; steps wall/CPU (s): {steps}", flush=True)


def main(n: int = 120, repeats: int = 3, trees: dict | None = None,
         bytecode: bool = True) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_integrate import sweep

    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        sweep(images, n, 1024)
        template = str(images / "image_#####.cbf")
        paths = {name: shim(Path(path).absolute(), Path(tmp) / f"shim_{name}")
                 for name, path in (trees or {}).items()}
        if not paths:
            paths = {"new": None}
        pycache = Path(tmp) / "pycache" if bytecode else None
        kernels = Path(tmp) / "kernels"
        for path in paths.values():  # kernels (and bytecode) compiled and cached
            run(template, Path(tempfile.mkdtemp(dir=tmp)), path, pycache, kernels)
        results: dict[str, list] = {name: [] for name in paths}
        for _ in range(repeats):
            for name, path in paths.items():
                res = run(template, Path(tempfile.mkdtemp(dir=tmp)), path, pycache, kernels)
                results[name].append(res)
                show(name, res)
        for name, runs in results.items():
            best = min(runs, key=lambda r: r["wall"])
            print(f"{name}: gonio process, {n} images of 1024 x 1024 px: best of {repeats} "
                  f"{best['wall']:.1f} s wall (median {statistics.median(r['wall'] for r in runs):.1f}"
                  f" s, CPU median {statistics.median(r['cpu'] for r in runs):.1f} s) = "
                  f"{DIALS_SECONDS / best['wall']:.1f}x faster than DIALS's {DIALS_SECONDS:.0f} s "
                  "(target 10x)")
            show(f"{name} best", best)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    named = {}
    for a in sys.argv[1:]:
        if a.startswith("--tree"):
            name, _, path = a.partition("=")[2].partition("=")
            named[name] = path
    main(int(args[0]) if args else 120, int(args[1]) if len(args) > 1 else 3, named or None,
         "--no-bytecode" not in sys.argv)
