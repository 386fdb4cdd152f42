"""Crystal model: A = UB and the space group (gemmi).

Conventions of cctbx/dxtbx: reciprocal-lattice point ``r = A h`` in the
crystal-at-phi-zero frame (1/A). The real-space basis vectors a, b, c are the
rows of A^-1. B is the transpose of the fractionalisation matrix
(``gemmi.UnitCell.frac.mat``, the same orthogonalisation convention as cctbx:
a along x, b in the x-y plane), and U = A B^-1 is a proper rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import gemmi
import numpy as np


def b_matrix(cell: gemmi.UnitCell) -> np.ndarray:
    """B = F^T with F the fractionalisation matrix of ``cell``."""
    return np.array(cell.frac.mat.tolist()).T


def cell_from_real_vectors(real_abc: np.ndarray) -> gemmi.UnitCell:
    """Unit cell from a (3, 3) array whose rows are a, b, c (A)."""
    a, b, c = np.asarray(real_abc, dtype=float)
    la, lb, lc = np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(c)

    def ang(u, v, lu, lv):
        return float(np.degrees(np.arccos(np.clip(u @ v / (lu * lv), -1.0, 1.0))))

    return gemmi.UnitCell(la, lb, lc, ang(b, c, lb, lc), ang(a, c, la, lc), ang(a, b, la, lb))


@dataclass
class Crystal:
    A: np.ndarray  # (3, 3) UB, 1/A
    space_group: gemmi.SpaceGroup = field(default_factory=lambda: gemmi.SpaceGroup("P 1"))
    A_at_scan_points: np.ndarray | None = None  # (n_images + 1, 3, 3) or None
    extra: dict = field(default_factory=dict)  # other DIALS crystal fields, kept as read

    def __post_init__(self):
        self.A = np.asarray(self.A, dtype=float).reshape(3, 3)
        if isinstance(self.space_group, str):
            self.space_group = gemmi.SpaceGroup(self.space_group)
        if self.A_at_scan_points is not None:
            self.A_at_scan_points = np.asarray(self.A_at_scan_points, dtype=float).reshape(-1, 3, 3)

    @classmethod
    def from_real_vectors(cls, a, b, c, space_group="P 1", **kw) -> Crystal:
        return cls(A=np.linalg.inv(np.array([a, b, c], dtype=float)), space_group=space_group, **kw)

    @classmethod
    def from_cell_and_U(cls, cell: gemmi.UnitCell, U, space_group="P 1") -> Crystal:
        return cls(A=np.asarray(U, dtype=float) @ b_matrix(cell), space_group=space_group)

    @property
    def real_space_vectors(self) -> np.ndarray:
        """Rows a, b, c (A) in the phi = 0 frame."""
        return np.linalg.inv(self.A)

    @property
    def unit_cell(self) -> gemmi.UnitCell:
        return cell_from_real_vectors(self.real_space_vectors)

    @property
    def B(self) -> np.ndarray:
        return b_matrix(self.unit_cell)

    @property
    def U(self) -> np.ndarray:
        return self.A @ np.linalg.inv(self.B)

    def replace(self, **kw) -> Crystal:
        return replace(self, **kw)

    def to_dict(self) -> dict:
        a, b, c = self.real_space_vectors
        d = {
            "__id__": "crystal",
            "real_space_a": [float(x) for x in a],
            "real_space_b": [float(x) for x in b],
            "real_space_c": [float(x) for x in c],
            "space_group_hall_symbol": _cctbx_hall(self.space_group),
        }
        d.update({k: v for k, v in self.extra.items() if k not in d})
        if self.A_at_scan_points is not None:
            d["A_at_scan_points"] = [[float(x) for x in m.ravel()] for m in self.A_at_scan_points]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Crystal:
        real = np.array([d["real_space_a"], d["real_space_b"], d["real_space_c"]], dtype=float)
        sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(d["space_group_hall_symbol"]))
        if sg is None:  # a non-standard setting: keep it as a Hall-symbol group
            raise ValueError(f"space group {d['space_group_hall_symbol']!r} is not tabulated")
        skip = {"__id__", "real_space_a", "real_space_b", "real_space_c",
                "space_group_hall_symbol", "A_at_scan_points"}
        extra = {k: v for k, v in d.items() if k not in skip}
        asp = d.get("A_at_scan_points")
        return cls(A=np.linalg.inv(real), space_group=sg,
                   A_at_scan_points=np.array(asp) if asp else None, extra=extra)


def _cctbx_hall(sg: gemmi.SpaceGroup) -> str:
    """Hall symbol as cctbx writes it (a leading space for acentric groups)."""
    h = sg.hall
    return h if h.startswith("-") else " " + h
