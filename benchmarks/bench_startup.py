"""Start-up of the shell: time to run `gonio -c help` in a fresh process, against bare Python.

Reports both and their ratio, and whether numba was imported (it must not be: starting the
shell compiles nothing).

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

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


if __name__ == "__main__":
    main()
