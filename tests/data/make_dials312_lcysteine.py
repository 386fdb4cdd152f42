"""Make ``dials312_lcysteine_stats.json`` and ``dials312_lcysteine_scales.npz``: DIALS 3.12's
merging statistics of the four L-cysteine sweeps and its per-observation outcome, the
references of tests/test_scaling_dials312.py (DIALS is not in CI).

How the DIALS output was made (DIALS 3.12, Debian package, December 2026)::

    dials.scale ../shared/data/l_cysteine_4_sweeps_scaled/scaled_{20_25,30,35}.{expt,refl} \\
        overwrite_existing_models=True

Run this script with the folder holding that run's scaled.expt, scaled.refl and
dials.scale.log, and optionally the folder of a second run on the third sweep alone
(``dials.scale scaled_30.expt scaled_30.refl overwrite_existing_models=True``, which
writes ``dials312_lcysteine_sweep3_stats.json``, the same record without the .npz)::

    .venv/bin/python tests/data/make_dials312_lcysteine.py /tmp/dials_lcys /tmp/dials_single30

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


def main(folder: str, single_sweep_folder: str | None = None) -> None:
    d = Path(folder)
    out = _reference(d, "dials.scale scaled_20_25.expt scaled_20_25.refl scaled_30.expt "
                        "scaled_30.refl scaled_35.expt scaled_35.refl "
                        "overwrite_existing_models=True")
    path = Path(__file__).with_name("dials312_lcysteine_stats.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    _write_scales(d, Path(__file__).with_name("dials312_lcysteine_scales.npz"))
    if single_sweep_folder:
        out = _reference(Path(single_sweep_folder), "dials.scale scaled_30.expt scaled_30.refl "
                                                   "overwrite_existing_models=True")
        path = Path(__file__).with_name("dials312_lcysteine_sweep3_stats.json")
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def _reference(d: Path, command: str) -> dict:
    """DIALS's run in folder ``d`` (scaled.expt, scaled.refl, dials.scale.log): its merging
    statistics recomputed with gonio's code, and what its log and model say."""
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
    imid = re.search(r"Combined intensities with Imid = ([\d.]+) determined", log)
    return {
        "program": f"dials.scale (DIALS {version})",
        "command": command,
        "data": "../shared/data/l_cysteine_4_sweeps_scaled",
        "intensity_choice": "profile" if "Profile intensities determined" in log else "other",
        "imid": float(imid.group(1)) if imid else None,
        "error_model": [a, b],
        "error_model_before_final_outliers": [float(x) for x in refined[-2]],
        "n_outliers": int(re.findall(r"(\d+) outliers have been identified", log)[-1]),
        "rounds": _rounds(log),
        "parameter_sd": [{k: m[k]["est_standard_devs"] for k in ("scale", "decay", "absorption")}
                         for m in json.loads((d / "scaled.expt").read_text())["scaling_model"]],
        "space_group": "P 21 21 21",
        "unit_cell": list(e[0].crystal.unit_cell.parameters),
        "overall": {k: asdict(s.overall)[k] for k in KEYS},
        "shells": [{k: asdict(x)[k] for k in KEYS} for x in s.shells],
    }


def _rounds(log: str) -> list:
    """Each outlier rejection (the per-sweep ones summed) and error-model refinement of the
    log, in order: ["outliers", n] or ["error model", [a, b]]."""
    out: list = []
    events = re.finditer(r"(\d+) outliers have been identified|Parameters: a = ([\d.]+), "
                         r"b = ([\d.]+)", log)
    for m in events:
        if m.group(1):
            initial = m.start() < log.rfind("Completed preprocessing and initialisation")
            kind = "outliers per sweep" if initial else "outliers"
            if kind == "outliers per sweep" and out and out[-1][0] == kind:
                out[-1][1] += int(m.group(1))
            else:
                out.append([kind, int(m.group(1))])
        elif m.group(2) and float(m.group(2)) != 1.0:  # not the starting (1, 0.02)
            out.append(["error model", [float(m.group(2)), float(m.group(3))]])
    return [["outliers", n] if k == "outliers per sweep" else [k, n] for k, n in out]


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
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dials_lcys",
         sys.argv[2] if len(sys.argv) > 2 else None)
