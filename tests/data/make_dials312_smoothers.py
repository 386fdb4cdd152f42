"""Make ``dials312_lcysteine_smoothers.json``: the scale and decay terms of DIALS 3.12's
physical model for 40 reflections of each L-cysteine sweep, the reference of
tests/test_scaling_dials_procedure.py for where dials.scale places its smoothers.

Run with DIALS's Python (not gonio's; DIALS 3.12, Debian package), from any folder::

    /usr/bin/python3 tests/data/make_dials312_smoothers.py \\
        ../shared/data/l_cysteine_4_sweeps_scaled

It runs the reference command of make_dials312_lcysteine.py (dials.scale on the three
.expt/.refl pairs with overwrite_existing_models=True) and stops the scaling at the first
outlier rejection across the sweeps, after the first L-BFGS round (dials.scale still writes
its report and files, in the current folder); there it evaluates each sweep's
scale and decay components on the suitable reflections and keeps, per sweep, the rotation
range (deg), the nominal intervals (15 and 20 deg: sweeps of 90 deg and more), the rotation
range of the suitable reflections, the parameters, and for 40 reflections (the first, the
last and 38 at random) their rotation angle, d and the two terms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("dials312_lcysteine_smoothers.json")


class _Done(Exception):
    pass


def main(data: str) -> None:
    from dials.algorithms.scaling import scaler as S
    from dials.command_line import scale as cmd

    def capture(self):
        rng = np.random.default_rng(0)
        sweeps = []
        for s in self.active_scalers:
            values = {}
            for name in ("scale", "decay"):
                c = s.components[name]
                c.update_reflection_data()
                values[name] = np.array(c.calculate_scales_and_derivatives(block_id=0)[0])
            t = s.reflection_table.select(s.suitable_refl_for_scaling_sel)
            scan = s.experiment.scan
            phi = np.array(scan.get_angle_from_array_index(t["xyzobs.px.value"].parts()[2]))
            pick = np.sort(np.concatenate([[np.argmin(phi), np.argmax(phi)],
                                           rng.choice(len(phi), 38, replace=False)]))
            osc = scan.get_oscillation_range()
            sweeps.append({
                "phi_range": [float(min(osc)), float(max(osc))], "scale_interval": 15.0,
                "decay_interval": 20.0, "data_range": [float(phi.min()), float(phi.max())],
                "phi": phi[pick].tolist(), "d": np.array(t["d"])[pick].tolist(),
                "scale_parameters": list(s.components["scale"].parameters),
                "decay_parameters": list(s.components["decay"].parameters),
                "scale": values["scale"][pick].tolist(),
                "decay": values["decay"][pick].tolist()})
        OUT.write_text(json.dumps({"source": "dials.scale 3.12, reference run of "
                                   "make_dials312_lcysteine.py, after its first L-BFGS round",
                                   "sweeps": sweeps}, indent=0) + "\n")
        print(f"wrote {OUT}")
        raise _Done

    S.MultiScalerBase.round_of_outlier_rejection = capture
    d = Path(data)
    args = [str(d / f"{n}.{x}") for n in ("scaled_20_25", "scaled_30", "scaled_35")
            for x in ("expt", "refl")]
    try:
        cmd.run(args + ["overwrite_existing_models=True"])
    except _Done:
        pass


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/l_cysteine_4_sweeps_scaled")
