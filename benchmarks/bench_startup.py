"""Start-up of the shell: time to run `gonio -c help` in a fresh process, against bare Python.

Reports both and their ratio, and whether numba was imported (it must not be: starting the
shell compiles nothing). Then the fixed cost of a one-step command, `gonio -c "import
<one Pilatus 6M image>; findspots"` with the kernels cached: the whole process against the
time its two steps report (the rest is Python start-up, imports, opening the session and
loading numba with its cached kernels), and how long loading numba and the cached
spot-finding kernels takes on its own.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = ("import sys; from gonio.shell.main import main; main(['-c', 'help']); "
        "print('NUMBA', 'numba' in sys.modules, file=sys.stderr)")


def timed(args, cwd) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t, r.stderr


def main(n: int = 7) -> None:
    with tempfile.TemporaryDirectory() as d:
        bare = statistics.median(timed([sys.executable, "-c", "pass"], d)[0] for _ in range(n))
        runs = [timed([sys.executable, "-c", CODE], d) for _ in range(n)]
        gonio = statistics.median(t for t, _ in runs)
        numba = any("NUMBA True" in err for _, err in runs)
    print(f"bare python start: {bare:.3f} s")
    print(f"gonio -c help:     {gonio:.3f} s  ({gonio / bare:.1f}x bare python)")
    print(f"numba imported at start: {numba}")
    one_step(n)


IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "thau_3_2_0001.cbf.bz2"
LOAD_KERNELS = ("import time; t = time.perf_counter(); "
                "from gonio.core.spotfinding.warmup import warm_up; warm_up(); "
                "print(time.perf_counter() - t)")


def one_step(n: int) -> None:
    """Process time of `gonio -c "import IMAGE; findspots"` against its steps' own times."""
    if not IMAGE.exists():
        print(f"(no {IMAGE}: one-step figures skipped)")
        return
    gonio = [sys.executable, "-m", "gonio.shell.main", "-c", f"import {IMAGE}; findspots"]
    subprocess.run([sys.executable, "-c", LOAD_KERNELS], capture_output=True)  # compile once
    totals, steps, loads = [], [], []
    for _ in range(max(3, n // 2)):
        with tempfile.TemporaryDirectory() as d:
            t, out = timed_out(gonio, d)
            totals.append(t)
            steps.append(sum(float(x) for x in re.findall(r"\[step \d+: \w+, ([\d.]+) s\]", out)))
        r = subprocess.run([sys.executable, "-c", LOAD_KERNELS], capture_output=True, text=True)
        loads.append(float(r.stdout.split()[-1]))
    total, step = statistics.median(totals), statistics.median(steps)
    print(f"gonio -c 'import <Pilatus 6M .cbf.bz2>; findspots': {total:.2f} s, its steps "
          f"{step:.2f} s, the rest {total - step:.2f} s ({(total - step) / total:.0%})")
    print(f"  of which numba and the cached spot-finding kernels (loaded alone): "
          f"{statistics.median(loads):.2f} s")


def timed_out(args, cwd) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t, r.stdout


if __name__ == "__main__":
    main()
