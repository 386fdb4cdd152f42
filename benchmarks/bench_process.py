"""``gonio process`` end to end on a simulated 120-image 1M-pixel sweep, against DIALS.

The sweep is the one of bench_integrate.py (``lysozyme`` preset, 1024 x 1024 px
Pilatus-like panel, 120 images of miniCBF, made once in a temporary folder). The
whole ``gonio process`` program is timed as a new process (start-up, import, every
step, the MTZ files), with warm kernel caches (a first, untimed run compiles what
is missing), ``repeats`` times in fresh session folders; each step's time is read
from the line it ends with. Reported for every run: wall time, CPU time (user +
system of the program and its children) and the load average (the machine may be
shared: CPU time is the steadier figure then); then the best wall time and its
ratio to DIALS's 161 s for the same kind of sweep on a 2-core machine (target:
10x), and the steps.

Usage: python benchmarks/bench_process.py [n_images=120] [repeats=3]
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIALS_SECONDS = 161.0


def run(template: str, folder: Path) -> tuple[float, dict]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gonio.shell.main", "process", template, "-q"],
                       cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"gonio process failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    steps: dict = {}
    for m in re.finditer(r"\[step \d+: (\w+), ([\d.]+) s\]", r.stdout):
        steps[m.group(1)] = steps.get(m.group(1), 0.0) + float(m.group(2))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"  wall {wall:.1f} s, CPU {cpu:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return wall, steps


def main(n: int = 120, repeats: int = 3) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_integrate import sweep

    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        sweep(images, n, 1024)
        template = str(images / "image_#####.cbf")
        run(template, Path(tempfile.mkdtemp(dir=tmp)))  # kernels compiled and cached
        best = None
        for _ in range(repeats):
            wall, steps = run(template, Path(tempfile.mkdtemp(dir=tmp)))
            if best is None or wall < best[0]:
                best = (wall, steps)
        wall, steps = best
        print(f"gonio process, {n} images of 1024 x 1024 px: best of {repeats} {wall:.1f} s "
              f"wall = {DIALS_SECONDS / wall:.1f}x faster than DIALS's {DIALS_SECONDS:.0f} s "
              "(target 10x)")
        print("steps (s):", {k: round(v, 2) for k, v in steps.items()},
              f"sum {sum(steps.values()):.1f} s; start-up, session and files "
              f"{wall - sum(steps.values()):.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
