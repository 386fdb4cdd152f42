"""Speed of ``symmetry`` on ~60k integrated reflections (dials.symmetry takes 9-14 s).

Run:  python benchmarks/bench_symmetry.py [--n-obs 60000] [--space-group "P 41 21 2"]

Simulates a P 1-indexed data set (random Wilson structure, gonio.core.symmetry.synthetic),
runs the Laue group analysis, the absences and the reindexing, and prints the time of
each part against the time to read the same table back from a DIALS .refl file (the
ratio is what to compare between machines), and the total per 10k reflections.
Also times the real L-cysteine data (four sweeps, ~20k reflections) when present.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from gonio.core.io.dials_refl import read_refl, write_refl
from gonio.core.symmetry import SymmetryParams, determine_symmetry
from gonio.core.symmetry.synthetic import simulate_integrated

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "l_cysteine_4_sweeps_scaled"


def _best_of(fn, repeats=3):
    best, out = None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-obs", type=int, default=60000)
    ap.add_argument("--space-group", default="P 41 21 2")
    ap.add_argument("--cell", default="60,60,80,90,90,90")
    args = ap.parse_args()
    cell = tuple(float(x) for x in args.cell.split(","))
    expts, table, _ = simulate_integrated(args.space_group, cell, d_min=2.5, n_obs=args.n_obs,
                                          seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.refl"
        write_refl(table, path)
        t_read, _ = _best_of(lambda: read_refl(path))
    determine_symmetry(expts, table)  # warm caches (imports)
    t_all, (_, _, res) = _best_of(lambda: determine_symmetry(expts, table))
    p = SymmetryParams(check_absences=False)
    t_noabs, _ = _best_of(lambda: determine_symmetry(expts, table, p))
    print(f"{len(table)} reflections, {args.space_group} -> {res.laue_group.xhm()} / "
          f"{res.space_group.xhm()} (confidence {res.laue.best.confidence:.3f})")
    print(f"read .refl            {t_read:8.3f} s")
    print(f"symmetry (no absences){t_noabs:8.3f} s  ({t_noabs / t_read:.1f} x read)")
    print(f"symmetry (all)        {t_all:8.3f} s  ({t_all / t_read:.1f} x read, "
          f"{t_all / len(table) * 1e4:.3f} s per 10k reflections; DIALS 9-14 s for 60k)")
    if DATA.is_dir():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_symmetry_real import load_lcys  # noqa: E402

        expts, table = load_lcys()
        t, (_, _, res) = _best_of(lambda: determine_symmetry(expts, table))
        print(f"L-cysteine, 4 sweeps, {len(table)} reflections: {t:.3f} s -> "
              f"{res.space_group.xhm()}")


if __name__ == "__main__":
    main()
