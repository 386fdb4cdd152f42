"""index max_lattices=2 on a sweep with two crystals that share their c axis (80 deg apart
about it), the second with fewer strong spots: both true cells, not a mixed one."""

from __future__ import annotations

import numpy as np
import pytest
from test_indexing_synthetic import compare, strong_spots

from gonio.core.indexing import IndexParams, index
from gonio.core.models.experiment import ExperimentList
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.simulate.models import true_models
from gonio.core.simulate.params import SimulationParams


@pytest.mark.slow
def test_two_lattices_sharing_an_axis_give_both_true_cells():
    p = SimulationParams(space_group="P 21 21 21", unit_cell=(54.1, 58.3, 66.5, 90, 90, 90),
                         n_images=40, osc=0.2, n_lattices=2, d_min=2.5)
    truth, _, _ = true_models(p, np.random.default_rng(0))
    c1 = truth[0].crystal
    c2 = c1.replace(A=axis_angle_matrix(c1.real_space_vectors[2], np.radians(80.0)) @ c1.A)
    truth = ExperimentList([truth[0], truth[1].replace(crystal=c2)])
    strong, _, lattice = strong_spots(truth, 2.5)
    weaker = (lattice == 1) & (np.random.default_rng(1).random(len(lattice)) > 0.6)
    strong = strong.select(~weaker)  # the second crystal: 0.6 of the spots
    found, _, result = index(ExperimentList([truth[0].replace(crystal=None)]), strong,
                             IndexParams(max_lattices=2))
    assert len(found) == 2 and result.percent_indexed > 95
    for t in truth:
        errors = [compare(f.crystal, t.crystal) for f in found]
        best = min(errors, key=lambda e: e[1])
        assert best[1] < 0.05 and best[2] < 5e-4  # orientation (deg), cell (relative)
