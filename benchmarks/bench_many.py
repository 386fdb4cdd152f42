"""``gonio process --many`` on simulated sweeps: 2 Dask workers against 1.

Makes ``n_sweeps`` lysozyme sweeps (``n_images`` images of ``size`` x ``size`` px, a different
random orientation each), then times the whole program ``gonio process --many`` on
them with ``--workers 1`` (its sweeps' steps using both cores, the default, and one
core, ``--nproc 1``) and with ``--workers 2`` (one core each), in fresh output
folders, alternating, ``repeats`` times. Reported: each run's wall and CPU time and the
load average (on a shared machine a 2-worker batch may get less than two cores), then
the best times and their ratios (the issue's target: 2 workers in about half the time
of 1).

Usage: python benchmarks/bench_many.py [n_sweeps=8] [n_images=60] [repeats=1] [size=512]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(n_sweeps: int = 8, n_images: int = 60, repeats: int = 1, size: int = 512) -> None:
    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k in range(n_sweeps):
            simulate(SimulationParams.from_preset(
                "lysozyme", output=str(tmp / f"sweep_{k}"), seed=k + 1, n_images=n_images,
                image_size=(size, size)))
        best: dict[str, float] = {}
        runs = {"1 worker, 2 cores per sweep": ["--workers", "1"],
                "1 worker, 1 core per sweep": ["--workers", "1", "--nproc", "1"],
                "2 workers, 1 core per sweep": ["--workers", "2"]}
        for rep in range(repeats):
            for k, (workers, options) in enumerate(runs.items()):
                out = tmp / f"out_{k}_{rep}"
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                r = subprocess.run(
                    [sys.executable, "-m", "gonio.shell.main", "process", "--many",
                     str(tmp / "sweep_*" / "image_00001.cbf"), "--out", str(out), *options],
                    capture_output=True, text=True, stdin=subprocess.DEVNULL)
                dt = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                print(f"  {workers}: {dt:.1f} s wall, {cpu:.1f} s CPU (workers included), load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                if r.returncode:
                    raise SystemExit(f"process --many failed:\n{r.stdout[-3000:]}\n"
                                     f"{r.stderr[-3000:]}")
                best[workers] = min(best.get(workers, float("inf")), dt)
        print(f"process --many, {n_sweeps} sweeps of {n_images} images of {size} x {size} px:")
        for name, dt in best.items():
            print(f"  {name}: {dt:.1f} s ({dt / n_sweeps:.1f} s per sweep)")
        one, one_core, two = best.values()
        print(f"  2 workers / 1 worker on 1 core: {two / one_core:.2f} (target about 0.5); "
              f"2 workers / 1 worker on 2 cores: {two / one:.2f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
