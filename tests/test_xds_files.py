"""XDS.INP and SPOT.XDS of the x4 data set against DIALS's own import of the same sweep."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from gonio.core.errors import GonioError
from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl
from gonio.core.io.xds import align_reference_frame, read_spot_xds, read_xds_inp
from gonio.core.reflection_table import Flags


@pytest.fixture(scope="module")
def xds():
    return read_xds_inp(data_path("x4_xds", "XDS.INP"))


@pytest.fixture(scope="module")
def dials():
    return read_expt(data_path("x4_xds", "imported_experiments.json"))[0]


def test_geometry_matches_dials_import(xds, dials):
    e = xds.experiments[0]
    p, q = e.detector[0], dials.detector[0]
    assert np.allclose(p.fast_axis, q.fast_axis) and np.allclose(p.slow_axis, q.slow_axis)
    assert p.distance == pytest.approx(190.18) and q.distance == pytest.approx(190.18)
    assert p.origin[2] == pytest.approx(q.origin[2])
    assert p.image_size == q.image_size == (2463, 2527)
    assert p.pixel_size == pytest.approx(q.pixel_size)
    assert e.beam.wavelength == pytest.approx(dials.beam.wavelength)
    assert np.allclose(e.beam.direction, dials.beam.direction)
    assert np.allclose(e.goniometer.rotation_axis, dials.goniometer.rotation_axis)
    assert e.scan.oscillation == pytest.approx(dials.scan.oscillation)  # image 1 starts at 0
    assert e.scan.image_range == (1, 900)
    assert p.mask == q.mask  # UNTRUSTED_RECTANGLE -> the DIALS Pilatus gap mask, exactly
    assert p.mu == pytest.approx(q.mu) and p.thickness == pytest.approx(q.thickness)
    assert p.px_mm_strategy == q.px_mm_strategy and p.trusted_range[0] == q.trusted_range[0]


def test_beam_centre(xds, dials):
    e = xds.experiments[0]
    centre = e.detector[0].beam_centre_mm(e.beam.s0) / 0.172
    assert centre == pytest.approx((1279.1 - 0.5, 1235.3 - 0.5))  # ORGX/ORGY, XDS pixel centres
    # this XDS.INP gives ORGX/ORGY swapped relative to the image header that DIALS read
    # (Beam_xy = 1235.34, 1279.08; DIALS's own refinement gives 1236.1, 1278.3)
    header = dials.detector[0].beam_centre_mm(dials.beam.s0) / 0.172
    assert centre[::-1] == pytest.approx(header, abs=0.6)


def test_cell_space_group_template(xds):
    assert xds.unit_cell.parameters == pytest.approx((42.45, 42.45, 39.80, 90, 90, 90))
    assert xds.space_group.number == 89
    assert xds.experiments[0].imageset.template == str(data_path("x4_xds") / "centroid_####.cbf")


def test_spot_xds(xds):
    t = read_spot_xds(data_path("x4_xds", "SPOT.XDS"), xds.experiments)
    assert len(t) == 742
    assert (t["flags"] == Flags.strong).all() and (t["id"] == 0).all() and (t["panel"] == 0).all()
    assert t.experiment_identifiers == {0: xds.experiments[0].identifier}
    assert t["miller_index.xds"].dtype == np.int32
    assert t["miller_index.xds"][0].tolist() == [3, 1, 0]
    assert t["xyzobs.px.value"][0] == pytest.approx([1313.97 + 0.5, 1301.07 + 0.5, 227.44])
    assert t["intensity.sum.value"][0] == 1545.0
    assert (t["xyzobs.px.variance"] == 0.25).all()


def test_spot_xds_centroids_agree_with_dials(xds):
    """On images 1-9, gonio's converted SPOT.XDS centroids sit on DIALS's strong spots."""
    from scipy.spatial import cKDTree

    t = read_spot_xds(data_path("x4_xds", "SPOT.XDS"), xds.experiments)
    d = read_refl(data_path("x4_xds", "indexed.refl"))["xyzobs.px.value"]
    xyz = t["xyzobs.px.value"]
    xyz = xyz[(xyz[:, 2] > 1) & (xyz[:, 2] < 8.5)]
    dist, idx = cKDTree(d).query(xyz)
    ok = dist < 2
    assert ok.sum() > 200
    offset = np.median(xyz[ok] - d[idx[ok]], axis=0)
    assert np.all(np.abs(offset) < 0.1), offset


def test_align_reference_frame():
    R = align_reference_frame([0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1])
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0]) and np.allclose(R @ [0, 1, 0], [0, 0, 1])
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_rotated_xds_frame(tmp_path):
    """A beam along XDS -x and axis along XDS z maps to the DIALS frame (beam -z, axis +x)."""
    text = data_path("x4_xds", "XDS.INP").read_text()
    text = (
        text.replace("INCIDENT_BEAM_DIRECTION=0.0 0.0 1.0", "INCIDENT_BEAM_DIRECTION=-1.0 0.0 0.0")
        .replace("ROTATION_AXIS= 1.0 0.0 0.0", "ROTATION_AXIS= 0.0 0.0 1.0")
        .replace(
            "DIRECTION_OF_DETECTOR_X-AXIS= 1.0 0.0 0.0", "DIRECTION_OF_DETECTOR_X-AXIS= 0.0 0.0 1.0"
        )
        .replace(
            "DIRECTION_OF_DETECTOR_Y-AXIS= 0.0 1.0 0.0", "DIRECTION_OF_DETECTOR_Y-AXIS= 0.0 1.0 0.0"
        )
    )
    (tmp_path / "XDS.INP").write_text(text)
    e = read_xds_inp(tmp_path / "XDS.INP").experiments[0]
    ref = read_xds_inp(data_path("x4_xds", "XDS.INP")).experiments[0]
    assert np.allclose(e.beam.direction, [0, 0, 1]) and np.allclose(
        e.goniometer.rotation_axis, [1, 0, 0]
    )
    assert np.allclose(e.detector[0].origin, ref.detector[0].origin)
    assert np.allclose(e.detector[0].fast_axis, ref.detector[0].fast_axis)


def test_bad_xds_files(tmp_path):
    with pytest.raises(GonioError, match="does not exist"):
        read_xds_inp(tmp_path / "XDS.INP")
    (tmp_path / "XDS.INP").write_text("JOB=XYCORR\nNX=100 NY=100\n")
    with pytest.raises(GonioError, match="QX"):
        read_xds_inp(tmp_path / "XDS.INP")
    (tmp_path / "SPOT.XDS").write_text("1 2\n3 4\n")
    with pytest.raises(GonioError, match="SPOT.XDS"):
        read_spot_xds(tmp_path / "SPOT.XDS")
    (tmp_path / "SPOT.XDS").write_text("a b c d\n")
    with pytest.raises(GonioError, match="not a SPOT.XDS"):
        read_spot_xds(tmp_path / "SPOT.XDS")
