"""Speed of merge and export on ~100k synthetic scaled reflections (two sweeps).

Run:  python benchmarks/bench_export.py [--d-min 1.6] [--obs 6]

Prints the time of merging (with French-Wilson amplitudes and the merged
MTZ) and of each export format, each after one warm-up run (numba kernels
compiled and cached, scipy imported), and, as a reference within the same
run, the time to encode the same table as a DIALS .refl (msgpack).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gonio.core.export.files import export_files  # noqa: E402
from gonio.core.export.params import FORMATS, ExportParams  # noqa: E402
from gonio.core.export.prepare import prepare  # noqa: E402
from gonio.core.io.dials_refl import refl_to_bytes  # noqa: E402
from gonio.core.merge.french_wilson import french_wilson  # noqa: E402
from gonio.core.merge.merge import merge_scaled  # noqa: E402
from gonio.core.merge.merged_mtz import merged_mtz  # noqa: E402
from gonio.core.merge.params import MergeParams  # noqa: E402
from gonio.core.merging import merge_equivalents, merging_statistics  # noqa: E402
from tests.merge_export_data import dataset  # noqa: E402


def _best(fn, repeats=3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--d-min", type=float, default=1.6)
    ap.add_argument("--obs", type=int, default=6)
    args = ap.parse_args()
    expts, table, truth = dataset(n_unique_dmin=args.d_min, n_obs=args.obs, n_sweeps=2, seed=3)
    print(f"{len(table)} observations of {len(truth['hkl'])} unique reflections")
    ref = _best(lambda: refl_to_bytes(table))
    print(f"{'step':<28}{'seconds':>9}{'x .refl encode':>16}")
    print(f"{'.refl encode (reference)':<28}{ref:>9.3f}{1.0:>16.2f}")

    def merge():
        r = merge_scaled(expts, table, MergeParams())
        merged_mtz(r).write_to_bytes()

    t = _best(merge)
    print(f"{'merge + merged.mtz':<28}{t:>9.3f}{t / ref:>16.2f}")
    # the parts: equivalents and statistics (gonio.core.merging), French-Wilson
    prep = prepare(expts, table, ["scale"], partiality_threshold=0.4)
    hkl, I = prep.table["miller_index"], prep.table["intensity.scale.value"]
    sig = np.sqrt(prep.table["intensity.scale.variance"])
    sg, cell = prep.space_group, prep.cell
    parts = {
        "  filter (prepare)": lambda: prepare(expts, table, ["scale"], partiality_threshold=0.4),
        "  merge_equivalents": lambda: merge_equivalents(hkl, I, sig, sg, anomalous=True),
        "  merging_statistics": lambda: merging_statistics(hkl, I, sig, cell, sg),
    }
    m = merge_equivalents(hkl, I, sig, sg)
    d = cell.calculate_d_array(m.miller_index)
    eps = sg.operations().epsilon_factor_without_centering_array(m.miller_index).astype(float)
    parts["  French-Wilson"] = lambda: french_wilson(m.intensity, m.sigma, d, eps, m.centric)
    for name, fn in parts.items():
        t = _best(fn)
        print(f"{name:<28}{t:>9.3f}{t / ref:>16.2f}")
    for fmt in FORMATS:
        t = _best(lambda fmt=fmt: export_files(expts, table, ExportParams(format=fmt)))
        print(f"{'export ' + fmt:<28}{t:>9.3f}{t / ref:>16.2f}")


if __name__ == "__main__":
    main()
