"""The ``merge`` command: merged.mtz with French-Wilson amplitudes (dials.merge).

Merges the newest of the ``scaled``, ``symmetrized`` and ``integrated``
tables, which must carry scale factors (symmetry equivalents into the ASU, per
wavelength), prints the merging statistics as the scale step does, the
Wilson B and what the French-Wilson step did, and writes the merged MTZ
atomically to the session folder. The step records the file and the key
figures (``data/merge``); models and tables do not change.
"""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class MergeNotReadyError(GonioError):
    pass


class MergeNamesError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.merge.params import MergeParams
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(MergeParams)


def _names(text: str, name: str) -> list[str]:
    """The comma-separated names of ``output.<name>``; an error when there are none."""
    names = [x.strip() for x in str(text).split(",") if x.strip()]
    if not names:
        example = "XTAL" if name == "crystal_names" else "NATIVE"
        raise MergeNamesError(f"output.{name}={text!r} gives no name: the MTZ needs one per "
                              f"wavelength (comma-separated), e.g. output.{name}={example}.")
    return names


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.export.filtering import is_scaled
    from gonio.core.merge.merge import merge_scaled
    from gonio.core.merge.merged_mtz import merged_mtz
    from gonio.core.merge.params import MergeParams
    from gonio.shell.commands.export import newest_table, output_path, write_files
    from gonio.shell.commands.scale import merging_table
    from gonio.shell.dataclass_params import dataclass_from_values

    p = dataclass_from_values(MergeParams, parsed.values)
    crystal_names, dataset_names = _names(p.crystal_names, "crystal_names"), \
        _names(p.dataset_names, "dataset_names")
    state = ctx.state
    name = newest_table(state)  # scaled, symmetrized or integrated (e.g. DIALS files imported)
    if name is None or not is_scaled(state.reflections[name]):
        have = ", ".join(state.reflections) or "no reflection tables"
        raise MergeNotReadyError(
            f"merge needs scaled reflections, and this session has {have}: the intensities "
            "have no scale factors yet (intensity.scale.value, inverse_scale_factor). Run "
            "scale first (after integrate and symmetry), then merge.")
    table = state.reflections[name]
    path = output_path(ctx, p.mtz)
    result = merge_scaled(state.experiments, table, p)
    mtz = merged_mtz(result, crystal_names, dataset_names, p.project_name)
    write_files([(path, bytes(mtz.write_to_bytes()))])
    lines, metrics = [], {}
    for k, ds in enumerate(result.datasets):
        head = (f"Wavelength {ds.wavelength:.5f} A (experiments "
                f"{', '.join(str(i) for i in ds.experiments)})" if len(result.datasets) > 1 else "")
        if head:
            lines.append(head)
        if ds.statistics is not None:
            lines.append("Merging statistics:")
            lines.append(merging_table(ds.statistics))
        lines.append(f"{ds.n_observations} observations merged into {len(ds.merged)} unique "
                     f"reflections ({ds.d.max():.2f}-{ds.d.min():.2f} A).")
        lines.append(f"Wilson B: {ds.wilson_b:.1f} A^2 (slope of ln<I/eps> vs 1/d^2, d < 4.5 A)")
        if ds.mean is not None:
            how = ("flat prior (fewer than french_wilson.min_reflections reflections)"
                   if ds.flat_prior else "French & Wilson (1978)")
            n_neg = int((ds.merged.intensity < 0).sum())
            lines.append(
                f"Amplitudes by {how}: {100 * ds.fraction_changed:.1f}% of the intensities "
                f"changed by more than 1% from sqrt(I) ({n_neg} negative ones made positive); "
                f"{int(ds.mean.rejected.sum())} rejected (h < -4, far below the Wilson "
                "expectation).")
        suffix = f"_{k + 1}" if len(result.datasets) > 1 else ""
        if ds.statistics is not None:
            metrics.update({f"{key}{suffix}": v for key, v in ds.statistics.metrics().items()})
        metrics[f"wilson_b{suffix}"] = round(ds.wilson_b, 3)
        if ds.mean is not None:
            metrics[f"fw_changed{suffix}"] = round(ds.fraction_changed, 4)
    lines.append(f"Wrote {path} ({mtz.nreflections} reflections; columns "
                 f"{' '.join(mtz.column_labels()[3:])}).")
    metrics.update({"reflections": mtz.nreflections, "file": str(path)})
    first = ("cc_half", "i_over_sigma", "wilson_b", "d_min")  # what `history` shows
    metrics = {k: metrics[k] for k in first if k in metrics} | metrics
    data = {"merge": {"file": str(path), "reflections": mtz.nreflections,
                      "wilson_b": [d.wilson_b for d in result.datasets]}}
    return Outcome(state=state.evolve(data=data), text="\n".join(lines), metrics=metrics)
