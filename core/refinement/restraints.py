"""Unit-cell restraints (DIALS's ``tie_to_target`` and ``tie_to_group``).

Each restraint adds weighted residuals to the least-squares target
(Waterman et al. 2016, Acta Cryst. D72, 558, section on restraints):

* tie_to_target: (p_k - target_k) / sigma_k for each cell parameter p_k
  (a, b, c in A, alpha, beta, gamma in deg) with sigma_k > 0;
* tie_to_group: (p_k(i) - mean_j p_k(j)) / sigma_k for every crystal i of the
  group.

The derivatives of the cell parameters with respect to the crystal's cell
parameters (the reciprocal-metric components) are central differences: six
numbers from a 3x3 factorisation, exact to far below the sigmas.
"""

from __future__ import annotations

import numpy as np

from ..errors import GonioError
from ..models.crystal import cell_from_real_vectors
from .models import CrystalParameterisation


class RestraintError(GonioError):
    pass


def _cell_of(par: CrystalParameterisation, t) -> np.ndarray:
    B, _ = par.cell.compose(t)
    return np.array(cell_from_real_vectors(np.linalg.inv(B)).parameters)


def _sigmas(values, what: str) -> np.ndarray:
    s = np.asarray(values, dtype=float)
    if s.shape != (6,):
        raise RestraintError(
            f"{what} needs six numbers (for a, b, c, alpha, beta, gamma; 0 leaves one "
            f"unrestrained), not {len(s)}: e.g. sigmas=0.01,0.01,0.01,0.1,0.1,0.1.")
    if np.any(s < 0):
        raise RestraintError(f"{what} must not be negative (0 leaves a parameter unrestrained).")
    return s


class CellRestraints:
    """The cell restraints of a refinement set up by ``engine._Setup`` (static crystals)."""

    def __init__(self, setup, params):
        self.setup = setup
        self.terms = []  # (kind, [crystal blocks], target or None, sigmas)
        n_exp = len(setup.experiments)

        def blocks_for(ids, what):
            ids = range(n_exp) if not ids else ids
            out = []
            for i in ids:
                if not 0 <= int(i) < n_exp:
                    raise RestraintError(f"{what}.id={i}: there are only {n_exp} experiments "
                                         f"(ids 0 to {n_exp - 1}).")
                blk = setup.blocks[setup.exp_blocks[int(i)][3]]
                if blk not in out:
                    out.append(blk)
            for blk in out:
                if not isinstance(blk.param, CrystalParameterisation) or blk.fixed[3:].all():
                    raise RestraintError(
                        f"A {what} restraint is given for a unit cell that is fixed "
                        "(crystal.fix=cell or all): a restraint only acts on refined "
                        "parameters. Release the cell or drop the restraint.")
            return out

        values = getattr(params, "tie_to_target_values", None)
        sig = getattr(params, "tie_to_target_sigmas", None)
        if values is not None or sig is not None:
            if values is None or sig is None:
                raise RestraintError("tie_to_target needs both values (the target a, b, c, "
                                     "alpha, beta, gamma) and sigmas.")
            target = np.asarray(values, dtype=float)
            if target.shape != (6,):
                raise RestraintError(
                    f"tie_to_target.values needs six numbers (a, b, c, alpha, beta, gamma), "
                    f"not {len(target)}: e.g. values=78.9,78.9,37.8,90,90,90.")
            self.terms.append(("target", blocks_for(params.tie_to_target_id, "tie_to_target"),
                               target, _sigmas(sig, "tie_to_target.sigmas")))
        gsig = getattr(params, "tie_to_group_sigmas", None)
        if gsig is not None:
            blocks = blocks_for(params.tie_to_group_id, "tie_to_group")
            if len(blocks) < 2:
                raise RestraintError("tie_to_group needs at least two crystals in the group.")
            self.terms.append(("group", blocks, None, _sigmas(gsig, "tie_to_group.sigmas")))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def evaluate(self):
        """Weighted residuals (m,) and their derivatives (m, n_free)."""
        n_free = self.setup.n_free
        res, jac = [], []
        for kind, blocks, target, sig in self.terms:
            use = sig > 0
            cells, dcells = [], []
            for blk in blocks:
                t = blk.values[3:]
                cells.append(_cell_of(blk.param, t))
                d = np.zeros((6, n_free))
                free, cols = blk.free_index
                for k, col in zip(free, cols):
                    if k < 3:
                        continue
                    dt = np.zeros_like(t)
                    dt[k - 3] = 1e-3
                    d[:, col] = (_cell_of(blk.param, t + dt) - _cell_of(blk.param, t - dt)) / 2e-3
                dcells.append(d)
            cells, dcells = np.array(cells), np.array(dcells)
            if kind == "target":
                r, J = cells - target, dcells
            else:
                r, J = cells - cells.mean(axis=0), dcells - dcells.mean(axis=0)
            res.append((r[:, use] / sig[use]).ravel())
            jac.append((J[:, use, :] / sig[use][None, :, None]).reshape(-1, n_free))
        return np.concatenate(res), np.concatenate(jac)
