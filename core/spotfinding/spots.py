"""Per-spot quantities from labelled strong pixels (whole-array numpy).

Conventions of DIALS spot finding (``Shoebox.centroid_valid`` and
``summed_intensity`` over the spot's own pixels, no background subtracted):

- pixel (x, y) on frame z has centre (x+0.5, y+0.5, z+0.5); frame z counts
  from 0 at the start of the first image of the scan (image i spans
  [i-1, i)).
- centroid = count-weighted mean of the pixel centres; its variance
  (``xyzobs.px.variance``) is the squared standard error of that mean plus
  1/12 px^2 (the variance of a uniform pixel): with weights w, W = sum w,
  s2 = sum w (c - mean)^2 / W and the unbiased s2_u = s2 W^2/(W^2 - sum w^2),
  variance = s2_u / W + 1/12 (and 1/12 when W^2 = sum w^2, a one-pixel extent).
- intensity.sum.value = sum of counts, variance = the same (Poisson).
- bbox = (x0, x1, y0, y1, z0, z1), ends exclusive; peak = centre of the
  first pixel of maximum count in (z, y, x) order.
- shoebox: the bbox volume with the spot's counts and mask Valid|Foreground
  (1|4) on its pixels, 0 elsewhere; background 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..reflection_table import Shoeboxes

VALID = 1
FOREGROUND = 4


@dataclass
class SpotPixels:
    """Strong pixels of one panel: coordinates, counts and spot labels."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    value: np.ndarray
    label: np.ndarray

    @property
    def n_spots(self) -> int:
        return int(self.label.max()) + 1 if len(self.label) else 0

    def sizes(self) -> np.ndarray:
        return np.bincount(self.label, minlength=self.n_spots)

    def select_spots(self, keep: np.ndarray) -> SpotPixels:
        """Only pixels of spots with keep[label]; labels renumbered 0..k-1 in order."""
        new = np.cumsum(keep) - 1
        sel = keep[self.label]
        return SpotPixels(self.z[sel], self.y[sel], self.x[sel], self.value[sel],
                          new[self.label[sel]])


@dataclass
class SpotTable:
    """Per-spot arrays of one panel (N spots)."""

    xyz: np.ndarray  # (N, 3) px, px, frame
    xyz_variance: np.ndarray  # (N, 3)
    bbox: np.ndarray  # (N, 6) int32
    intensity: np.ndarray  # (N,)
    n_signal: np.ndarray  # (N,)
    peak: np.ndarray  # (N, 3) px, px, frame


def measure_spots(p: SpotPixels) -> SpotTable:
    """Centroids, variances, bounding boxes, intensities and peaks of all spots."""
    n = p.n_spots
    lab = p.label
    order = np.argsort(lab, kind="stable")  # by label, raster order within
    lab = lab[order]
    z, y, x = p.z[order], p.y[order], p.x[order]
    w = p.value[order].astype(np.float64)
    coords = np.stack([x + 0.5, y + 0.5, z + 0.5], axis=1)

    count = np.bincount(lab, minlength=n)
    W = np.bincount(lab, weights=w, minlength=n)
    W2 = np.bincount(lab, weights=w * w, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.stack([np.bincount(lab, weights=w * coords[:, k], minlength=n)
                         for k in range(3)], axis=1) / W[:, None]
        dev2 = (coords - mean[lab]) ** 2
        s2 = np.stack([np.bincount(lab, weights=w * dev2[:, k], minlength=n)
                       for k in range(3)], axis=1) / W[:, None]
        denom = W * W - W2
        mse = np.where(denom[:, None] > 0, s2 * (W * W / denom)[:, None] / W[:, None], 0.0)
    variance = mse + 1.0 / 12.0

    starts = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    bbox = np.empty((n, 6), np.int32)
    if n:
        bbox[:, 0] = np.minimum.reduceat(x, starts)
        bbox[:, 1] = np.maximum.reduceat(x, starts) + 1
        bbox[:, 2] = np.minimum.reduceat(y, starts)
        bbox[:, 3] = np.maximum.reduceat(y, starts) + 1
        bbox[:, 4] = np.minimum.reduceat(z, starts)
        bbox[:, 5] = np.maximum.reduceat(z, starts) + 1
        # a zero-weight spot (all counts 0) has its centroid at the bbox centre
        bad = ~(W > 0)
        mean[bad] = np.stack([bbox[bad, 0] + bbox[bad, 1], bbox[bad, 2] + bbox[bad, 3],
                              bbox[bad, 4] + bbox[bad, 5]], axis=1) / 2.0
        variance[bad] = 0.0
        vmax = np.maximum.reduceat(w, starts)
        is_max = np.flatnonzero(w == vmax[lab])
        _, first = np.unique(lab[is_max], return_index=True)
        peak = coords[is_max[first]]
    else:
        peak = np.zeros((0, 3))

    return SpotTable(mean, variance, bbox, W, count, peak)


def make_shoeboxes(p: SpotPixels, bbox: np.ndarray, panel: int) -> Shoeboxes:
    """Compact shoeboxes of all spots (``bbox`` from :func:`measure_spots`)."""
    n = len(bbox)
    lab, z, y, x = p.label, p.z, p.y, p.x
    nxb = (bbox[:, 1] - bbox[:, 0]).astype(np.int64)
    nyb = (bbox[:, 3] - bbox[:, 2]).astype(np.int64)
    nzb = (bbox[:, 5] - bbox[:, 4]).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(nxb * nyb * nzb)]).astype(np.int64)
    flat = offset[lab] + ((z - bbox[lab, 4]) * nyb[lab] + (y - bbox[lab, 2])) * nxb[lab] \
        + (x - bbox[lab, 0])
    data = np.zeros(offset[-1], np.float32)
    mask = np.zeros(offset[-1], np.int32)
    data[flat] = p.value
    mask[flat] = VALID | FOREGROUND
    return Shoeboxes(np.full(n, panel, np.uint64), bbox, data, np.zeros(offset[-1], np.float32),
                     mask, offset, np.ones(n, bool))
