"""Indexing real data: MyD88 3D ED (wrong metadata) and the x4 Pilatus sweep (XDS / DIALS)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from conftest import data_path

from gonio.core.indexing import IndexParams, index
from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.models.experiment import ExperimentList
from gonio.core.refinement import RefinementParams
from gonio.core.reflection_table import ReflectionTable

PUBLISHED_MYD88 = gemmi.UnitCell(99.06, 31.01, 54.30, 90, 107.7, 90)  # C 1 2 1
X4_XDS_CELL = (42.45, 42.45, 39.80)


def _myd88(axis):
    experiments = read_expt(data_path("myd88", "imported.expt"))
    strong = read_refl(data_path("myd88", "strong.refl"))
    experiments = ExperimentList(
        e.replace(goniometer=e.goniometer.with_rotation_axis(axis)) for e in experiments)
    params = IndexParams(refinement=RefinementParams(detector_fix=["distance"],
                                                     goniometer_fix=[]))
    return index(experiments, strong, params)


@pytest.fixture(scope="module")
def myd88_right_sense():
    return _myd88((-107, -122, 0))


def test_myd88_indexes_with_the_corrected_rotation_axis(myd88_right_sense):
    experiments, refl, result = myd88_right_sense
    assert result.percent_indexed >= 85.0
    x, y, z = result.rmsds
    assert x < 1.0 and y < 1.0  # px
    assert z < 0.35  # images
    assert result.rmsds_by_experiment[0]["Nref"] > 400
    # the refined axis stays close to the one set on import
    axis = experiments[0].goniometer.rotation_axis
    start = np.array([-107.0, -122.0, 0.0]) / np.hypot(107, 122)
    # (the import value is a rough one: the refined axis settles 3.4 deg from it)
    assert np.degrees(np.arccos(axis @ start)) < 4.0
    assert "Goniometer1GAMMA1" in result.refined_parameters
    assert "Goniometer1GAMMA2" in result.refined_parameters


def test_myd88_opposite_rotation_sense_is_clearly_worse_in_z(myd88_right_sense):
    _, _, right = myd88_right_sense
    _, _, wrong = _myd88((107, 122, 0))
    assert wrong.percent_indexed >= 85.0  # it still indexes ...
    assert wrong.rmsds[0] < 1.0 and wrong.rmsds[1] < 1.0  # ... and X/Y look fine,
    assert wrong.rmsds[2] > 1.4 * right.rmsds[2]  # but the rotation direction is worse


def test_myd88_cell_is_20_percent_too_large_because_the_distance_is_wrong(myd88_right_sense):
    """The imported distance (2193 mm) is wrong and held fixed: every length comes out
    about 1.2 x the published cell, so the volume ratio of the primitive cells is about
    1.2^3 = 1.73."""
    experiments, _, result = myd88_right_sense
    found = experiments[0].crystal.unit_cell
    assert "Detector1Dist" not in result.refined_parameters
    assert "Detector1Shift1" in result.refined_parameters
    published_primitive_volume = PUBLISHED_MYD88.volume / 2  # C-centred
    ratio = found.volume / published_primitive_volume
    assert ratio == pytest.approx(1.2**3, rel=0.06)
    # reduced cells compare length by length: sorted primitive lengths of C2 x 1.2
    gv = gemmi.GruberVector(PUBLISHED_MYD88, "C", False)
    gv.niggli_reduce()
    ref = sorted(gv.get_cell().parameters[:3])
    mine = sorted(found.parameters[:3])
    assert np.array(mine) / np.array(ref) == pytest.approx([1.2, 1.2, 1.2], abs=0.025)
    assert result.crystals[0]["space_group"] == "P 1"


def _x4_strong_from_dials():
    indexed = read_refl(data_path("x4_xds", "indexed.refl"))
    strong = ReflectionTable({k: indexed[k] for k in (
        "xyzobs.px.value", "xyzobs.px.variance", "panel", "flags", "intensity.sum.value")})
    strong["id"] = np.zeros(len(strong), np.int32)
    return strong, indexed


def _agreement(mine, theirs):
    """Fraction of spots indexed by both whose hkl agree after the best integer M."""
    h1, h2 = mine.astype(float), theirs.astype(float)
    M = np.rint(np.linalg.lstsq(h2, h1, rcond=None)[0])
    assert abs(abs(np.linalg.det(M)) - 1) < 1e-9  # a change of basis of the same lattice
    return np.mean(np.all(h2 @ M == h1, axis=1))


def test_x4_dials_spots_index_like_dials():
    experiments = read_expt(data_path("x4_xds", "imported_experiments.json"))
    strong, dials = _x4_strong_from_dials()
    found, refl, result = index(experiments, strong, IndexParams())
    assert result.percent_indexed > 90.0
    lengths = sorted(found[0].crystal.unit_cell.parameters[:3])
    # a 1.8-degree wedge: P1 lengths within 1% of the full-sweep XDS cell, a ~ b
    assert lengths == pytest.approx(sorted(X4_XDS_CELL), rel=0.01)
    assert lengths[2] / lengths[1] == pytest.approx(1.0, abs=0.01)
    both = (refl["id"] >= 0) & (dials["id"] >= 0)
    assert both.sum() > 500
    assert _agreement(refl["miller_index"][both], dials["miller_index"][both]) > 0.95


def test_x4_dials_spots_with_known_symmetry_match_dials_cell():
    experiments = read_expt(data_path("x4_xds", "imported_experiments.json"))
    strong, dials = _x4_strong_from_dials()
    found, refl, result = index(experiments, strong, IndexParams(space_group="P 4 2 2"))
    dials_cell = read_expt(data_path("x4_xds", "indexed.expt"))[0].crystal.unit_cell
    cell = found[0].crystal.unit_cell.parameters
    assert cell == pytest.approx(dials_cell.parameters, rel=1e-3)
    both = (refl["id"] >= 0) & (dials["id"] >= 0)
    assert np.mean(np.all(refl["miller_index"][both] == dials["miller_index"][both], axis=1)) \
        > 0.95


def test_x4_xds_spots_index_and_agree_with_xds_hkl():
    """SPOT.XDS over the 900-image sweep. XDS.INP's ORGX/ORGY are swapped relative to the
    image header (and to DIALS's refined beam centre, fast 1236 / slow 1278 px), so the
    beam centre is set from the DIALS import, as a user would after checking it."""
    from gonio.core.io.xds import read_spot_xds, read_xds_inp

    experiments = read_xds_inp(data_path("x4_xds", "XDS.INP")).experiments
    header = read_expt(data_path("x4_xds", "imported_experiments.json"))[0]
    expt = experiments[0]
    panel = expt.detector[0]
    s0 = expt.beam.s0
    shift = panel.beam_centre_mm(s0) - header.detector[0].beam_centre_mm(header.beam.s0)
    panel = panel.replace(origin=panel.origin + shift[0] * panel.fast_axis
                          + shift[1] * panel.slow_axis)
    experiments = ExperimentList([expt.replace(detector=expt.detector.replace(panels=[panel]))])
    strong = read_spot_xds(data_path("x4_xds", "SPOT.XDS"), experiments)
    found, refl, result = index(experiments, strong, IndexParams())
    assert result.percent_indexed > 90.0
    lengths = sorted(found[0].crystal.unit_cell.parameters[:3])
    assert lengths == pytest.approx(sorted(X4_XDS_CELL), rel=0.005)
    angles = found[0].crystal.unit_cell.parameters[3:]
    assert angles == pytest.approx((90, 90, 90), abs=0.5)
    xds_hkl = strong["miller_index.xds"]
    both = (refl["id"] >= 0) & np.any(xds_hkl != 0, axis=1)
    assert both.sum() > 600
    assert _agreement(refl["miller_index"][both], xds_hkl[both]) > 0.95
