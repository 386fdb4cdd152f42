"""The ``integrate`` command (dials.integrate): summation and 3D profile-fitting
intensities of every predicted reflection, from the refined models and the images."""

from __future__ import annotations

import numpy as np
from tabulate import tabulate

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

OVERRIDES = {"prediction.d_min": {"primary": True}, "prediction.d_max": {"primary": True}}


class IntegrateInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.integration.params import IntegrationParams
    from gonio.shell.commands.split import selection_param
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(IntegrationParams, overrides=OVERRIDES) + [selection_param()]


def _fmt(row, first_int: int) -> list[str]:
    out = []
    for i, v in enumerate(row):
        if i < first_int or isinstance(v, (int, np.integer)):
            out.append(str(v) if isinstance(v, (int, np.integer)) else f"{v:.2f}")
        else:
            out.append(f"{v:.2f}")
    return out


def _tables(experiments, table) -> list[str]:
    from gonio.core.integration import summary

    lines = []
    for k, e in enumerate(experiments):
        rows = summary.per_image(table, k, e.scan.image_range[0], e.scan.num_images,
                                 e.scan.array_range[0])
        lines.append(f"Summary vs image number (experiment {k}):")
        lines.append(tabulate([_fmt(r, 1) for r in rows], headers=["Image", *summary.HEADERS],
                              disable_numparse=True, stralign="right"))
    rows = summary.by_resolution(table)
    lines.append("Summary vs resolution:")
    lines.append(tabulate([_fmt(r, 2) for r in rows],
                          headers=["d max", "d min", *summary.HEADERS], disable_numparse=True,
                          stralign="right"))
    lines.append("Summary overall:")
    lines.append(tabulate([_fmt(summary.overall(table), 0)], headers=summary.HEADERS,
                          disable_numparse=True, stralign="right"))
    return lines


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.integration import summary
    from gonio.core.integration.integrate import integrate, reference_summary
    from gonio.core.integration.params import IntegrationParams
    from gonio.core.reflection_table import Flags
    from gonio.core.spotfinding.generate_mask import masks_for
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    if not state.experiments or not any(e.crystal is not None for e in state.experiments):
        raise IntegrateInputError(
            "There is nothing to integrate yet: integrate needs crystal models and the images. "
            "Run index (and refine) first.")
    p = dataclass_from_values(IntegrationParams, parsed.values)
    if p.nproc is None and ctx.nproc:
        p.nproc = ctx.nproc
    from gonio.shell.commands.split import merge_selected, parse_selection, select_state

    sel = parse_selection(parsed.values.get("experiments"), len(state.experiments))
    work = state if sel is None else select_state(state, sel)  # experiments=: these only
    if sel is not None and not any(e.crystal is not None for e in work.experiments):
        raise IntegrateInputError(f"The chosen experiments ({','.join(map(str, sel))}) have "
                                  "no crystal model: index (and refine) them first.")
    indexed = work.reflections.get("indexed")

    def progress(done, total):
        ctx.progress("integrate", done, total)

    masks = masks_for(state.data.get("mask"), state.experiments[0].detector)  # generate_mask
    experiments, table, result = integrate(work.experiments, indexed, p, progress=progress,
                                           masks=masks)
    lines = ["Profile model:"]
    for k, m in enumerate(result.profile_models):
        sb, sm = np.mean(m.sigma_b_deg), np.mean(m.sigma_m_deg)
        how = "given" if p.sigma_b is not None and p.sigma_m is not None else \
            f"estimated from {m.n_used} indexed spots"
        rlp = "" if m.sigma_m_rlp is None else f", sigma_m_rlp {m.sigma_m_rlp:.5f} 1/A"
        lines.append(f"  experiment {k}: sigma_b {sb:.4f} deg, sigma_m {sm:.4f} deg{rlp}, "
                     f"n_sigma {m.n_sigma:g} ({how}; sigma_m_model "
                     f"{'constant' if m.sigma_m_rlp is None else 'with resolution term'})")
    lines.extend(_tables(experiments, table))
    lines.append(f"Integrated {result.n_sum} of {result.n_predicted} predicted reflections by "
                 f"summation, {result.n_prf} by profile fitting ({result.n_reference} reference "
                 f"spots, {result.n_overlapped} overlapped).")
    ov = summary.overall(table)
    rows = summary.by_resolution(table)
    s = table.get_flags(Flags.integrated_sum)
    metrics = {
        "integrated (sum)": result.n_sum, "integrated (prf)": result.n_prf,
        "I/sigma (sum)": round(ov[7], 2), "I/sigma (prf)": round(ov[8], 2),
        "I/sigma outer shell (sum)": round(rows[-1][9], 2) if rows else 0.0,
        "I/sigma outer shell (prf)": round(rows[-1][10], 2) if rows else 0.0,
        "sigma_b (deg)": round(float(np.mean(result.profile_models[0].sigma_b_deg)), 5),
        "sigma_m (deg)": round(float(np.mean(result.profile_models[0].sigma_m_deg)), 5),
    }
    if not s.any():
        lines.append("No reflection could be integrated by summation.")
    data = {"integrate": {"reference_profiles": {
        **reference_summary(result), "n_integrated": len(table)}}}
    if sel is None:
        new_state = state.evolve(experiments=experiments, reflections={"integrated": table},
                                 data=data)
    else:
        lines.insert(0, f"Integrated experiments {','.join(map(str, sel))} (numbered 0 to "
                     f"{len(sel) - 1} below); the others are unchanged.")
        new_state = merge_selected(state, sel, experiments, {"integrated": table}, data=data)
    return Outcome(state=new_state, text="\n".join(lines), metrics=metrics)
