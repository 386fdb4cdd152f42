"""Correlation of intensities related by the symmetry operators of a candidate lattice.

The statistic DIALS reports as "min/max cc" in ``refine_bravais_settings``
(``dials.command_line.check_indexing_symmetry.get_symop_correlation_coefficients``):
the observations are I/sigma(I) of the indexed reflections with a positive
variance, each reflection keeping its own Miller index (no merging, no Friedel
mates). For every rotation R of the space group, each index h is reindexed by R
and paired with the reflection carrying that new index when there is one; the
Pearson correlation of the pairs is the operator's cc. Operators with at most
10 pairs are ignored; min/max are taken over the operators other than the
identity (the first).

Several reflections with the same index (rare on one rotation sweep) are
averaged before pairing.
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np


@dataclass
class SymmetryCC:
    """Per-operator correlation coefficients (identity first) and pair counts."""

    operators: list[str]
    cc: np.ndarray
    n_pairs: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        return self.n_pairs[1:] > 10

    @property
    def min_cc(self) -> float | None:
        c = self.cc[1:][self.usable]
        return float(c.min()) if len(c) else None

    @property
    def max_cc(self) -> float | None:
        c = self.cc[1:][self.usable]
        return float(c.max()) if len(c) else None


def _keys(hkl: np.ndarray) -> np.ndarray:
    h = hkl.astype(np.int64) + 1024
    return (h[:, 0] << 22) | (h[:, 1] << 11) | h[:, 2]


def symmetry_correlation(miller_index: np.ndarray, values: np.ndarray,
                         space_group: gemmi.SpaceGroup) -> SymmetryCC:
    """Pearson cc between ``values`` at h and at h' = h R for each rotation R of
    ``space_group`` (its setting must be the one ``miller_index`` refer to)."""
    hkl = np.asarray(miller_index, dtype=np.int64).reshape(-1, 3)
    values = np.asarray(values, dtype=float)
    keys = _keys(hkl)
    uniq, inverse = np.unique(keys, return_inverse=True)
    mean = np.bincount(inverse, weights=values, minlength=len(uniq)) / np.bincount(
        inverse, minlength=len(uniq))
    uhkl = np.empty((len(uniq), 3), dtype=np.int64)
    uhkl[inverse] = hkl
    names, ccs, ns = [], [], []
    for op in space_group.operations().sym_ops:
        R = np.array(op.rot, dtype=np.int64) // op.DEN
        other = _keys(uhkl @ R)
        pos = np.clip(np.searchsorted(uniq, other), 0, max(len(uniq) - 1, 0))
        found = uniq[pos] == other if len(uniq) else np.zeros(0, bool)
        x, y = mean[found], mean[pos[found]]
        names.append(op.triplet())
        ns.append(int(found.sum()))
        if len(x) > 1 and x.std() > 0 and y.std() > 0:
            ccs.append(float(np.corrcoef(x, y)[0, 1]))
        else:
            ccs.append(np.nan)
    return SymmetryCC(names, np.array(ccs), np.array(ns))
