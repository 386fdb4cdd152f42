"""Speed of ``refine`` (static, then scan-varying) on simulated sweeps with known truth.

Run:  python benchmarks/bench_refine.py [--images 120] [--osc 0.5]

Two cases:

1. a 120-image sweep on a 1M-pixel (1024 x 1024 Pilatus-like) detector, the
   default refine (static + scan-varying, reflections_per_degree=50); DIALS
   (dials.refine scan_varying=True after a static run) takes about 9 s on it;
2. 100k reflections refined scan-varying with every reflection used
   (reflections_per_degree=None).

Observed centroids are gonio's predictions plus 0.2 px / 0.2 image noise;
the truth comes from gonio.core.simulate.models. Prints the wall and CPU
time and the accuracy against the truth (on a shared machine the CPU time is
the steadier figure).

refine runs its BLAS single-threaded (threadpoolctl): its products are thin,
(N, 3) x (3, 3) and (3N, n) x (3N, n), where BLAS threads mostly wait for each
other. Measured on the shared 2-core machine (load ~4), case 2: 29.9 s wall /
17.8 s CPU with threaded BLAS and einsum normal equations; 9.9 s wall / 6.8 s
CPU with one BLAS thread and per-image BLAS blocks of the scan-varying normal
equations (the same RMSDs and orientation error).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_indexing_synthetic import strong_spots  # noqa: E402

from gonio.core.geometry.spots import centroid_px_to_mm  # noqa: E402
from gonio.core.models.crystal import Crystal  # noqa: E402
from gonio.core.models.experiment import ExperimentList  # noqa: E402
from gonio.core.refinement import refine  # noqa: E402
from gonio.core.refinement.params import RefineParams  # noqa: E402
from gonio.core.simulate.models import true_models  # noqa: E402
from gonio.core.simulate.params import SimulationParams  # noqa: E402


def case(n_images, osc, d_min, image_size, drift=(0.1, 0.1, 0.1)):
    p = SimulationParams(space_group="P 21 21 21", unit_cell=(54.1, 58.3, 66.5, 90, 90, 90),
                         n_images=n_images, osc=osc, d_min=d_min, image_size=image_size,
                         distance=150.0, crystal_drift=drift)
    truth, _, _ = true_models(p, np.random.default_rng(1))
    strong, hkl, _ = strong_spots(truth, d_min, sigma_px=0.2, sigma_z=0.2)
    strong["miller_index"] = hkl
    e = truth[0]
    start = ExperimentList([e.replace(crystal=e.crystal.replace(A_at_scan_points=None))])
    centroid_px_to_mm(start, strong)
    return truth, start, strong


def run(title, truth, start, strong, params):
    refine(start, strong.select(np.arange(2000)), RefineParams(scan_varying=False))  # warm up
    t0, c0 = time.perf_counter(), time.process_time()
    refined, _, result = refine(start, strong, params)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    T = truth[0].crystal.A_at_scan_points
    err = max(np.degrees(np.arccos(np.clip((np.trace(Crystal(A=a).U @ Crystal(A=t).U.T) - 1) / 2,
                                           -1, 1)))
              for a, t in zip(refined[0].crystal.A_at_scan_points, T))
    print(f"{title}: {len(strong)} reflections, {result.n_reflections} used; "
          f"{dt:.2f} s wall, {cpu:.2f} s CPU (all threads); RMSDs {', '.join(f'{x:.3f}' for x in result.rmsds)} (px, px, images); "
          f"worst orientation error over the scan {err:.4f} deg")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--osc", type=float, default=0.5)
    args = ap.parse_args()
    truth, start, strong = case(args.images, args.osc, 1.6, (1024, 1024))
    t1 = run(f"{args.images}-image 1M sweep, static + scan-varying", truth, start, strong,
             RefineParams(scan_varying=True))
    print(f"  ratio to DIALS (9 s): {t1 / 9.0:.2f}")
    truth, start, strong = case(720, 0.5, 1.2, (2463, 2527))
    keep = np.random.default_rng(0).choice(len(strong), min(len(strong), 100_000),
                                           replace=False)
    run("100k reflections, scan-varying, all used", truth, start, strong.select(np.sort(keep)),
        RefineParams(scan_varying=True, reflections_per_degree=None))


if __name__ == "__main__":
    main()
