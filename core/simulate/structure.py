"""Structure-factor intensities for simulation.

Random intensities follow Wilson statistics (A. J. C. Wilson, Acta Cryst. 2
(1949) 318): on the asymmetric unit (gemmi ``make_miller_array``) each
reflection gets <I> = epsilon exp(-B / (2 d^2)) times an exponential variate
(acentric) or a chi-square variate with one degree of freedom (centric).
Every symmetry mate and Friedel mate takes the value of its orbit, so the
Laue symmetry holds exactly; systematic absences are zero.
"""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np

from ..errors import GonioError


class StructureFactorError(GonioError):
    pass


def _encode(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, dtype=np.int64) + 1024
    return (h[..., 0] << 22) | (h[..., 1] << 11) | h[..., 2]


def orbit_keys(hkl: np.ndarray, space_group: gemmi.SpaceGroup) -> np.ndarray:
    """An integer that is the same for all symmetry and Friedel mates of each hkl (N,)."""
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    rots = {tuple(np.array(op.rot).ravel() // gemmi.Op.DEN) for op in space_group.operations()}
    best = np.full(len(hkl), np.iinfo(np.int64).min)
    for r in rots:
        R = np.array(r, dtype=np.int64).reshape(3, 3)
        h2 = hkl @ R  # reciprocal-space mate: h' = h R
        best = np.maximum(best, np.maximum(_encode(h2), _encode(-h2)))
    return best


def wilson_intensities(space_group: gemmi.SpaceGroup, cell: gemmi.UnitCell, d_min: float,
                       b_factor: float, rng: np.random.Generator):
    """(orbit keys sorted, intensities) for the asymmetric unit to ``d_min`` (A)."""
    asu = np.asarray(gemmi.make_miller_array(cell, space_group, d_min), dtype=np.int32)
    ops = space_group.operations()
    eps = np.asarray(ops.epsilon_factor_without_centering_array(asu), dtype=float)
    centric = np.asarray(ops.centric_flag_array(asu), dtype=bool)
    d = np.asarray(cell.calculate_d_array(asu), dtype=float)
    mean = eps * np.exp(-b_factor / (2.0 * d**2))
    z = rng.standard_normal(len(asu))
    expo = rng.exponential(1.0, len(asu))
    value = mean * np.where(centric, z**2, expo)
    keys = orbit_keys(asu, space_group)
    order = np.argsort(keys)
    return keys[order], value[order]


def read_intensities(path: str, space_group: gemmi.SpaceGroup):
    """(orbit keys sorted, intensities) from an MTZ (first I column, else F squared) or a
    text file of 'h k l I' rows."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise StructureFactorError(f"intensity file {p} {what}; give an MTZ file or a text "
                                   "file with 'h k l I' rows.")
    if p.suffix.lower() == ".mtz":
        mtz = gemmi.read_mtz_file(str(p))
        cols = [c for c in mtz.columns if c.type == "J"] or [c for c in mtz.columns
                                                             if c.type == "F"]
        if not cols:
            raise StructureFactorError(f"{p} has no intensity (J) or amplitude (F) column.")
        data = np.array(mtz, copy=False)
        hkl = data[:, :3].astype(np.int64)
        value = data[:, cols[0].idx].astype(float)
        if cols[0].type == "F":
            value = value**2
    else:
        try:
            arr = np.loadtxt(p, ndmin=2)
        except ValueError as err:
            raise StructureFactorError(f"{p} is not a text table of 'h k l I' rows ({err}).") \
                from None
        if arr.shape[1] < 4:
            raise StructureFactorError(f"{p} needs four columns h k l I; it has {arr.shape[1]}.")
        hkl, value = arr[:, :3].astype(np.int64), arr[:, 3].astype(float)
    ok = np.isfinite(value)
    keys = orbit_keys(hkl[ok], space_group)
    keys, first = np.unique(keys, return_index=True)
    return keys, np.clip(value[ok][first], 0.0, None)


def lookup(keys: np.ndarray, values: np.ndarray, hkl: np.ndarray,
           space_group: gemmi.SpaceGroup) -> np.ndarray:
    """Intensity of each hkl (N, 3) from an orbit table; 0 where the table has none."""
    k = orbit_keys(hkl, space_group)
    pos = np.clip(np.searchsorted(keys, k), 0, max(len(keys) - 1, 0))
    found = (len(keys) > 0) & (keys[pos] == k) if len(keys) else np.zeros(len(k), bool)
    return np.where(found, values[pos] if len(keys) else 0.0, 0.0)
