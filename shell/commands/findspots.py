"""The ``findspots`` command (dials.find_spots): the strong reflections of every image."""

from __future__ import annotations

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

#: tables made from the strong spots; a new spot search makes them stale
DOWNSTREAM = ("indexed", "refined", "integrated")


class NoImagesError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.spotfinding.params import SpotFinderParams
    from gonio.shell.commands.split import selection_param
    from gonio.shell.dataclass_params import params_from_dataclass

    # d_min / d_max mean the spot-finding resolution limits, not the ice-ring ones
    return params_from_dataclass(SpotFinderParams, overrides={
        "spotfinder.filter.d_min": {"primary": True},
        "spotfinder.filter.d_max": {"primary": True}}) + [selection_param()]


def run(ctx: Context, parsed) -> Outcome:
    from gonio.core.formats.reader import ImageSequenceReader
    from gonio.core.spotfinding.finder import find_spots
    from gonio.core.spotfinding.generate_mask import masks_for
    from gonio.core.spotfinding.params import SpotFinderParams
    from gonio.shell.dataclass_params import dataclass_from_values

    state = ctx.state
    experiments = state.experiments
    if not experiments:
        raise NoImagesError("There are no images to search: run import first, e.g. "
                            "import /data/th_8_2_####.cbf.")
    from gonio.shell.commands.split import merge_selected, parse_selection, select_state

    sel = parse_selection(parsed.values.get("experiments"), len(experiments))
    if sel is not None:  # experiments=: these only; the others' spots pass through
        experiments = select_state(state, sel).experiments
    missing = [i for i, e in enumerate(experiments) if e.imageset is None or
               not (e.imageset.template or e.imageset.paths)]
    if missing:
        raise NoImagesError(
            f"Experiment {missing[0]} has no images to read (it came from a file without image "
            "paths). Import the images themselves to find spots, or import a strong.refl.")
    p = dataclass_from_values(SpotFinderParams, parsed.values)
    p.mask = masks_for(state.data.get("mask"), experiments[0].detector)  # from generate_mask
    readers, by_imageset = [], {}
    for e in experiments:
        key = id(e.imageset)
        if key not in by_imageset:
            by_imageset[key] = ImageSequenceReader(e)
        readers.append(by_imageset[key])

    def progress(done, total):
        ctx.progress("findspots", done, total)

    strong, result = find_spots(experiments, readers, p, progress=progress)
    lines = []
    for text in result.histograms:
        lines.append(text)
    lines.extend(result.summary_lines())
    if p.mask is not None:
        lines.append(f"Used the mask from generate_mask ({sum(int(m.size - m.sum()) for m in p.mask)} "
                     "pixels masked).")
    lines.append(f"Found {result.n_spots} strong spots on "
                 f"{sum(len(n) for n in result.image_numbers)} images.")
    if sel is None:
        new_state = state.evolve(reflections={"strong": strong}, drop=DOWNSTREAM)
    else:
        lines.append(f"(experiments {','.join(map(str, sel))} only; the spots of the others "
                     "are unchanged)")
        new_state = merge_selected(state, sel, experiments, {"strong": strong}, stale=DOWNSTREAM)
    metrics = {"spots": int(result.n_spots), "images": int(sum(len(n) for n in result.image_numbers))}
    per_image = [list(map(int, s)) for s in result.spots_per_image]
    if per_image:
        metrics["spots per image (min, max)"] = [min(min(s) for s in per_image if s),
                                                 max(max(s) for s in per_image if s)] \
            if any(per_image) else [0, 0]
    return Outcome(state=new_state, text="\n".join(lines), metrics=metrics)
