"""Per-geometry arrays kept between steps: the latest ones, newest last, up to a byte budget.

Arrays that depend only on the detector (and beam) geometry, such as spot finding's
per-pixel resolution maps and integration's per-pixel directions, cost a fraction of a
second per megapixel to compute; a session that runs a step again on the same detector
reuses them. The arrays are handed out read-only.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class KeptArrays:
    """A least-recently-used store of read-only arrays, keyed by a JSON-able geometry
    description, holding at most ``max_bytes`` (always at least the newest array)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._arrays: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, geometry, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The array kept for ``geometry``, computed by ``compute()`` the first time."""
        key = json.dumps(geometry, sort_keys=True)
        a = self._arrays.get(key)
        if a is None:
            a = compute()
            a.setflags(write=False)
            self._arrays[key] = a
            while sum(v.nbytes for v in self._arrays.values()) > self.max_bytes \
                    and len(self._arrays) > 1:
                self._arrays.popitem(last=False)
        self._arrays.move_to_end(key)
        return a
