"""Time the simulation of a 1024 x 1024, 100-image sweep (lysozyme preset) in each format.

    python benchmarks/bench_simulate.py [--format cbf|smv|nexus|none] [--nproc 2]

Prints the set-up time (prediction, intensities, spot shapes), the image time (render, noise,
compress, write) and images per second. The first run includes numba compilation (cached).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from gonio.core.simulate import SimulationParams, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--format", default="cbf", choices=["cbf", "smv", "nexus", "none"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=100)
    args = ap.parse_args()
    # warm-up: compile the kernels (cached on disk afterwards)
    simulate(SimulationParams(preset="lysozyme", image_size=(64, 64), n_images=2))
    with tempfile.TemporaryDirectory() as tmp:
        params = SimulationParams(
            preset="lysozyme", image_size=(1024, 1024), n_images=args.n_images,
            output=None if args.format == "none" else tmp,
            format="cbf" if args.format == "none" else args.format, nproc=args.nproc)
        t0 = time.perf_counter()
        res = simulate(params)
        total = time.perf_counter() - t0
    t = res.timing
    print(f"format={args.format} nproc={args.nproc} images={args.n_images} 1024x1024 px, "
          f"{t['n_reflections']} reflections")
    print(f"set-up {t['setup_s']:.2f} s, images {t['images_s']:.2f} s, total {total:.2f} s")
    print(f"{args.n_images / total:.1f} images/s overall, "
          f"{args.n_images / t['images_s']:.1f} images/s for the image stage")


if __name__ == "__main__":
    main()
