"""The ``scale`` command: scale integrated intensities (dials.scale) and report merging statistics.

Works on the newest of the ``symmetrized``, ``integrated`` and ``scaled``
tables; writes ``scaled`` (with ``inverse_scale_factor`` and the scaling
flags) and the scaling model of each experiment.
"""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

INPUT_TABLES = ("symmetrized", "integrated", "scaled")


class ScaleInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.scaling.params import ScalingParams
    from gonio.shell.dataclass_params import params_from_dataclass

    # filtering.method stays what a bare method= means (as before reflection_selection.method)
    return params_from_dataclass(ScalingParams, overrides={"model": {"primary": True},
                                                           "filtering.method": {"primary": True}})


def input_table_name(state) -> str | None:
    """The newest of the tables scale can work on."""
    for name in reversed(list(state.reflections)):
        if name in INPUT_TABLES:
            return name
    return None


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.scaling import ScalingError, ScalingParams, scale
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    name = input_table_name(state)
    if name is None or not state.experiments:
        raise ScaleInputError("There are no integrated reflections to scale: run integrate first "
                              "(or import DIALS's integrated.expt and integrated.refl).")
    p = dataclass_from_values(ScalingParams, parsed.values)
    try:
        experiments, table, result = scale(state.experiments, state.reflections[name], p)
        stats = scaled_statistics(experiments, table, p)
    except ScalingError:
        raise
    except ValueError as e:
        raise ScaleInputError(f"The scaled data cannot be merged ({e}); check d_min and the "
                              "integration flags.") from None
    lines = [f"Scaled the '{name}' reflections of {len(experiments)} experiment(s) "
             f"({p.model} model).", model_summary(result), "",
             "Merging statistics" + (" (anomalous)" if p.anomalous else "") + ":",
             merging_table(stats), "", resolution_text(stats)]
    new_state = state.evolve(experiments=experiments, reflections={"scaled": table},
                             data={"merging_statistics": stats_to_data(stats)})
    metrics = stats.metrics()
    metrics.update({"outliers": result.n_outliers, "scaled_reflections": result.n_used})
    return Outcome(state=new_state, text="\n".join(lines), metrics=metrics)


def scaled_statistics(experiments, table, p):
    """Merging statistics of the scaled, non-outlier reflections."""
    import numpy as np

    from gonio.core.merging import merging_statistics
    from gonio.core.reflection_table import Flags

    sel = table.get_flags(Flags.scaled) & ~table.get_flags(Flags.bad_for_scaling, all_bits=False)
    sel &= (table["inverse_scale_factor"] > 0) & (table["intensity.scale.variance"] > 0)
    t = table.select(sel)
    g = t["inverse_scale_factor"]
    crystal = experiments[0].crystal
    return merging_statistics(t["miller_index"], t["intensity.scale.value"] / g,
                              np.sqrt(t["intensity.scale.variance"]) / g,
                              crystal.unit_cell.parameters, crystal.space_group,
                              anomalous=p.anomalous, n_bins=p.n_bins)


def model_summary(result) -> str:
    import numpy as np
    from tabulate import tabulate

    rows = [[i, *m.summary_cells()] for i, m in enumerate(result.models)]
    text = [tabulate(rows, headers=["Exp", "Model", "N scale", "N decay", "N absorption",
                                    "Scale range", "B range (A^2)"], disable_numparse=True)]
    went_on = [str(i) for i, c in enumerate(result.continued) if c]
    if went_on:  # as dials.scale: an existing model is refined further
        text.append(f"Continued from the existing scaling model of experiment(s) "
                    f"{', '.join(went_on)} (overwrite_existing_models=True starts afresh).")
    if result.r_meas_choices:
        names = {0.0: "prf only", 1.0: "sum only"}
        text.append("Intensity combination (Rmeas of I/sigma > 1): " + ", ".join(
            f"{names.get(k, f'Imid {k:.0f}')} {v:.4f}" for k, v in result.r_meas_choices.items()))
    text.append(f"Intensities: {result.intensity_choice}"
                + (f" (Imid = {result.imid:.1f})" if result.intensity_choice == "combine" else ""))
    if result.error_model is not None:
        a, b = result.error_model
        text.append(f"Error model: sigma'^2 = a^2 (sigma^2 + (b I)^2), a = {a:.4f}, b = {b:.5f}")
    text.append(f"{result.n_used} observations used, {result.n_outliers} rejected as outliers, "
                f"{result.n_excluded} excluded (flags, partiality, d_min, exclude_images, "
                "filtering).")
    if result.selection is not None:
        text.append(result.selection.summary())
    if result.rounds:  # as dials.scale's log lists them
        text.append("Rounds: " + ", ".join(
            f"{v} outliers" if kind == "outliers" else f"error model a = {v[0]:.4f}, "
            f"b = {v[1]:.5f}" for kind, v in result.rounds))
    for k, c in enumerate(result.filtering, 1):
        worst = min(c.delta[np.isfinite(c.delta)], default=float("nan"))
        text.append(f"Delta CC1/2 filtering, cycle {k}: CC1/2 {c.cc_half:.4f}, {len(c.labels)} "
                    f"groups, cutoff {c.cutoff:.2e}, lowest delta {worst:.2e}; removed: "
                    + (", ".join(c.removed) or "none"))
    return "\n".join(text)


def merging_table(stats) -> str:
    from tabulate import tabulate

    return tabulate(stats.table_rows(), headers=list(stats.HEADERS), disable_numparse=True,
                    stralign="right")


def resolution_text(stats) -> str:
    r = stats.resolution
    cc = f"{r.cc_half:.2f} A" if r.cc_half is not None else \
        f"not reached (CC1/2 stays above {r.cc_half_limit} to the data's {r.d_min_data:.2f} A)"
    isig = f"{r.i_over_sigma:.2f} A" if r.i_over_sigma is not None else \
        f"not reached (<I/sigma> stays above {r.misigma_limit} to {r.d_min_data:.2f} A)"
    return ("Resolution limit suggested (dials.estimate_resolution):\n"
            f"  cc_half  ({r.cc_half_limit}): {cc}\n"
            f"  I/sigma  ({r.misigma_limit}): {isig}")


def stats_to_data(stats) -> dict:
    from dataclasses import asdict

    import numpy as np

    def clean(d):
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}

    return {"overall": clean(asdict(stats.overall)),
            "shells": [clean(asdict(s)) for s in stats.shells],
            "resolution": clean(asdict(stats.resolution)), "anomalous": stats.anomalous,
            "space_group": stats.space_group}
