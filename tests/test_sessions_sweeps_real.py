"""Four real L-cysteine sweeps (../shared/data/l_cysteine_4_sweeps_scaled), indexed per sweep
and jointly from the spots DIALS found, against DIALS's own crystal model.

The sweeps are one crystal measured in four settings of a multi-axis goniometer (two with
different phi axes, two at kappa settings given by the goniometer's fixed rotation); DIALS
processed them into one crystal model. The images are not in the data folder, so the
spots are the strong-flagged rows of DIALS's reflection files (their observed centroids).
"""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from conftest import data_path

from gonio.core.indexing import index
from gonio.core.indexing.index import IndexingError, same_crystal
from gonio.core.indexing.params import IndexParams
from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable

FILES = ("scaled_20_25", "scaled_30", "scaled_35")


@pytest.fixture(scope="module")
def lcys():
    folder = data_path("l_cysteine_4_sweeps_scaled")
    experiments, parts = ExperimentList(), []
    for name in FILES:
        el = read_expt(folder / f"{name}.expt")
        t = read_refl(folder / f"{name}.refl")
        t = t.select(t.get_flags(Flags.strong))
        parts.append(ReflectionTable({
            "xyzobs.px.value": t["xyzobs.px.value"], "xyzobs.px.variance": t["xyzobs.px.variance"],
            "panel": t["panel"], "id": (t["id"] + len(experiments)).astype(np.int32),
            "flags": np.full(len(t), Flags.strong, np.uint64)}))
        experiments.extend(el)
    dials = [e.crystal for e in experiments]
    imported = ExperimentList(e.replace(crystal=None) for e in experiments)
    return imported, ReflectionTable.concatenate(parts), dials


def _reduced(cell) -> np.ndarray:
    g = gemmi.GruberVector(gemmi.UnitCell(*cell.parameters), None, True)
    g.niggli_reduce()
    return np.array(g.cell_parameters())


@pytest.mark.slow
def test_each_sweep_and_joint_against_dials(lcys):
    experiments, strong, dials = lcys
    assert len(experiments) == 4
    el, table, result = index(experiments, strong, IndexParams(joint_indexing=False))
    assert len({id(e.crystal) for e in el}) == 4
    for e, ref in zip(el, dials):
        # each sweep alone: DIALS's cell within 1.5% (its refined distance and cell are
        # correlated on one sweep), its orientation within 1 deg in every setting
        np.testing.assert_allclose(_reduced(e.crystal.unit_cell), _reduced(ref.unit_cell),
                                   rtol=0.015)
        same, angle = same_crystal(ref, e.crystal)
        assert same and angle < 1.0
    assert all(r["% indexed"] > 85 for r in result.indexed_table)

    el, table, result = index(experiments, strong, IndexParams(joint_indexing=True))
    assert len({id(e.crystal) for e in el}) == 1  # one crystal across the four settings
    # jointly the cell is DIALS's (from its joint refinement and scaling) within 0.2%
    np.testing.assert_allclose(_reduced(el[0].crystal.unit_cell), _reduced(dials[0].unit_cell),
                               rtol=2e-3)
    same, angle = same_crystal(dials[0], el[0].crystal)
    assert same and angle < 0.2
    assert all(r["% indexed"] > 85 for r in result.indexed_table)
    assert set(np.unique(table["id"]).tolist()) <= {-1, 0, 1, 2, 3}


def test_joint_refused_when_one_sweep_is_another_crystal(lcys):
    """A sweep's goniometer made wrong (its fixed kappa rotation dropped): one crystal
    model no longer fits it, and joint indexing says so instead of a half-indexed model."""
    experiments, strong, _ = lcys
    bad = ExperimentList(experiments[2:4])
    bad[1] = bad[1].replace(goniometer=bad[1].goniometer.replace(fixed_rotation=np.eye(3)))
    sub = strong.select(strong["id"] >= 2)
    sub["id"] = sub["id"] - 2
    with pytest.raises(IndexingError, match="joint_indexing=False"):
        index(bad, sub, IndexParams(joint_indexing=True, n_macro_cycles=2))
