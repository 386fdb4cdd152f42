"""The ``search_beam_position`` command (as dials.search_beam_position)."""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class BeamSearchInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.indexing.beam_search import BeamSearchParams
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(BeamSearchParams)


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.indexing.beam_search import BeamSearchParams, search_beam_position
    from gonio.core.spotfinding.generate_mask import masks_for
    from gonio.shell.commands.findspots import DOWNSTREAM
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    strong = state.reflections.get("strong")
    p = dataclass_from_values(BeamSearchParams, parsed.values)
    if not state.experiments:
        raise BeamSearchInputError("There is nothing to search yet: run import first, e.g. "
                                   "import /data/th_8_2_####.cbf.")
    if p.method == "default" and strong is None:
        raise BeamSearchInputError("search_beam_position (method=default) needs strong spots: "
                                   "run findspots first (or import a strong.refl / SPOT.XDS), "
                                   "or use a method that works on the images (method=midpoint, "
                                   "maximum or inversion).")
    masks = masks_for(state.data.get("mask"), state.experiments[0].detector)  # generate_mask
    experiments, result = search_beam_position(state.experiments, strong, p, masks=masks)
    new_state = state.evolve(experiments=experiments, drop=DOWNSTREAM)
    return Outcome(state=new_state, text=result.format_text(), metrics=result.metrics())
