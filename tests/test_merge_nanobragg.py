"""merge against an independent truth: the nanoBragg C2 sweep's structure factors.

Until integrate and scale run on these images, the observations are the
simulation's expected photon counts (``I_expected`` = K F^2 P / zeta for every
diffraction event on the detector, 0 < z < 90, not in a module gap) with
Poisson counting noise and the noise of a subtracted background (0.79
photons per pixel per image, a 5 x 5 px x 3 image box), scaled by the true
K P / zeta as a perfect scaling model would. What is tested is merging in
C 1 2 1 with the sweep's real multiplicities and French-Wilson amplitudes,
against the F that nanoBragg used (c2_truth.mtz).
"""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from gonio.core.merge.merge import merge_scaled
from gonio.core.models.beam import Beam
from gonio.core.models.crystal import Crystal
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.scan import Scan
from gonio.core.reflection_table import Flags, ReflectionTable
from tests.conftest import data_path

K_ABS = 0.490858  # photons per unit F^2 P / zeta (the data's README)
BACKGROUND = 0.79 * 5 * 5 * 3  # photons under a reflection's foreground


def _observations():
    import csv
    import gzip

    with gzip.open(data_path("nanobragg_c2", "predicted_reflections.csv.gz"), "rt") as f:
        rows = list(csv.DictReader(f))
    col = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    keep = (col["z"] > 0) & (col["z"] < 90) & (col["in_gap"] == 0)
    col = {k: v[keep] for k, v in col.items()}
    rng = np.random.default_rng(2025)
    n = len(col["z"])
    counts = rng.poisson(col["I_expected"] + BACKGROUND)
    bg = rng.poisson(10 * BACKGROUND, n) / 10  # background estimated from 10x the pixels
    I = counts - bg
    var = np.maximum(I, 0) + 1.1 * BACKGROUND
    g = K_ABS * col["P"] / col["zeta"]
    hkl = np.column_stack([col["h"], col["k"], col["l"]]).astype(np.int32)
    xyz = np.column_stack([col["x_px"], col["y_px"], col["z"]])
    table = ReflectionTable({
        "id": np.zeros(n, np.int32), "miller_index": hkl, "intensity.scale.value": I,
        "intensity.scale.variance": var, "inverse_scale_factor": g, "partiality": np.ones(n),
        "xyzobs.px.value": xyz, "xyzcal.px": xyz,
        "flags": np.full(n, Flags.integrated_sum | Flags.scaled, np.uint64)}, {0: "c2"})
    cell = gemmi.UnitCell(53.2, 61.3, 69.3, 90, 93.05, 90)
    expt = Experiment(beam=Beam(wavelength=0.9795),
                      detector=Detector([Panel(origin=[-85.45648, 88.62644, -150.0],
                                               image_size=(981, 1043),
                                               pixel_size=(0.172, 0.172))]),
                      goniometer=Goniometer(), scan=Scan((1, 90), (0.0, 0.3)),
                      crystal=Crystal.from_cell_and_U(cell, np.eye(3), "C 1 2 1"),
                      identifier="c2")
    return ExperimentList([expt]), table


def test_merge_and_french_wilson_against_nanobragg_truth():
    expts, table = _observations()
    ds = merge_scaled(expts, table).datasets[0]
    truth = gemmi.read_mtz_file(str(data_path("nanobragg_c2", "c2_truth.mtz")))
    lookup = dict(zip(map(tuple, truth.make_miller_array().tolist()),
                      truth.column_with_label("F").array))
    found = np.array([tuple(h) in lookup for h in ds.merged.miller_index.tolist()])
    assert found.mean() > 0.999  # the merged ASU indices are the truth's ASU (gemmi's)
    F_true = np.array([lookup.get(tuple(h), np.nan) for h in ds.merged.miller_index.tolist()])
    ok = found & np.isfinite(ds.mean.F)
    # issue 12 asks >= 0.998 and R < 0.03 of a processed sweep (DIALS: 0.9967, 0.044); with
    # only counting noise (measured: 0.99996 and 0.012) the bounds are tighter
    assert np.corrcoef(F_true[ok] ** 2, ds.merged.intensity[ok])[0, 1] >= 0.999
    F = ds.mean.F[ok]
    k = (F @ F_true[ok]) / (F @ F)
    r = np.abs(k * F - F_true[ok]).sum() / F_true[ok].sum()
    assert r < 0.02
    assert k == pytest.approx(1.0, abs=0.005)  # the scale factors were the true ones
    assert ds.wilson_b == pytest.approx(20.0, abs=1.5)  # the simulation's B
