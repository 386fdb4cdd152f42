"""The ``refine`` command (dials.refine): static refinement of the indexed models, then
(``scan_varying=Auto|True``) a scan-varying crystal model.

Uses the same engine as index (gonio.core.refinement): beam, crystal
(orientation and symmetry-constrained cell), detector and goniometer axis,
with the same fix options; the scan-varying stage smooths the crystal
orientation and cell over the scan (``smoother.interval_width_degrees``).
"""

from __future__ import annotations

from tabulate import tabulate

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class RefineInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.refinement.params import RefineParams
    from gonio.shell.commands.index import OVERRIDES
    from gonio.shell.commands.split import selection_param
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(RefineParams, overrides=OVERRIDES) + [selection_param(),
        Param("plot", "bool", False, "write scan_varying_model.png (cell and orientation "
              "against the image, like dials.plot_scan_varying_model) to the session folder")]


def _steps_table(result) -> str:
    return tabulate([[s["Step"], s["Nref"], f"{s['Residual']:.5g}", f"{s['RMSD_X']:.5f}",
                      f"{s['RMSD_Y']:.5f}", f"{s['RMSD_Phi']:.5f}"] for s in result.steps],
                    headers=["Step", "Nref", "Residual", "RMSD_X (px)", "RMSD_Y (px)",
                             "RMSD_Phi (deg)"], disable_numparse=True)


def _rmsd_table(result) -> str:
    return tabulate([[r["Exp id"], r["Nref"], f"{r['RMSD_X']:.5f}", f"{r['RMSD_Y']:.5f}",
                      f"{r['RMSD_Z']:.5f}"] for r in result.rmsds_by_experiment],
                    headers=["Exp id", "Nref", "RMSD_X (px)", "RMSD_Y (px)", "RMSD_Z (images)"],
                    disable_numparse=True)


def _panel_rmsd_tables(result) -> list[str]:
    """DIALS's "Detector n RMSDs by panel" tables (multi-panel detectors only)."""
    out = []
    for d in sorted({r["Detector"] for r in result.rmsds_by_panel}):
        rows = [[r["Panel id"], r["Nref"], f"{r['RMSD_X']:.5f}", f"{r['RMSD_Y']:.5f}",
                 f"{r['RMSD_Z']:.5f}"] for r in result.rmsds_by_panel if r["Detector"] == d]
        out += [f"Detector {d + 1} RMSDs by panel:", tabulate(
            rows, headers=["Panel id", "Nref", "RMSD_X (px)", "RMSD_Y (px)", "RMSD_Z (images)"],
            disable_numparse=True)]
    return out


def _parameter_table(result) -> str:
    """Refined values with standard uncertainties; scan-varying parameters as the range of
    their samples."""
    rows, samples = [], {}
    for name, v, e in zip(result.parameter_names, result.parameter_values,
                          result.parameter_esds):
        base, _, k = name.partition("_sample")
        if k:
            samples.setdefault(base, []).append((v, e))
        else:
            rows.append([name, f"{v:.5g}", f"{e:.2g}"])
    for base, vals in samples.items():
        v = [x for x, _ in vals]
        rows.append([f"{base} ({len(v)} samples)", f"{min(v):.5g} .. {max(v):.5g}",
                     f"{max(e for _, e in vals):.2g}"])
    return ("Refined parameters (change from the starting model: mm, mrad, cell metric in "
            "1e-5 A^-2; Wavelength in A):\n") + tabulate(
        rows, headers=["Parameter", "Value", "Sigma"], disable_numparse=True)


def _plot_path(ctx: Context, i: int):
    """Where ``plot=True`` draws experiment i's scan-varying model."""
    from pathlib import Path

    return Path(ctx.cwd) / ("scan_varying_model.png" if i == 0 else
                            f"scan_varying_model_{i}.png")


def _plot(ctx: Context, experiments) -> str:

    from gonio.core.io.atomic import write_atomic
    from gonio.core.refinement.report import plot_scan_varying_model

    written = []
    for i, e in enumerate(experiments):
        if e.crystal is None or e.crystal.A_at_scan_points is None:
            continue
        path = _plot_path(ctx, i)
        write_atomic(path, plot_scan_varying_model(e, f"experiment {i}"))
        written.append(str(path))
    if not written:
        return "No scan-varying model to plot (refine with scan_varying=True)."
    return "Wrote " + ", ".join(written)


def _shared_over_scans(experiments) -> bool:
    """A crystal model shared by experiments of different scans (joint indexing)."""
    scans: dict[int, set] = {}
    for e in experiments:
        if e.crystal is not None:
            scans.setdefault(id(e.crystal), set()).add(id(e.scan))
    return any(len(v) > 1 for v in scans.values())


