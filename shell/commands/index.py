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
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(IndexParams, overrides=OVERRIDES)


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
    p = dataclass_from_values(IndexParams, parsed.values)
    experiments, indexed, result = index(state.experiments, strong, p)
    text = result.format_text() if hasattr(result, "format_text") else str(result)
    metrics = result.metrics() if hasattr(result, "metrics") else {}
    pct = metrics.get("percent_indexed")
    if pct is not None and pct < 80:
        text += (f"\nOnly {pct:.1f}% of the strong spots indexed. Common causes: a beam centre "
                 "off by more than a few pixels (try search_beam_position, then index again), a "
                 "wrong distance or rotation axis (diff the steps after import distance=... or "
                 "goniometer.axis=...), or a second lattice (max_lattices=2).")
    new_state = state.evolve(experiments=experiments, reflections={"indexed": indexed},
                             drop=("refined", "integrated", "rbs"))
    return Outcome(state=new_state, text=text, metrics=metrics)
