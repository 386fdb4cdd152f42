"""The ``view`` command: pictures a DIALS user gets from dials.image_viewer and
dials.reciprocal_lattice_viewer, written as files into the session folder.

- ``view image=N [region=x0,x1,y0,y1] [overlays=...] [brightness=100]``: a PNG
  of image N with strong spots, predictions (hkl when zoomed), shoeboxes, the
  beam centre, resolution rings, the mask and the rotation axis;
- ``view lattice``: the reciprocal lattice as a rotatable 3D HTML page;
- ``view threshold image=N``: the spot-finding threshold stages as a PNG.

Nothing is recorded in the history; the shell prints the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gonio.core.errors import GonioError
from gonio.shell.command import Context, Outcome
from gonio.shell.params import Param

MODES = ("image", "lattice", "threshold")


class ViewError(GonioError):
    pass


def params() -> list[Param]:
    from gonio.core.report.image import DEFAULT_OVERLAYS, OVERLAYS
    from gonio.shell.commands.findspots import params as findspots_params

    own = [
        Param("image", "int", None, "the image number to show (as the scan counts them, e.g. 1 "
              "for the first image of a sweep imported from image 1)", allow_none=True),
        Param("region", "ints", None, "show only x0,x1,y0,y1 (px, end exclusive) of the panel: "
              "zoomed in far enough, predictions are labelled with their hkl", length=4,
              allow_none=True, min=0),
        Param("panel", "int", 0, "the detector panel to show", min=0),
        Param("imageset", "int", 0, "which sweep, when the session holds several (0 = the first)",
              min=0),
        Param("brightness", "float", 100.0, "as dials.image_viewer's: 100 saturates at ten times "
              "the image's 90th-percentile count; 200 is twice as dark", min=0,
              min_exclusive=True),
        Param("overlays", "choice", DEFAULT_OVERLAYS, "what to draw on the image", choices=OVERLAYS,
              multiple=True),
        Param("output", "path", None, "the file to write (default: view_image_NNNN.png, "
              "view_lattice.html or view_threshold_NNNN.png in the session folder)",
              allow_none=True),
    ]
    threshold = [p for p in findspots_params() if p.name.startswith("spotfinder.threshold.")]
    return own + threshold


def run(ctx: Context, parsed) -> Outcome:
    words = [w.lower() for w in parsed.positional]
    mode = words[0] if words else "image"
    if mode not in MODES or len(words) > 1:
        raise ViewError(f"view takes one of {', '.join(MODES)} (e.g. view image=1, view lattice, "
                        f"view threshold image=1), not '{' '.join(parsed.positional)}'.")
    state = ctx.state
    if not state.experiments:
        raise ViewError("There is nothing to view yet: the session has no experiments. Start with "
                        "import, e.g. import /data/th_8_2_####.cbf.")
    v = parsed.values
    if mode == "lattice":
        return _lattice(ctx, state, v)
    if v["image"] is None:
        raise ViewError(f"view {mode} needs an image number, e.g. view {mode} image=1.")
    expt_index, i = _image_index(state, v)
    return _threshold(ctx, state, v, expt_index, i) if mode == "threshold" else \
        _image(ctx, state, v, expt_index, i)


def _out(ctx, v, default: str) -> Path:
    out = Path(v["output"] or default)
    return out if out.is_absolute() else Path(ctx.cwd) / out


def _write(out: Path, data: bytes) -> None:
    from gonio.core.io.atomic import write_atomic

    try:
        write_atomic(out, data)
    except OSError as e:
        raise ViewError(f"Cannot write {out}: {e.strerror or e}. Give output= a path in a folder "
                        "you can write to.") from None


def _image_index(state, v) -> tuple[int, int]:
    """(experiment index, 0-based image index in its scan) of image=N of imageset=K."""
    sets = state.experiments.imagesets()
    k = v["imageset"]
    if k >= len(sets):
        raise ViewError(f"imageset={k} does not exist: the session has {len(sets)} imageset(s), "
                        f"numbered from 0.")
    expt_index = next(i for i, e in enumerate(state.experiments) if e.imageset is sets[k])
    scan = state.experiments[expt_index].scan
    first, last = scan.image_range if scan is not None else (1, 1)
    n = v["image"]
    if not first <= n <= last:
        raise ViewError(f"Image {n} is outside the scan: imageset {k} has images {first} to "
                        f"{last}. Give image= a number in that range.")
    return expt_index, n - first


def _read(expt, i: int, panel: int) -> np.ndarray:
    from gonio.core.formats.reader import ImageSequenceReader

    try:
        frames = ImageSequenceReader(expt).read(i)
    except (OSError, GonioError) as e:
        raise ViewError(f"The image cannot be read ({e}). The files must be where they were "
                        "imported from; a session imported from .expt/.refl files alone has no "
                        "images to show.") from None
    if panel >= len(frames):
        raise ViewError(f"panel={panel} does not exist: the detector has {len(frames)} panel(s), "
                        "numbered from 0.")
    return np.asarray(frames[panel])


def _region(v, image: np.ndarray) -> tuple[int, int, int, int]:
    ny, nx = image.shape
    if v["region"] is None:
        return 0, nx, 0, ny
    x0, x1, y0, y1 = v["region"]
    if not (x0 < x1 <= nx and y0 < y1 <= ny):
        raise ViewError(f"region={x0},{x1},{y0},{y1} is not inside the {nx} x {ny} px panel: give "
                        "x0 < x1 <= width and y0 < y1 <= height (px, end exclusive).")
    return x0, x1, y0, y1


def _predicted(state):
    for name in ("integrated", "indexed", "symmetrized", "scaled"):
        t = state.reflections.get(name)
        if t is not None and "xyzcal.px" in t:
            return t
    return None


def _image(ctx, state, v, expt_index: int, i: int) -> Outcome:
    from gonio.core.report.image import image_marks, render

    expt = state.experiments[expt_index]
    image = _read(expt, i, v["panel"])
    region = _region(v, image)
    frame = i + (expt.scan.array_range[0] if expt.scan is not None else 0)
    marks = image_marks(state.experiments, expt_index, frame, v["panel"],
                        strong=state.reflections.get("strong"), predicted=_predicted(state))
    panel = expt.detector[v["panel"]]
    user = _user_mask(state, expt, v["panel"])
    if user is not None and "mask" in v["overlays"]:
        # pixels masked by generate_mask are drawn in the mask colour, as invalid ones are
        image = np.where(user, image, min(panel.trusted_range[0], float(image.min())))
    r = render(image, panel.trusted_range, marks, region, v["brightness"], v["overlays"])
    n = v["image"]
    out = _out(ctx, v, f"view_image_{n:04d}.png")
    _write(out, r.png)
    shown = f"{len(marks.strong)} strong spots, {len(marks.predictions)} predictions on this image"
    return Outcome(text=f"Wrote {out} ({r.size[0]} x {r.size[1]} px, {r.scale:g} display px per "
                   f"detector px; {shown}).")


def _user_mask(state, expt, panel: int) -> np.ndarray | None:
    """The panel's mask from generate_mask (True = good pixel), if the session has one."""
    from gonio.core.spotfinding.generate_mask import masks_for

    masks = masks_for(state.data.get("mask"), expt.detector)
    return None if masks is None else masks[panel]


