"""Observed centroids to millimetres, diffracted-beam vectors and rlps.

As in DIALS (``dials.algorithms.indexing`` / ``centroid_px_to_mm``):

* ``xyzobs.mm.value`` = (x_mm, y_mm, phi_rad): x, y through the panel's
  pixel-to-mm conversion (parallax included), phi from the scan;
  variances scale by pixel size^2 and oscillation width (rad)^2;
* ``s1`` = unit(lab position) / wavelength;
* ``rlp`` = F^-1 R(datum, -phi) S^-1 (s1 - s0): the reciprocal-lattice
  point rotated back to the phi = 0 crystal frame (1/A).
"""

from __future__ import annotations

import numpy as np

from ..models.experiment import ExperimentList
from ..models.rotation import rotate_vectors
from ..reflection_table import ReflectionTable


def centroid_px_to_mm(experiments: ExperimentList, refl: ReflectionTable) -> None:
    """Fill ``xyzobs.mm.value`` and ``xyzobs.mm.variance`` from the px columns (in place)."""
    xyz_px = refl["xyzobs.px.value"]
    var_px = refl["xyzobs.px.variance"] if "xyzobs.px.variance" in refl else np.zeros_like(xyz_px)
    xyz_mm = np.zeros_like(xyz_px)
    var_mm = np.zeros_like(xyz_px)
    ids = refl["id"]
    panels = refl["panel"].astype(np.int64) if "panel" in refl else np.zeros(len(refl), np.int64)
    for i_exp, expt in enumerate(experiments):
        for i_panel, panel in enumerate(expt.detector):
            sel = (ids == i_exp) & (panels == i_panel)
            if not sel.any():
                continue
            xyz_mm[sel, :2] = panel.pixel_to_millimeter(xyz_px[sel, :2])
            px = np.asarray(panel.pixel_size)
            var_mm[sel, :2] = var_px[sel, :2] * px**2
        sel = ids == i_exp
        scan = expt.scan
        if scan is not None and scan.oscillation[1] != 0:
            xyz_mm[sel, 2] = np.deg2rad(scan.angle_from_frame(xyz_px[sel, 2]))
            var_mm[sel, 2] = var_px[sel, 2] * np.deg2rad(scan.oscillation[1]) ** 2
    refl["xyzobs.mm.value"] = xyz_mm
    refl["xyzobs.mm.variance"] = var_mm


def map_to_reciprocal_space(experiments: ExperimentList, refl: ReflectionTable) -> None:
    """Fill ``s1`` and ``rlp`` (1/A) from ``xyzobs.mm.value`` (in place)."""
    xyz_mm = refl["xyzobs.mm.value"]
    s1 = np.zeros_like(xyz_mm)
    rlp = np.zeros_like(xyz_mm)
    ids = refl["id"]
    panels = refl["panel"].astype(np.int64) if "panel" in refl else np.zeros(len(refl), np.int64)
    for i_exp, expt in enumerate(experiments):
        s0 = expt.beam.s0
        for i_panel, panel in enumerate(expt.detector):
            sel = (ids == i_exp) & (panels == i_panel)
            if not sel.any():
                continue
            lab = panel.lab_coord(xyz_mm[sel, :2])
            s1[sel] = lab / np.linalg.norm(lab, axis=1)[:, None] / expt.beam.wavelength
        sel = ids == i_exp
        S = s1[sel] - s0
        gonio = expt.goniometer
        if gonio is not None and expt.scan is not None and expt.scan.oscillation[1] != 0:
            S = S @ np.linalg.inv(gonio.setting_rotation).T
            S = rotate_vectors(S, gonio.rotation_axis_datum, -xyz_mm[sel, 2])
            S = S @ np.linalg.inv(gonio.fixed_rotation).T
        rlp[sel] = S
    refl["s1"] = s1
    refl["rlp"] = rlp
