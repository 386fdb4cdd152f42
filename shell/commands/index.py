"""The ``index`` command (dials.index): lattice search, index assignment, static refinement."""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

OVERRIDES = {
    "indexing.method": {"primary": True},  # method=fft1d is the lattice search, not assignment
    "indexing.known_symmetry.space_group": {"type": "space_group"},
    "indexing.known_symmetry.unit_cell": {"type": "unit_cell"},
    "refinement.parameterisation.detector.fix_list": {
        "choices": ("Dist", "Shift1", "Shift2", "Tau1", "Tau2", "Tau3")},
}


class IndexInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.indexing.params import IndexParams
    from gonio.shell.commands.split import selection_param
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(IndexParams, overrides=OVERRIDES) + [selection_param()]


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.indexing import index
    from gonio.core.indexing.params import IndexParams
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    if not state.experiments:
        raise IndexInputError("There is nothing to index: import images (or an .expt with a "
                              "strong.refl) first, then run findspots.")
    strong = state.reflections.get("strong")
    if strong is None or len(strong) == 0:
        raise IndexInputError("There are no strong spots to index: run findspots first (or "
                              "import a strong.refl with the experiments).")
    from gonio.shell.commands.split import (
        merge_selected,
        parse_selection,
        select_state,
        whole_imagesets,
    )

    p = dataclass_from_values(IndexParams, parsed.values)
    sel = parse_selection(parsed.values.get("experiments"), len(state.experiments))
    if sel is not None:  # experiments=: these sweeps only (with all their lattices)
        sel = whole_imagesets(state.experiments, sel)
    work = state if sel is None else select_state(state, sel)
    if sel is not None and not len(work.reflections.get("strong", ())):
        raise IndexInputError(f"The chosen experiments ({','.join(map(str, sel))}) have no "
                              "strong spots: run findspots on them first.")
    experiments, indexed, result = index(work.experiments, work.reflections["strong"], p)
    text = result.format_text() if hasattr(result, "format_text") else str(result)
    metrics = result.metrics() if hasattr(result, "metrics") else {}
    text += _hint(metrics, indexed)
    if sel is None:
        new_state = state.evolve(experiments=experiments, reflections={"indexed": indexed},
                                 drop=("refined", "integrated", "rbs"))
    else:
        text = (f"Indexed experiments {','.join(map(str, sel))} (numbered from 0 in the tables "
                "below); the others are unchanged.\n" + text)
        new_state = merge_selected(state, sel, experiments, {"indexed": indexed},
                                   stale=("refined", "integrated"))
    return Outcome(state=new_state, text=text, metrics=metrics)


def _parity_symptom(indexed, min_n: int = 100, max_fraction: float = 0.05) -> str | None:
    """Words for an index-parity class that (nearly) never occurs, else None.

    For a correct primitive (P1, reduced) cell every parity class h*u+k*v+l*w mod 2
    holds about half of the indexed reflections. A beam centre off by about half a spot
    spacing shifts the indices by one (all h odd) or doubles the cell (h+k+l always
    even): one class (nearly) empty -- the textbook sign of misindexing.
    """
    import numpy as np

    if indexed is None or "miller_index" not in indexed:
        return None
    hkl = np.asarray(indexed["miller_index"])
    hkl = hkl[(hkl != 0).any(axis=1)]
    if len(hkl) < min_n:
        return None
    names = "hkl"
    for u in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)):
        odd = float(np.mean((hkl @ np.array(u)) % 2))
        if min(odd, 1 - odd) < max_fraction:
            expr = "+".join(n for n, x in zip(names, u) if x)
            parity = "odd" if odd > 0.5 else "even"
            return (f"{100 * max(odd, 1 - odd):.1f}% of the indexed reflections have {expr} "
                    f"{parity}: the indices are shifted by one or the cell doubled "
                    "(misindexed)")
    return None


def _hint(metrics: dict, indexed) -> str:
    """The symptoms of wrong metadata (beam centre first), as one paragraph, or "".

    Few spots indexed or an empty index-parity class name the beam centre as the likely
    culprit. RMSD_Z above half an image with X/Y below 1 px is only a warning: finely
    sliced data can show it with the right geometry (gonio and DIALS on x4_xds, 0.2 deg
    images: 0.67 images), so it asks for a check rather than naming a culprit.
    """
    symptoms = []
    pct = metrics.get("percent_indexed")
    if pct is not None and pct < 80:
        symptoms.append(f"only {pct:.1f}% of the strong spots indexed")
    parity = _parity_symptom(indexed)
    if parity:
        symptoms.append(parity)
    xy = max(metrics.get("rmsd_x_px", float("nan")), metrics.get("rmsd_y_px", float("nan")))
    z = metrics.get("rmsd_z_images", float("nan"))
    z_high = xy < 1.0 and z > 0.5  # NaN compares False
    if z_high and symptoms:
        symptoms.append(f"RMSD_Z is {z:.2f} images with X/Y below {xy:.2f} px")
    if symptoms:
        said = "; ".join(symptoms)
        return (f"\n{said[0].upper()}{said[1:]}. The likely culprit is the beam centre (off by "
                "more than a few pixels): try search_beam_position, then index again. Other "
                "causes: a wrong distance or rotation axis (diff the steps after import "
                "distance=... or goniometer.axis=...; find_rotation_axis for electron "
                "diffraction), or a second lattice (max_lattices=2).")
    if z_high:
        return (f"\nRMSD_Z is {z:.2f} images while the X/Y RMSDs are below {xy:.2f} px: the "
                "rotation positions fit worse than the detector positions. Fine slicing alone "
                "can do that, but so does a beam centre a few pixels off (or a wrong rotation "
                "axis or sense): if the cell is not the expected one, compare with "
                "search_beam_position (or try index goniometer.axis=A|-A) by RMSD_Z.")
    return ""
