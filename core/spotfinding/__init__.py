"""Strong-spot finding as dials.find_spots does it.

>>> from gonio.core.spotfinding import find_spots, SpotFinderParams
>>> strong, result = find_spots(experiments, readers, SpotFinderParams(d_max=20))  # doctest: +SKIP

``find_spots`` and ``SpotFinderResult`` are imported on first use: a process that
only needs one kernels module (``python -m gonio.core.jit`` preparing the threshold
kernels) does not import the finder's models and file formats first.
"""

from .params import SpotFinderError, SpotFinderParams, UntrustedRegion

__all__ = ["find_spots", "SpotFinderParams", "SpotFinderResult", "SpotFinderError",
           "UntrustedRegion"]


def __getattr__(name: str):
    if name in ("find_spots", "SpotFinderResult"):
        from . import finder

        return getattr(finder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
