"""index reports the Niggli-reduced cell of a P1 lattice (as dials.index)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.indexing.index import niggli_crystal
from gonio.core.models.crystal import Crystal


def test_an_unreduced_p1_basis_is_reported_reduced():
    # the cell seen after indexing from a badly refined geometry
    bad = Crystal.from_cell_and_U(gemmi.UnitCell(42.6, 126.0, 210.2, 26.5, 157.1, 148.4),
                                  np.eye(3))
    reduced = niggli_crystal(bad)
    cell = reduced.unit_cell
    a, b, c, al, be, ga = cell.parameters
    assert a <= b <= c < 80  # 42.6 69.1 72.2 73.0 89.1 72.8
    assert (al < 90 and be < 90 and ga < 90) or (al >= 90 and be >= 90 and ga >= 90)
    assert cell.volume == pytest.approx(bad.unit_cell.volume, rel=1e-9)  # same lattice
    M = reduced.real_space_vectors @ np.linalg.inv(bad.real_space_vectors)
    assert np.allclose(M, np.rint(M), atol=1e-6) and abs(np.linalg.det(M)) == pytest.approx(1)
    # already reduced: unchanged; a known space group keeps its setting
    assert np.allclose(niggli_crystal(reduced).A, reduced.A)
    c2 = Crystal.from_cell_and_U(gemmi.UnitCell(99.06, 31.01, 54.3, 90, 107.7, 90), np.eye(3),
                                 "C 1 2 1")
    assert niggli_crystal(c2) is c2


def test_cell_esds_follow_a_permutation_of_the_axes():
    from gonio.core.indexing.index import _permuted_esds

    esd = [0.1, 0.2, 0.3, 0.01, 0.02, 0.03]
    M = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # a' = b, b' = c, c' = a
    assert _permuted_esds(esd, M) == [0.2, 0.3, 0.1, 0.02, 0.03, 0.01]
    assert all(np.isnan(_permuted_esds(esd, np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]))))
