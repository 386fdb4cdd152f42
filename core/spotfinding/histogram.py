"""The ASCII per-image spot-count histogram that dials.find_spots prints.

Spots are binned by centroid z into at most ``width`` columns spanning the
observed z range; columns are scaled to ``height`` rows. To keep spots whose
centroids sit on a bin edge from piling into one column, z is nudged by
alternately -0.25 and +0.25 frame, as DIALS does, so the text matches DIALS's
for the same spots.
"""

from __future__ import annotations

import math

import numpy as np


def _round_half_away(a: np.ndarray) -> np.ndarray:
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


def spot_count_histogram(z: np.ndarray, char: str = "*", width: int = 60,
                         height: int = 10) -> str:
    """The histogram text (without the "Histogram of ..." title line)."""
    z = np.asarray(z, dtype=float)
    if len(z) == 0:
        return "\n"
    lo, hi = float(z.min()), float(z.max())
    zj = z + (np.arange(len(z)) % 2) / 2.0 - 0.25
    first, last = math.ceil(lo), math.ceil(hi)
    n_images = last - first + 1
    if n_images <= 1:
        return f"{len(z)} spots found on 1 image"
    width = min(n_images, width)
    step = (hi - lo) / width
    bounds = lo + np.arange(1, width) * step
    below = np.array([(zj < b).sum() for b in bounds])
    counts = np.diff(np.concatenate([[0], below])).tolist()
    counts.append(int((zj >= bounds[-1]).sum()))
    counts = np.array(counts, dtype=float)
    max_count = counts.max()
    scaled = _round_half_away(counts * height / max_count)
    rows = [f"{int(counts.sum())} spots found on {n_images} images (max {int(max_count)} / bin)"]
    for i in range(height, 0, -1):
        rows.append("".join(char if c > i - 1 else " " for c in scaled))
    pad = width - len(str(first)) - len(str(last))
    middle = ((" " if pad < 7 else "image").center(pad)) if pad > 0 else ""
    rows.append(f"{first}{middle}{last}")
    return "\n".join(rows)