def _refine_per_scan(refine, experiments, indexed, p):
    """A crystal shared by several scans cannot follow each of them: refine it jointly
    (static), then give each scan its own copy for the scan-varying stage, beam, detector
    and goniometer staying shared -- what DIALS users do by hand with
    dials.split_experiments and dials.combine_experiments reference_from_experiment=0.
    Returns (experiments, table, result, note); Auto without a scan-varying stage keeps
    the joint static model."""
    import dataclasses

    from gonio.core.models.experiment import ExperimentList

    experiments, table, result = refine(experiments, indexed,
                                        dataclasses.replace(p, scan_varying=False))
    copies: dict = {}
    per_scan = ExperimentList(
        e if e.crystal is None else e.replace(crystal=copies.setdefault(
            (id(e.crystal), id(e.scan)), e.crystal.replace())) for e in experiments)
    sv_experiments, sv_table, sv_result = refine(per_scan, table, p)
    if not sv_result.scan_varying:
        return experiments, table, result, ""
    return sv_experiments, sv_table, sv_result, (
        "The crystal shared by several sweeps (joint indexing) was refined jointly (static), "
        "then each sweep got its own copy for the scan-varying model (a scan-varying crystal "
        "follows one scan); beam, detector and goniometer stay shared.")


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.refinement import refine
    from gonio.core.refinement.params import RefineParams
    from gonio.core.refinement.report import scan_varying_cell_range
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    indexed = state.reflections.get("indexed")
    if indexed is None or not any(e.crystal is not None for e in state.experiments):
        raise RefineInputError("There is nothing to refine yet: run index first (refine works on "
                               "the indexed reflections and crystal models).")
    from gonio.shell.commands.split import merge_selected, parse_selection, select_state

    p = dataclass_from_values(RefineParams, parsed.values)
    sel = parse_selection(parsed.values.get("experiments"), len(state.experiments))
    work = state if sel is None else select_state(state, sel)  # experiments=: these only
    if sel is not None and not any(e.crystal is not None for e in work.experiments):
        raise RefineInputError(f"The chosen experiments ({','.join(map(str, sel))}) have no "
                               "crystal model: index them first.")
    if parsed.values.get("plot"):  # checked before refining: a refusal then loses no work
        from gonio.core.io.file_kinds import PNG, check_replaceable

        for i in range(len(work.experiments)):
            check_replaceable(_plot_path(ctx, i), PNG)
    note = ""
    if str(p.scan_varying).lower() != "false" and _shared_over_scans(work.experiments):
        experiments, table, result, note = _refine_per_scan(
            refine, work.experiments, work.reflections["indexed"], p)
    else:
        experiments, table, result = refine(work.experiments, work.reflections["indexed"], p)
    lines = [] if sel is None else [
        f"Refined experiments {','.join(map(str, sel))} (numbered 0 to {len(sel) - 1} in the "
        "tables below); the others are unchanged."]
    for stage in ([result.static] if result.static is not None else []) + [result]:
        kind = "Scan-varying" if stage.scan_varying else "Static"
        lines += [f"{kind} refinement steps:", _steps_table(stage),
                  f"{stage.reason}" if stage.reason else ""]
    lines += ["RMSDs by experiment:", _rmsd_table(result)]
    lines += _panel_rmsd_tables(result)
    lines += [_parameter_table(result)]
    if result.correlations:
        lines.append("Warning: strongly correlated parameters (the data barely tell them apart; "
                     "consider fixing one):\n" + "\n".join(
                         f"  {a} / {b}: {r:+.3f}" for a, b, r in result.correlations[:10]))
    metrics = {}
    for i, e in enumerate(experiments):
        if e.crystal is None:
            continue
        c = e.crystal.unit_cell
        esd = result.cell_esds[i] if i < len(result.cell_esds) else [0.0] * 6
        cell = ", ".join(f"{v:.4f}({s:.4f})" for v, s in zip(c.parameters, esd))
        lines.append(f"Crystal {i}: {cell}  {e.crystal.space_group.hm}")
        rng = scan_varying_cell_range(e.crystal)
        if rng is not None:
            lo, hi = rng
            lines.append(f"Crystal {i} over the scan (scan-varying): " + ", ".join(
                f"{a:.4f}-{b:.4f}" for a, b in zip(lo, hi)))
            if i == 0:
                metrics["sv_cell_min"], metrics["sv_cell_max"] = list(lo), list(hi)
        if i == 0:
            metrics["cell"] = list(c.parameters)
    if note:
        lines.append(note)
    if result.n_outliers:
        lines.append(f"{result.n_reflections} reflections used; {result.n_outliers} rejected as "
                     "outliers.")
    if parsed.values.get("plot"):
        lines.append(_plot(ctx, experiments))
    rx, ry, rz = result.rmsds
    metrics.update({"rmsd_x_px": rx, "rmsd_y_px": ry, "rmsd_z_images": rz,
                    "reflections": result.n_reflections, "scan_varying": result.scan_varying})
    if sel is None:
        new_state = state.evolve(experiments=experiments, reflections={"indexed": table},
                                 drop=("integrated",))
    else:
        new_state = merge_selected(state, sel, experiments, {"indexed": table},
                                   stale=("integrated",))
    return Outcome(state=new_state, text="\n".join(x for x in lines if x), metrics=metrics)
