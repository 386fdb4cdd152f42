"""MTZ batch numbers: one batch per image, never shared between experiments.

The DIALS rule (dials/util/batch_handling.py, as rebatch would): batch =
image number + batch offset of the experiment. If the scans already carry
different ``batch_offset`` values (set by dials.scale or a previous export),
they are kept. Otherwise offsets are computed: an experiment keeps its own
image numbers when they do not overlap (or touch) the ranges taken so far;
one that would collide is moved to the next number above the highest batch so
far that ends in 01 and is not consecutive with it (e.g. 101 after 1-100,
201 after 1-150, 301 after 101-200+1..199). Batch 0 is never used (an image
range starting at 0 becomes 1..). A still or scanless experiment has the
image range (0, 0).
"""

from __future__ import annotations

import numpy as np

from gonio.core.models.experiment import ExperimentList


def image_ranges(experiments: ExperimentList) -> list[tuple[int, int]]:
    """(first, last) image of each experiment; (0, 0) without a rotation scan."""
    return [tuple(e.scan.image_range) if e.scan is not None and e.scan.oscillation[1] != 0
            else (0, 0) for e in experiments]


def _next_epoch(value: int) -> int:
    """The next number above ``value`` ending in 01, not consecutive with it."""
    rem = value % 100
    if rem == 99:
        return value + 2
    if rem == 0:
        return value + 101
    return value - rem + 101


def calculate_batch_offsets(ranges: list[tuple[int, int]]) -> list[int]:
    """Offsets such that no two experiments' batch ranges overlap or touch."""
    offsets = [0] * len(ranges)
    taken: list[tuple[int, int]] = []
    to_shift = []
    highest = 0
    for i, (lo, hi) in enumerate(ranges):
        if lo == 0:
            lo, hi = lo + 1, hi + 1
        if any(lo < b + 1 and hi >= a - 1 for a, b in taken):
            to_shift.append(i)
            continue
        offsets[i] = lo - ranges[i][0]
        taken.append((lo, hi))
        highest = max(highest, hi)
    for i in to_shift:
        start = _next_epoch(highest)
        offsets[i] = start - ranges[i][0]
        highest = start + ranges[i][1] - ranges[i][0]
    return offsets


def batch_offsets(experiments: ExperimentList) -> list[int]:
    """The scans' own offsets when they differ, else offsets from :func:`calculate_batch_offsets`."""
    own = [e.scan.batch_offset for e in experiments if e.scan is not None]
    if len(set(own)) > 1 and len(own) == len(experiments):
        return [int(o) for o in own]
    return calculate_batch_offsets(image_ranges(experiments))


def batch_of_reflections(z_px: np.ndarray, offset: int) -> np.ndarray:
    """Batch of each reflection from its frame coordinate z (image = floor(z) + 1)."""
    return (np.floor(z_px).astype(np.int64) + 1 + offset).astype(np.int64)
