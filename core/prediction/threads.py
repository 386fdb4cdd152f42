"""How many threads a large prediction runs in (numpy releases the GIL on large arrays)."""

from __future__ import annotations

import os

#: rows handed to each prediction thread at least: below this the threads cost more than
#: they save
THREAD_MIN = 100_000


def thread_parts(n: int, nproc: int | None) -> int:
    """How many threads to split ``n`` rows of prediction work over: ``nproc`` (None: all
    cores), each with at least :data:`THREAD_MIN` rows."""
    nproc = nproc or os.cpu_count() or 1
    return max(1, min(int(nproc), n // THREAD_MIN))
