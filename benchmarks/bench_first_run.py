"""First run against second run of ``gonio demo``, with an empty kernel cache.

Runs ``gonio demo`` twice in fresh folders with a fresh, empty numba cache
(NUMBA_CACHE_DIR in a temporary folder): the first run compiles the numba
kernels (in the demo process and in the background process the shell
starts), the second loads them. Reports wall times, each step's time (from
``history``) and the difference (target: first run at most 5 s slower).

    python benchmarks/bench_first_run.py
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(folder: Path, env: dict) -> tuple[float, dict, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gonio.shell.main", "demo", str(folder)], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"gonio demo failed:\n{r.stdout}\n{r.stderr}")
    steps = {}  # from the line each step ends with: [step 3: findspots, 0.47 s]
    for m in re.finditer(r"\[step \d+: (\w+), ([\d.]+) s\]", r.stdout):
        steps[m.group(1)] = float(m.group(2))
    return wall, steps, r.stderr


def wait_for_preparation(cache: Path) -> None:
    """Block until no background preparation holds a unit of the cache folder."""
    for lock in sorted((cache / "gonio-state").glob("*.lock")):
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "numba-cache"
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
        first, steps1, err1 = run_demo(Path(tmp) / "demo1", env)
        wait_for_preparation(cache)
        second, steps2, _ = run_demo(Path(tmp) / "demo2", env)
    print(f"load average during the runs: {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores")
    print(f"gonio demo, empty kernel cache: {first:6.2f} s")
    print(f"gonio demo, second run:         {second:6.2f} s")
    print(f"first - second:                 {first - second:6.2f} s  (target <= 5 s)")
    print(f"ratio first / second:           {first / second:6.2f}")
    for name in steps1:
        print(f"  {name:<10} {steps1[name]:6.2f} s  then {steps2.get(name, float('nan')):6.2f} s")
    notes = [line for line in err1.splitlines() if "kernels" in line]
    print("messages of the first run:", *notes, sep="\n  ")


if __name__ == "__main__":
    main()
