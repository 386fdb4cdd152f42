"""Make ``dials312_lcysteine_stats.json`` and ``dials312_lcysteine_scales.npz``: DIALS 3.12's
merging statistics of the four L-cysteine sweeps and its per-observation outcome, the
references of tests/test_scaling_dials312.py (DIALS is not in CI).

How the DIALS output was made (DIALS 3.12, Debian package, December 2026)::

    dials.scale ../shared/data/l_cysteine_4_sweeps_scaled/scaled_{20_25,30,35}.{expt,refl} \\
        overwrite_existing_models=True

Run this script with the folder holding that run's scaled.expt, scaled.refl and
dials.scale.log::

    .venv/bin/python tests/data/make_dials312_lcysteine.py /tmp/dials_lcys

It recomputes the statistics with gonio's merging code (P 21 21 21, 20 shells, at full
precision) from DIALS's ``intensity.scale.value / inverse_scale_factor`` and
``sqrt(intensity.scale.variance) / inverse_scale_factor`` on the observations DIALS kept
(not ``bad_for_scaling``), and records DIALS's error model, intensity choice and outlier
count read from the files and the log. The .npz holds, for every observation DIALS scaled
or rejected as an outlier (rows of the three input .refl files concatenated, as
tests/test_scaling_lcysteine.py reads them): which rows (packed bits), which of them DIALS
rejected (packed bits) and DIALS's ``inverse_scale_factor`` of each, in row order (float32); the few partials DIALS merged with another are left out.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.merging import merging_statistics
from gonio.core.reflection_table import Flags
from gonio.core.scaling.engine import combined_intensities

KEYS = ("d_max", "d_min", "n_obs", "n_unique", "cc_half", "r_meas", "mean_i_over_sigma")


def main(folder: str) -> None:
    d = Path(folder)
    t = read_refl(str(d / "scaled.refl"))
    e = read_expt(str(d / "scaled.expt"))
    log = (d / "dials.scale.log").read_text()
    used = ~t.get_flags(Flags.bad_for_scaling, all_bits=False) & (t["inverse_scale_factor"] > 0)
    t = t.select(used)
    g = t["inverse_scale_factor"]
    s = merging_statistics(t["miller_index"], t["intensity.scale.value"] / g,
                           np.sqrt(t["intensity.scale.variance"]) / g,
                           e[0].crystal.unit_cell.parameters, "P 21 21 21")
    refined = re.findall(r"Parameters: a = ([\d.]+), b = ([\d.]+)", log)
    a, b = (float(x) for x in refined[-1])
    version = re.search(r"^DIALS ([\d.]+)", log, re.M).group(1)
    out = {
        "program": f"dials.scale (DIALS {version})",
        "command": "dials.scale scaled_20_25.expt scaled_20_25.refl scaled_30.expt "
                   "scaled_30.refl scaled_35.expt scaled_35.refl overwrite_existing_models=True",
        "data": "../shared/data/l_cysteine_4_sweeps_scaled",
        "intensity_choice": "profile" if "Profile intensities determined" in log else "other",
        "error_model": [a, b],
        "error_model_before_final_outliers": [float(x) for x in refined[-2]],
        "n_outliers": int(re.findall(r"(\d+) outliers have been identified", log)[-1]),
        "space_group": "P 21 21 21",
        "unit_cell": list(e[0].crystal.unit_cell.parameters),
        "overall": {k: asdict(s.overall)[k] for k in KEYS},
        "shells": [{k: asdict(x)[k] for k in KEYS} for x in s.shells],
    }
    path = Path(__file__).with_name("dials312_lcysteine_stats.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    _write_scales(d, Path(__file__).with_name("dials312_lcysteine_scales.npz"))


def _write_scales(d: Path, path: Path) -> None:
    t = read_refl(str(d / "scaled.refl"))
    data = Path(__file__).resolve().parents[2].parent / "shared/data/l_cysteine_4_sweeps_scaled"
    inputs = [read_refl(str(data / f"{n}.refl")) for n in ("scaled_20_25", "scaled_30", "scaled_35")]
    ids = np.concatenate([x["id"] + k for x, k in zip(inputs, (0, 2, 3))])
    i_sum = np.concatenate([x["intensity.sum.value"] for x in inputs])
    rejected = t.get_flags(Flags.outlier_in_scaling)
    scaled = ~t.get_flags(Flags.bad_for_scaling, all_bits=False) | rejected
    row = np.zeros(len(t), np.int64)
    for i in range(4):
        s = t["id"] == i
        row[s] = np.flatnonzero(ids == i)[t["original_index"][s].astype(np.int64)]
    merged = scaled & ~np.isclose(i_sum[row], t["intensity.sum.value"], rtol=1e-9)
    keep = scaled
    i_m, v_m = combined_intensities(t, np.flatnonzero(merged), 0.0)
    order = np.argsort(row[keep])
    scaled_rows = np.zeros(len(ids), bool)
    scaled_rows[row[keep]] = True
    outlier_rows = np.zeros(len(ids), bool)
    outlier_rows[row[keep & rejected]] = True
    np.savez_compressed(path, n_rows=len(ids), scaled=np.packbits(scaled_rows),
                        outlier=np.packbits(outlier_rows),
                        inverse_scale_factor=t["inverse_scale_factor"][keep][order]
                        .astype(np.float32), merged_row=row[merged],
                        merged_intensity=i_m, merged_variance=v_m)
    print(f"wrote {path} ({path.stat().st_size} bytes)")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dials_lcys")
