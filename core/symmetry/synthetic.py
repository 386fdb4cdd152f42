"""Synthetic integrated intensities with a known space group, for tests and benchmarks.

A random "Wilson structure": each symmetry-unique reflection of ``space_group``
(gemmi's ASU mapping) gets a normalised intensity E^2 drawn from Wilson's acentric
(exponential) or centric (chi^2 with one degree of freedom) distribution, times the
epsilon factor and an overall exp(-B s^2 / 2) fall-off; systematic absences get 0.
The full sphere of Miller indices is then observed in P 1 at random (with
repeats), with Poisson-like noise, optionally indexed in another basis ``P`` (h' = h P)
to mimic an indexing solution in a non-standard or reduced setting.
"""

from __future__ import annotations

import gemmi
import numpy as np

from gonio.core.lattice.change_of_basis import metric_tensor, transform_cell
from gonio.core.models.crystal import Crystal, b_matrix
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable
from gonio.core.symmetry.resolution import merge_keys


def full_sphere(cell: gemmi.UnitCell, d_min: float) -> np.ndarray:
    """Every Miller index (except 000) with d >= d_min."""
    G = metric_tensor(cell)
    Gs = np.linalg.inv(G)  # reciprocal metric
    hmax = [int(np.floor(np.sqrt(G[i, i]) / d_min)) + 1 for i in range(3)]
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=1)
    s2 = np.einsum("ij,jk,ik->i", hkl, Gs, hkl)
    keep = (s2 <= 1 / d_min ** 2) & (s2 > 0)
    return hkl[keep]


def wilson_intensities(hkl: np.ndarray, cell: gemmi.UnitCell, space_group: gemmi.SpaceGroup,
                       rng, b_iso: float = 10.0, scale: float = 1000.0) -> np.ndarray:
    """True intensities of a random structure in ``space_group`` (same value for
    symmetry equivalents and Friedel mates, 0 for absences)."""
    keys = merge_keys(hkl, space_group)
    uniq, inv = np.unique(keys, return_inverse=True)
    ops = space_group.operations()
    h32 = np.ascontiguousarray(hkl, dtype=np.int32)
    centric = np.asarray(ops.centric_flag_array(h32), dtype=bool)
    eps = np.asarray(ops.epsilon_factor_without_centering_array(h32), dtype=float)
    absent = np.asarray(ops.systematic_absences(h32), dtype=bool)
    e2_acentric = rng.exponential(1.0, len(uniq))
    e2_centric = rng.normal(size=len(uniq)) ** 2
    e2 = np.where(centric, e2_centric[inv], e2_acentric[inv])
    Gs = np.linalg.inv(metric_tensor(cell))
    s2 = np.einsum("ij,jk,ik->i", hkl, Gs, hkl)
    intensity = scale * e2 * eps * np.exp(-b_iso * s2 / 2)
    intensity[absent] = 0.0
    return intensity


def simulate_integrated(space_group: str | gemmi.SpaceGroup, cell, d_min: float = 2.0,
                        n_obs: int | None = None, completeness: float = 0.8, P=None,
                        seed: int = 0, b_iso: float = 10.0, background: float = 20.0,
                        n_experiments: int = 1):
    """(experiments, reflections, truth) of a data set integrated in P 1.

    ``cell`` (tuple or gemmi cell) is in the setting of ``space_group``; ``P`` maps it
    to the basis the data are indexed in (default: identity); ``n_obs`` observations
    (default: 1.5 x the full sphere x completeness) are drawn from a random fraction
    ``completeness`` of the sphere. Each experiment is an independent observation of the
    same crystal (same orientation matrix).
    """
    rng = np.random.default_rng(seed)
    sg = gemmi.SpaceGroup(space_group) if isinstance(space_group, str) else space_group
    cell = cell if isinstance(cell, gemmi.UnitCell) else gemmi.UnitCell(*cell)
    P = np.eye(3) if P is None else np.asarray(P, dtype=float)
    hkl = full_sphere(cell, d_min)
    i_true = wilson_intensities(hkl, cell, sg, rng, b_iso=b_iso)
    hn = hkl @ P
    lattice = np.all(np.abs(hn - np.rint(hn)) < 1e-6, axis=1)  # centring absences drop out
    hkl, i_true = hkl[lattice], i_true[lattice]
    seen = rng.random(len(hkl)) < completeness
    pool = np.flatnonzero(seen)
    n_obs = n_obs or int(1.5 * len(pool))
    pick = pool[rng.integers(0, len(pool), size=n_obs)]
    h, it = hkl[pick], i_true[pick]
    sigma = np.sqrt(it + background + (0.02 * it) ** 2)
    i_obs = it + rng.normal(size=n_obs) * sigma
    h_obs = np.rint(h @ P).astype(np.int32)
    cell_obs = transform_cell(cell, P)
    U = _random_rotation(rng)
    crystal = Crystal(A=U @ b_matrix(cell_obs), space_group=gemmi.SpaceGroup("P 1"))
    Gs = np.linalg.inv(metric_tensor(cell))
    d = 1 / np.sqrt(np.einsum("ij,jk,ik->i", h, Gs, h))
    ids = rng.integers(0, n_experiments, size=n_obs)
    flags = np.full(n_obs, Flags.indexed | Flags.integrated_sum | Flags.integrated_prf,
                    dtype=np.uint64)
    table = ReflectionTable({
        "miller_index": h_obs, "id": ids.astype(np.int32), "d": d, "flags": flags,
        "intensity.prf.value": i_obs, "intensity.prf.variance": sigma ** 2,
        "intensity.sum.value": i_obs, "intensity.sum.variance": sigma ** 2,
        "partiality": np.ones(n_obs), "intensity.true": it,
    }, {i: f"sim-{i}" for i in range(n_experiments)})
    experiments = ExperimentList([Experiment(crystal=crystal, identifier=f"sim-{i}")
                                  for i in range(n_experiments)])
    return experiments, table, {"space_group": sg, "cell": cell, "P": P}


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])
