"""Speed of ``index`` on ~100k simulated strong spots (a 90-degree protein sweep).

Run:  python benchmarks/bench_index.py [--d-min 1.9] [--images 900]

Prints the time split (rlps, max_cell, candidate search (FFT), basis
selection, index assignment, refinement, final prediction) and the cost per
10k spots. Ground truth comes from gonio.core.prediction.rotation with
centroid noise of 0.2 px and 0.1 image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_indexing_synthetic import compare, make_experiment, strong_spots  # noqa: E402

from gonio.core.indexing import IndexParams, index  # noqa: E402
from gonio.core.models.experiment import ExperimentList  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--d-min", type=float, default=1.9)
    ap.add_argument("--images", type=int, default=900)
    ap.add_argument("--method", default="fft3d")
    args = ap.parse_args()
    experiments = make_experiment((57.8, 57.8, 150.0, 90, 90, 90), "P 41 21 2",
                                  n_images=args.images, osc=0.1, seed=1)
    t0 = time.perf_counter()
    strong, _, _ = strong_spots(experiments, args.d_min)
    print(f"simulated {len(strong)} strong spots over "
          f"{args.images * 0.1:.0f} deg in {time.perf_counter() - t0:.1f} s")
    imported = ExperimentList([experiments[0].replace(crystal=None)])
    t0 = time.perf_counter()
    found, refl, result = index(imported, strong, IndexParams(method=args.method))
    total = time.perf_counter() - t0
    _, angle, cell_err = compare(found[0].crystal, experiments[0].crystal)
    print(f"indexed {result.percent_indexed:.1f}%, RMSDs "
          + ", ".join(f"{x:.3f}" for x in result.rmsds)
          + f" (px, px, images); orientation error {angle:.4f} deg, cell error "
          f"{100 * cell_err:.4f}%")
    print(f"{'step':<12}{'seconds':>10}{'fraction':>10}")
    for name, sec in result.timings.items():
        print(f"{name:<12}{sec:>10.2f}{sec / total:>10.1%}")
    print(f"{'total':<12}{total:>10.2f}   ({total / len(strong) * 1e4:.2f} s per 10k spots)")


if __name__ == "__main__":
    main()