def _threshold(ctx, state, v, expt_index: int, i: int) -> Outcome:
    from gonio.core.report.threshold_stages import stages, stages_png
    from gonio.core.spotfinding.masks import static_mask
    from gonio.core.spotfinding.params import SpotFinderParams
    from gonio.shell.dataclass_params import dataclass_from_values

    expt = state.experiments[expt_index]
    p = dataclass_from_values(SpotFinderParams, v)
    image = _read(expt, i, v["panel"])
    region = _region(v, image)
    panel = expt.detector[v["panel"]]
    st = stages(image, static_mask(panel, expt.beam, p, v["panel"],
                                   _user_mask(state, expt, v["panel"])), panel.trusted_range, p)
    title = (f"image {v['image']}: {p.threshold_algorithm}, gain {p.gain:g}, sigma_background "
             f"{p.sigma_background:g}, sigma_strong {p.sigma_strong:g}, kernel_size "
             f"{p.kernel_size[0]},{p.kernel_size[1]}")
    out = _out(ctx, v, f"view_threshold_{v['image']:04d}.png")
    _write(out, stages_png(st, region, title))
    x0, x1, y0, y1 = region
    n = int(st.final[y0:y1, x0:x1].sum())
    return Outcome(text=f"Wrote {out} (mean, variance, dispersion, the two tests and the final "
                   f"mask; {n} strong pixels in the region shown).")


def _lattice(ctx, state, v) -> Outcome:
    from gonio.core.report.html import Section, page
    from gonio.core.report.lattice import lattice_figure

    table, name = None, None
    for name in ("indexed", "strong", "integrated", "symmetrized", "scaled"):
        t = state.reflections.get(name)
        if t is not None and "xyzobs.px.value" in t:
            table = t.select(t["xyzobs.px.value"].any(axis=1))  # observed centroids only
            if len(table):
                break
            table = None
    if table is None:
        raise ViewError("There are no spots to map into reciprocal space yet: run findspots first "
                        "(view lattice shows the strong spots, coloured once they are indexed).")
    fig = lattice_figure(state.experiments, table, f"Reciprocal lattice: {len(table)} spots "
                         f"of the table '{name}'")
    out = _out(ctx, v, "view_lattice.html")
    text = page("gonio: reciprocal lattice", [Section("Reciprocal lattice", "<p>Drag to rotate, "
                "scroll to zoom; click a legend entry to hide it.</p>", [fig], wide=True)])
    _write(out, text.encode())
    return Outcome(text=f"Wrote {out} (open it in a browser).")
