"""Compile (or load from the cache) the integration kernels on a tiny sweep.

Called by :mod:`gonio.core.jit` to prepare the kernels of ``integrate`` ahead of
its first run, in two units that compile in two processes at once (``UNITS``):
``gonio.core.integration.box_kernels`` (:func:`warm_up_boxes`: the kernels on whole
shoeboxes, called on two tiny ones with the argument types the step passes) and
``gonio.core.integration`` (:func:`warm_up`: the rest). :func:`warm_up` integrates a
sweep of a few 64 x 64 px images made here with numpy (Gaussian spots at the predicted
positions on a Poisson background; the simulator's own kernels are not needed), through
:func:`.integrate.integrate` itself, so that every kernel is compiled with the argument
types the step uses (those of the other unit too, when it has not been prepared: then
:func:`warm_up_boxes` adds ``repack``, which only long sweeps reach). The kernels of
the ``simple`` background models, which only a user's choice reaches, are a unit of
their own, compiled when first needed (:func:`warm_up_simple_boxes`).
"""

from __future__ import annotations

import numpy as np


def tiny_sweep(n_images: int = 10, size: int = 64):
    """(experiment, images): a 30 A cubic crystal on a 64 x 64 px detector, 1 deg
    images, with bright spots wherever a reflection is predicted."""
    from ..prediction.rotation import predict_rotation
    from ..simulate.models import true_models
    from ..simulate.params import SimulationParams

    p = SimulationParams.from_preset(
        None, unit_cell=(30.0, 30.0, 30.0, 90.0, 90.0, 90.0), space_group="P 1",
        n_images=n_images, osc=1.0, image_size=(size, size), distance=12.0,
        wavelength=1.0, gaps=False, orientation=(10.0, 20.0, 30.0))
    expt = true_models(p, np.random.default_rng(0))[0][0]
    table = predict_rotation(expt, 2.0)
    rng = np.random.default_rng(1)
    images = rng.poisson(2.0, (n_images, size, size)).astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for x, y, z in table["xyzcal.px"]:
        frame = int(z) - expt.scan.array_range[0]
        for f in range(max(frame - 1, 0), min(frame + 2, n_images)):
            w = np.exp(-0.5 * ((f + 0.5 - (z - expt.scan.array_range[0])) / 0.6) ** 2)
            images[f] += 400.0 * w * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)
    return expt, np.round(images).astype(np.int32)


def warm_up() -> None:
    from ..formats.reader import InMemoryReader
    from .integrate import integrate
    from .params import IntegrationParams

    expt, images = tiny_sweep()
    integrate([expt], None, IntegrationParams(sigma_b=0.3, sigma_m=0.15, nproc=1,
                                              min_reference_spots=1),
              readers=[InMemoryReader(list(images))])
    warm_up_boxes()  # repack, which only long sweeps reach (loaded: the rest was compiled)
    # the scan-varying prediction's kernel (the tiny sweep's crystal is static)
    from ..prediction.rotation import predict_rotation

    a_sp = np.repeat(expt.crystal.A[None], expt.scan.num_images + 1, axis=0)
    predict_rotation(expt.replace(crystal=expt.crystal.replace(A_at_scan_points=a_sp)), 2.0)


def _two_boxes():
    """Arguments of :func:`.box_kernels.process` for two 3 x 3 x 2 px shoeboxes (a bright
    centre on a flat background), as integrate passes them: those before the algorithm,
    and those after its parameters."""
    from .integrate import GLM_BINS
    from .mask_codes import BACKGROUND, FOREGROUND, VALID

    n, size = 2, 18
    bbox = np.array([[0, 3, 0, 3, 0, 2], [3, 6, 0, 3, 0, 2]], np.int32)
    mask = np.full(n * size, VALID | BACKGROUND, np.uint8)
    mask[[4, 13, size + 4, size + 13]] = VALID | FOREGROUND
    data = np.where(mask & FOREGROUND, 50.0, 3.0).astype(np.float32)
    head = (np.arange(n, dtype=np.int64), bbox, np.array([0, size], np.int64), data, mask,
            np.ones(1), np.zeros(n, np.int64))
    tail = (np.zeros((n, 4)), np.full((n, 12), np.nan), np.zeros((n, 6), np.int64),
            np.empty(size), np.empty((size, 4)), np.empty(size), np.empty((size, 3), np.int64),
            np.zeros(4 * GLM_BINS, np.int64), np.empty(GLM_BINS), np.empty(GLM_BINS))
    return head, tail


def warm_up_boxes() -> None:
    """The kernels on whole shoeboxes (:mod:`.box_kernels`) that integrate's default
    workflow runs, with the argument types it passes them: the pixel extent of two
    reflections, ``process`` with the GLM on two 3 x 3 x 2 px shoeboxes (a bright centre
    on a flat background) and ``repack`` of the two shoebox buffers (data and mask
    codes); the GLM of a background beyond its histogram's bins is the same kernel (a
    branch). Not the ``simple`` models, a unit of their own (:func:`warm_up_simple_boxes`)."""
    from .box_kernels import box_extent, process, repack
    from .kernels import panel_geometry

    expt, _ = tiny_sweep(n_images=2, size=8)
    s0 = np.asarray(expt.beam.s0, float)
    s1 = np.array([s0 + [0.02, 0.0, 0.0], s0 + [0.0, 0.02, 0.0]])
    e1, e2 = np.tile([0.0, 0.0, 1.0], (2, 1)), np.tile([0.0, 1.0, 0.0], (2, 1))
    box_extent(s1, s0, np.array([1.0, 0.0, 0.0]), e1, e2, np.full(2, 1e-3), np.full(2, -0.01),
               np.full(2, 0.01), np.zeros(2, np.int64), panel_geometry(expt.detector),
               np.zeros((2, 5)))
    head, tail = _two_boxes()
    process(*head, 0, 1.345, 1, 1, 3.0, 3.0, 1.5, *tail)
    rows = np.arange(2, dtype=np.int64)
    sizes = np.array([3, 2], np.int64)
    old, new = np.array([0, 3], np.int64), np.array([2, 0], np.int64)
    repack(rows, old, new, sizes, np.zeros(5, np.float32), np.zeros(5, np.float32),
           np.zeros(5, np.uint8), np.zeros(5, np.uint8))


def warm_up_simple_boxes() -> None:
    """``process`` with the ``simple`` background models (the unit
    ``gonio.core.integration.box_kernels.simple``; one compilation serves every model and
    outlier rejection, arguments)."""
    from .box_kernels import process

    head, tail = _two_boxes()
    process(*head, 1, 1.345, 1, 1, 3.0, 3.0, 1.5, *tail)
