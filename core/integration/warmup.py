"""Compile (or load from the cache) the integration kernels on a tiny sweep.

Called by :mod:`gonio.core.jit` to prepare the kernels of ``integrate`` ahead of
its first run (unit ``gonio.core.integration`` in ``UNITS``). It integrates a
sweep of a few 64 x 64 px images made here with numpy (Gaussian spots at the
predicted positions on a Poisson background; the simulator's own kernels are
not needed), through :func:`.integrate.integrate` itself, so that every kernel
is compiled with the argument types the step uses; ``repack``, which only long
sweeps reach, is called directly with the types of the shoebox buffers.
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
    from . import kernels as K
    from .integrate import integrate
    from .params import IntegrationParams

    expt, images = tiny_sweep()
    # one run compiles every branch: the simple background models too
    integrate([expt], None, IntegrationParams(sigma_b=0.3, sigma_m=0.15, nproc=1,
                                              min_reference_spots=1),
              readers=[InMemoryReader(list(images))])
    rows = np.arange(2, dtype=np.int64)
    sizes = np.array([3, 2], np.int64)
    old, new = np.array([0, 3], np.int64), np.array([2, 0], np.int64)
    for dtype in (np.float32, np.uint8):
        K.repack(rows, old, new, sizes, np.zeros(5, dtype), np.zeros(5, dtype))
