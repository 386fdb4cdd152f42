"""Observed centroids to mm, s1 and rlp against DIALS's own columns in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from gonio.core.geometry.spots import centroid_px_to_mm, map_to_reciprocal_space
from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.reflection_table import Flags, ReflectionTable


def _observed(refl: ReflectionTable) -> ReflectionTable:
    ids = np.where(refl["id"] < 0, 0, refl["id"])
    return ReflectionTable({"xyzobs.px.value": refl["xyzobs.px.value"],
                            "xyzobs.px.variance": refl["xyzobs.px.variance"],
                            "id": ids, "panel": refl["panel"]})


def _rel(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_x4_xyzobs_mm_equals_dials():
    el = read_expt(data_path("x4_xds", "indexed.expt"))
    refl = read_refl(data_path("x4_xds", "indexed.refl"))
    t = _observed(refl)
    centroid_px_to_mm(el, t)
    assert _rel(t["xyzobs.mm.value"], refl["xyzobs.mm.value"]).max() < 1e-6
    np.testing.assert_allclose(t["xyzobs.mm.variance"], refl["xyzobs.mm.variance"], rtol=1e-6, atol=0)


def test_x4_s1_and_rlp_match_dials():
    """DIALS wrote s1 and rlp in indexed.refl during indexing, with the geometry of an
    earlier refinement cycle than the final model in indexed.expt: the ray of DIALS's s1 meets
    the final detector 0.016 mm (0.1 px) away from the spot, an offset affine in position. So
    agreement with the final model is at the 1e-4 level, not 1e-6; the exact conventions
    (frame, rotation sense, fixed/setting rotations) are tested on l-cysteine below, and the
    rlps here must equal A.h of the DIALS indexing to within the refinement residuals."""
    el = read_expt(data_path("x4_xds", "indexed.expt"))
    refl = read_refl(data_path("x4_xds", "indexed.refl"))
    t = _observed(refl)
    centroid_px_to_mm(el, t)
    map_to_reciprocal_space(el, t)
    assert _rel(t["s1"], refl["s1"]).max() < 2e-4
    assert np.allclose(np.linalg.norm(t["s1"], axis=1), 1 / el[0].beam.wavelength, rtol=1e-12)
    indexed = refl["id"] >= 0
    assert _rel(t["rlp"], refl["rlp"])[indexed].max() < 5e-4
    # rlp = A h for DIALS's indices: residuals well below a reciprocal-lattice spacing
    Ah = refl["miller_index"][indexed].astype(float) @ el[0].crystal.A.T
    dr = np.linalg.norm(t["rlp"][indexed] - Ah, axis=1)
    spacing = 1 / 42.45
    assert np.median(dr) < 0.05 * spacing and dr.max() < 0.3 * spacing


@pytest.mark.parametrize("wedge", ["11", "23"])
def test_l_cysteine_parallax_and_multi_axis(wedge):
    """Pilatus with the parallax correction (Si 0.32 mm) and a two-axis goniometer."""
    el = read_expt(data_path("l_cysteine_wedges", f"{wedge}_integrated.expt"))
    refl = read_refl(data_path("l_cysteine_wedges", f"{wedge}_integrated.refl"))
    panel = el[0].detector[0]
    assert panel.has_parallax
    t = _observed(refl)
    centroid_px_to_mm(el, t)
    obs = refl["xyzobs.mm.value"]
    # rows DIALS measured with the final geometry: integrated or used in refinement (strong
    # spots left out of refinement keep mm values from the geometry before refinement)
    ok = refl.get_flags(Flags.integrated_sum) | refl.get_flags(Flags.used_in_refinement)
    assert ok.sum() > 50
    assert _rel(t["xyzobs.mm.value"][ok], obs[ok]).max() < 1e-6
    # predictions: DIALS's xyzcal.mm -> px through gonio's inverse conversion equals xyzcal.px
    cal_mm, cal_px = refl["xyzcal.mm"][ok], refl["xyzcal.px"][ok]
    px = panel.millimeter_to_pixel(cal_mm[:, :2])
    assert np.abs(px - cal_px[:, :2]).max() < 1e-6
    # predicted s1 from xyzcal.mm equals DIALS's s1 (the calculated diffracted beam)
    lab = panel.lab_coord(cal_mm[:, :2])
    s1 = lab / np.linalg.norm(lab, axis=1)[:, None] / el[0].beam.wavelength
    assert _rel(s1, refl["s1"][ok]).max() < 1e-6
    # and its rlp, rotated back through S, R(-phi) and F, is A h exactly
    t2 = ReflectionTable({"xyzobs.mm.value": cal_mm, "id": t["id"][ok], "panel": t["panel"][ok]})
    map_to_reciprocal_space(el, t2)
    Ah = refl["miller_index"][ok].astype(float) @ el[0].crystal.A.T
    assert _rel(t2["rlp"], Ah).max() < 1e-6


def test_px_mm_round_trip_with_parallax():
    el = read_expt(data_path("l_cysteine_wedges", "11_integrated.expt"))
    panel = el[0].detector[0]
    rng = np.random.default_rng(1)
    px = rng.uniform(0, panel.image_size, size=(1000, 2))
    back = panel.millimeter_to_pixel(panel.pixel_to_millimeter(px))
    # the correction is evaluated at slightly different points each way: sub-0.01 px as in dxtbx
    assert np.abs(back - px).max() < 0.01
    shift = np.abs(panel.pixel_to_millimeter(px) - px * panel.pixel_size).max()
    assert 0.001 < shift < 0.2  # mm: a Si sensor of 0.32 mm at 0.69 A shifts spots visibly
