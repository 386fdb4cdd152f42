"""Strong-spot finding as dials.find_spots does it.

>>> from gonio.core.spotfinding import find_spots, SpotFinderParams
>>> strong, result = find_spots(experiments, readers, SpotFinderParams(d_max=20))  # doctest: +SKIP
"""

from .finder import SpotFinderResult, find_spots
from .params import SpotFinderError, SpotFinderParams, UntrustedRegion

__all__ = ["find_spots", "SpotFinderParams", "SpotFinderResult", "SpotFinderError",
           "UntrustedRegion"]
