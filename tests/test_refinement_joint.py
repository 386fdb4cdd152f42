"""Several experiments refined jointly: two lattices in one sweep, two sweeps of one crystal."""

from __future__ import annotations

import numpy as np
from test_indexing_synthetic import strong_spots

from gonio.core.geometry.spots import centroid_px_to_mm
from gonio.core.models.crystal import Crystal
from gonio.core.models.experiment import ExperimentList
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.models.scan import Scan
from gonio.core.refinement import refine
from gonio.core.refinement.params import RefineParams
from gonio.core.simulate.models import true_models
from gonio.core.simulate.params import SimulationParams

CELL = (54.1, 58.3, 66.5, 90.0, 90.0, 90.0)


def misorientation_deg(A, B) -> float:
    R = Crystal(A=A).U @ Crystal(A=B).U.T
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def perturbed(crystal, seed):
    """The crystal turned by 0.1 deg and its cell stretched by 0.2 %."""
    rng = np.random.default_rng(seed)
    R = axis_angle_matrix(rng.normal(size=3), np.radians(0.1))
    return crystal.replace(A=R @ crystal.A / 1.002)


def test_two_lattices_in_one_sweep_refine_jointly():
    p = SimulationParams(space_group="P 21 21 21", unit_cell=CELL, n_images=100, osc=0.5,
                         n_lattices=2, lattice2_rotation=(80.0, 0.0, 0.0), d_min=2.0)
    truth, _, _ = true_models(p, np.random.default_rng(7))
    strong, hkl, lattice = strong_spots(truth, 2.0)
    strong["miller_index"] = hkl
    strong["id"] = lattice.astype(np.int32)
    # the two experiments share beam, detector, goniometer and scan: one model each
    start = ExperimentList([truth[0].replace(crystal=perturbed(truth[0].crystal, 1)),
                            truth[1].replace(crystal=perturbed(truth[1].crystal, 2),
                                             beam=truth[0].beam, detector=truth[0].detector,
                                             goniometer=truth[0].goniometer,
                                             scan=truth[0].scan)])
    centroid_px_to_mm(start, strong)
    refined, _, result = refine(start, strong, RefineParams(scan_varying=False))
    names = result.parameter_names
    assert sum(n.startswith("Detector1") for n in names) == 6
    assert not any(n.startswith("Detector2") for n in names)  # shared, refined once
    assert "Crystal2Phi1" in names
    for k in range(2):
        cell = np.array(refined[k].crystal.unit_cell.parameters[:3])
        assert np.abs(cell / CELL[:3] - 1).max() < 5e-4
        assert misorientation_deg(refined[k].crystal.A, truth[k].crystal.A) < 0.02
    assert len(result.rmsds_by_experiment) == 2
    assert all(r["RMSD_X"] < 0.25 for r in result.rmsds_by_experiment)


def test_two_sweeps_of_one_crystal_share_the_detector():
    p = SimulationParams(space_group="P 21 21 21", unit_cell=CELL, n_images=60, osc=0.5,
                         d_min=2.0)
    truth, _, _ = true_models(p, np.random.default_rng(3))
    e1 = truth[0]
    e2 = e1.replace(scan=Scan(image_range=(1, 60), oscillation=(90.0, 0.5)))
    tables = []
    for i, e in enumerate((e1, e2)):
        t, hkl, _ = strong_spots(ExperimentList([e]), 2.0, seed=i + 1)
        t["miller_index"] = hkl
        t["id"] = np.full(len(t), i, np.int32)
        tables.append(t)
    from gonio.core.reflection_table import ReflectionTable

    strong = ReflectionTable.concatenate(tables)
    pan = e1.detector[0]
    moved = e1.detector.replace(panels=[pan.replace(origin=pan.origin + [0.3, -0.2, 0.5])])
    crystal = perturbed(e1.crystal, 4)
    start = ExperimentList([e1.replace(detector=moved, crystal=crystal),
                            e2.replace(detector=moved, crystal=crystal)])
    centroid_px_to_mm(start, strong)
    refined, _, result = refine(start, strong, RefineParams(scan_varying=False))
    names = result.parameter_names
    assert not any(n.startswith("Detector2") or n.startswith("Crystal2") for n in names)
    assert refined[0].detector is refined[1].detector or np.allclose(
        refined[0].detector[0].origin, refined[1].detector[0].origin)
    err = refined[0].detector[0].origin - pan.origin
    assert np.abs(err).max() < 0.02  # mm: the 0.5 mm move undone
    cell = np.array(refined[0].crystal.unit_cell.parameters[:3])
    assert np.abs(cell / CELL[:3] - 1).max() < 5e-4
    assert misorientation_deg(refined[0].crystal.A, e1.crystal.A) < 0.02
