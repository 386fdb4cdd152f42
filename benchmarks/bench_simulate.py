"""Time the simulation of a 1024 x 1024, 100-image sweep (lysozyme preset) in each format.

    python benchmarks/bench_simulate.py [--format cbf|smv|nexus|none] [--nproc 2]
    python benchmarks/bench_simulate.py --compare TREE [TREE2] [--repeats 3] [...]

Prints the set-up time (prediction, intensities, spot shapes), the image time (render, noise,
compress, write) and images per second. A warm-up simulation runs first (imports; the
kernels of trees that still have some).

With ``--compare``: the same measurement for the working tree (or TREE2) and TREE (folders
holding ``gonio/core``..., see bench_first_run.py), each run in its own process through
``PYTHONPATH``, alternating, ``--repeats`` times; the best totals and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(args) -> None:
    from gonio.core.simulate import SimulationParams, simulate

    simulate(SimulationParams(preset="lysozyme", image_size=(64, 64), n_images=2))
    with tempfile.TemporaryDirectory() as tmp:
        params = SimulationParams(
            preset="lysozyme", image_size=(1024, 1024), n_images=args.n_images,
            output=None if args.format == "none" else tmp,
            format="cbf" if args.format == "none" else args.format, nproc=args.nproc)
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate(params)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = res.timing
    print(f"format={args.format} nproc={args.nproc} images={args.n_images} 1024x1024 px, "
          f"{t['n_reflections']} reflections")
    print(f"set-up {t['setup_s']:.2f} s, images {t['images_s']:.2f} s, total {total:.2f} s, "
          f"CPU {cpu:.2f} s")
    print(f"{args.n_images / total:.1f} images/s overall, "
          f"{args.n_images / t['images_s']:.1f} images/s for the image stage")


def compare(args) -> None:
    trees = {args.compare[1] if len(args.compare) > 1 else "this tree":
             str(Path(args.compare[1]).absolute()) if len(args.compare) > 1 else None,
             args.compare[0]: str(Path(args.compare[0]).absolute())}
    own = [sys.executable, __file__, "--format", args.format, "--nproc", str(args.nproc),
           "--n-images", str(args.n_images)]
    totals: dict[str, list] = {name: [] for name in trees}
    for k in range(args.repeats):
        for name in list(trees)[::1 if k % 2 == 0 else -1]:
            env = {key: v for key, v in os.environ.items() if key != "PYTHONPATH"}
            if trees[name]:
                env["PYTHONPATH"] = trees[name]
            out = subprocess.run(own, env=env, capture_output=True, text=True, check=True).stdout
            total, cpu = (float(x) for x in re.search(r"total ([\d.]+) s, CPU ([\d.]+)",
                                                      out).groups())
            totals[name].append((total, cpu))
            print(f"{name}: total {total:.2f} s, CPU {cpu:.2f} s (load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    (a, b) = (min(totals[n]) for n in trees)
    names = list(trees)
    print(f"best: {names[0]} {a[0]:.2f} s, {names[1]} {b[0]:.2f} s: ratio {a[0] / b[0]:.2f}; "
          f"CPU {a[1]:.2f} / {b[1]:.2f} s = {a[1] / b[1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--format", default="cbf", choices=["cbf", "smv", "nexus", "none"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--compare", nargs="+", metavar="TREE")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.compare:
        compare(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
