"""The ``generate_mask`` command (dials.generate_mask, with dials.apply_mask built in): a
pixel mask that becomes part of the state, used by findspots and integrate and shown by
view; ``mask=FILE`` imports one (.npy, .npz, TIFF, PNG)."""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param


class GenerateMaskInputError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.spotfinding.generate_mask import GenerateMaskParams
    from gonio.shell.dataclass_params import params_from_dataclass

    return params_from_dataclass(GenerateMaskParams)


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.spotfinding.generate_mask import (
        GenerateMaskParams,
        MaskError,
        encode_masks,
        generate_mask,
    )
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    if not state.experiments:
        raise GenerateMaskInputError("There is no detector to mask yet: run import first, e.g. "
                                     "import /data/th_8_2_####.cbf.")
    first = state.experiments[0]
    shapes = [q.image_size for q in first.detector]
    if any([q.image_size for q in e.detector] != shapes for e in state.experiments):
        raise MaskError("The experiments have detectors of different sizes; one mask serves "
                        "them all, so mask a session of one detector (import the sweeps into "
                        "separate sessions).")
    p = dataclass_from_values(GenerateMaskParams, parsed.values)
    masks, result = generate_mask(first.detector, first.beam, p, cwd=ctx.cwd)
    new_state = state.evolve(data={"mask": encode_masks(masks)})
    return Outcome(state=new_state, text=result.format_text(), metrics=result.metrics())
