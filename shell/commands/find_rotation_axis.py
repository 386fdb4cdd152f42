"""The ``find_rotation_axis`` command (dials.find_rotation_axis), for 3D-ED data.

The azimuth of the rotation axis from the strong spots (gonio.core.geometry.rotation_axis),
a PNG of the score against azimuth in the session folder, and the axis applied as
``import goniometer.axis=...`` applies it (to the models as last imported).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

# above this wavelength (A) the Ewald sphere is too curved for the method (X-rays: ~0.5-2 A)
FLAT_EWALD_MAX_WAVELENGTH = 0.1
MIN_SPOTS = 20


class FindRotationAxisError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.geometry.rotation_axis import RotationAxisParams
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(RotationAxisParams) + [
        Param("output.plot", "str", "find_rotation_axis", "file-name prefix of the plot of the "
              "score against azimuth (PREFIX-projection.png in the session folder)")]


def _check(state, experiments) -> None:
    if not state.experiments:
        raise FindRotationAxisError(
            "There is nothing to search: import images (or an imported.expt with its "
            "strong.refl) first, then run findspots and find_rotation_axis.")
    strong = state.reflections.get("strong")
    if strong is None or len(strong) == 0:
        raise FindRotationAxisError(
            "find_rotation_axis works from the strong spots and there are none: run findspots "
            "first (or import a strong.refl with the experiments).")
    expt = experiments[0]
    if expt.goniometer is None or expt.scan is None or expt.scan.oscillation[1] == 0:
        raise FindRotationAxisError(
            "find_rotation_axis needs a rotation sweep (a goniometer and a scan with a non-zero "
            "oscillation); these are stills. Set the scan with import oscillation=START,WIDTH.")
    wavelength = expt.beam.wavelength
    if wavelength > FLAT_EWALD_MAX_WAVELENGTH:
        raise FindRotationAxisError(
            f"find_rotation_axis is meant for flat-Ewald-sphere data (electron diffraction, "
            f"wavelength well below {FLAT_EWALD_MAX_WAVELENGTH} A); this sweep's wavelength is "
            f"{wavelength:.4g} A, so the Ewald sphere is curved and the projection method does "
            "not apply. For X-ray data check the axis by indexing both candidates, e.g. try "
            "index goniometer.axis=1,0,0|0,1,0, or set a known axis with import "
            "goniometer.axis=X,Y,Z.")


def _spots(experiments, strong):
    """(s1 - s0 in 1/A, phi in rad) of the strong spots of the first experiment."""
    import numpy as np

    from gonio.core.geometry.spots import centroid_px_to_mm, map_to_reciprocal_space

    table = strong.select(strong["id"] == 0) if "id" in strong else strong.copy()
    if "id" not in table:
        table["id"] = np.zeros(len(table), np.int32)
    centroid_px_to_mm(experiments, table)
    map_to_reciprocal_space(experiments, table)
    return table["s1"] - experiments[0].beam.s0, table["xyzobs.mm.value"][:, 2]


def _plot_png(result) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for (level, (az, sc)), marker in zip(result.levels.items(), "+x."):
        ax.scatter((az + 180) % 360 - 180, sc, marker=marker, lw=1.0, label=f"{level} search")
    ax.axvline(result.azimuth_deg, color="grey", lw=0.8)
    ax.set_xlabel("Rotation axis azimuth (deg)")
    ax.set_ylabel("Variance of the projection histogram")
    ax.set_title(f"Rotation axis determination | maximum at {result.azimuth_deg:.2f} deg")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.geometry.rotation_axis import (
        RotationAxisParams,
        find_rotation_axis,
        select_spots,
    )
    from gonio.core.io.atomic import write_atomic
    from gonio.shell.commands import importing
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    base = importing._override_base(ctx, "imported")[0] if state.experiments else state
    experiments = base.experiments
    _check(state, experiments)
    p = dataclass_from_values(RotationAxisParams, parsed.values)
    q_lab, phi = _spots(experiments, state.reflections["strong"])
    expt = experiments[0]
    n_used = int(select_spots(q_lab, p.d_max, p.max_two_theta, expt.beam.wavelength).sum())
    if n_used < MIN_SPOTS:
        raise FindRotationAxisError(
            f"Only {n_used} strong spots have d <= d_max and 2theta <= max_two_theta "
            f"(d_max={p.d_max}, max_two_theta={p.max_two_theta}); the search needs at least "
            f"{MIN_SPOTS}. Raise d_max or max_two_theta, or find more spots.")
    result = find_rotation_axis(q_lab, phi, expt.detector[0], expt.beam.s0,
                                expt.goniometer.rotation_axis, p)
    plot = Path(ctx.cwd) / f"{parsed.values.get('output.plot') or 'find_rotation_axis'}" \
        "-projection.png"
    try:
        write_atomic(plot, _plot_png(result))
    except OSError as e:
        raise FindRotationAxisError(f"Cannot write {plot}: {e.strerror or e}. Give output.plot= "
                                    "a prefix in a folder you can write to.") from None
    axis = [round(float(x), 4) + 0.0 for x in result.axis]  # no -0
    values = {"geometry.goniometer.axis": axis, "geometry.from": "imported"}
    applied = importing.run(ctx, SimpleNamespace(values=values, positional=[]))
    a = ",".join(f"{x:g}" for x in axis)
    minus = ",".join(f"{0.0 - x:g}" for x in axis)
    text = "\n".join([
        result.format_text(), f"Plot of the score against azimuth: {plot}", "",
        applied.text, "",
        "The variance hardly tells the two senses of the axis apart. Decide the sense by the "
        f"RMSD_Z (images) of indexing with each: try index goniometer.axis={a}|{minus}"])
    metrics = dict(applied.metrics, azimuth_deg=round(result.azimuth_deg, 3), rotation_axis=axis,
                   variance=round(result.score, 4),
                   variance_opposite=round(result.score_opposite, 4),
                   spots_used=result.n_spots)
    if len(experiments) > 1:
        text += (f"\nThe axis was found from the spots of experiment 0 and applied to all "
                 f"{len(experiments)} experiments.")
    return Outcome(state=applied.state, text=text, metrics=metrics)
