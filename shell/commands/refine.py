"""The ``refine`` command: static refinement of the indexed models (dials.refine, scan-static).

Uses the same engine as index (gonio.core.refinement): beam, crystal
(orientation and symmetry-constrained cell), detector and goniometer axis,
with the same fix options.
"""

from __future__ import annotations

from tabulate import tabulate

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class RefineInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.refinement.params import RefinementParams
    from gonio.shell.commands.index import OVERRIDES
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(RefinementParams, overrides=OVERRIDES)


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.refinement import refine
    from gonio.core.refinement.params import RefinementParams
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    indexed = state.reflections.get("indexed")
    if indexed is None or not any(e.crystal is not None for e in state.experiments):
        raise RefineInputError("There is nothing to refine yet: run index first (refine works on "
                               "the indexed reflections and crystal models).")
    p = dataclass_from_values(RefinementParams, parsed.values)
    experiments, table, result = refine(state.experiments, indexed, p)
    lines = ["Refinement steps:",
             tabulate([[s["Step"], s["Nref"], f"{s['Residual']:.5g}", f"{s['RMSD_X']:.5f}",
                        f"{s['RMSD_Y']:.5f}", f"{s['RMSD_Phi']:.5f}"] for s in result.steps],
                      headers=["Step", "Nref", "Residual", "RMSD_X (px)", "RMSD_Y (px)",
                               "RMSD_Phi (deg)"], disable_numparse=True),
             f"{result.reason}" if result.reason else "",
             "RMSDs by experiment:",
             tabulate([[r["Exp id"], r["Nref"], f"{r['RMSD_X']:.5f}", f"{r['RMSD_Y']:.5f}",
                        f"{r['RMSD_Z']:.5f}"] for r in result.rmsds_by_experiment],
                      headers=["Exp id", "Nref", "RMSD_X (px)", "RMSD_Y (px)", "RMSD_Z (images)"],
                      disable_numparse=True)]
    for i, e in enumerate(experiments):
        if e.crystal is not None:
            c = e.crystal.unit_cell
            esd = result.cell_esds[i] if i < len(result.cell_esds) else [0.0] * 6
            cell = ", ".join(f"{v:.4f}({s:.4f})" for v, s in zip(c.parameters, esd))
            lines.append(f"Crystal {i}: {cell}  {e.crystal.space_group.hm}")
    if result.n_outliers:
        lines.append(f"{result.n_reflections} reflections used; {result.n_outliers} rejected as "
                     "outliers.")
    rx, ry, rz = result.rmsds
    metrics = {"rmsd_x_px": rx, "rmsd_y_px": ry, "rmsd_z_images": rz,
               "reflections": result.n_reflections}
    new_state = state.evolve(experiments=experiments, reflections={"indexed": table},
                             drop=("integrated",))
    return Outcome(state=new_state, text="\n".join(x for x in lines if x), metrics=metrics)
