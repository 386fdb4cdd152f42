"""model=array (dials.scale's ArrayScalingModel) against a known applied variation.

A synthetic sweep (tests/scaling_synthetic.py: smooth scale and relative B in rotation)
with an extra term of the detector position that changes with rotation, which the
physical model cannot represent and the array model's absorption grid (detector x, y and
rotation) can. Scaling cannot fix a factor common to one resolution (equivalents share
it), so the refined factors are compared with the applied ones within each group of
equivalents, which is what merging uses.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from scaling_synthetic import make_sweep

from gonio.core.merging import merge_equivalents
from gonio.core.merging.equivalents import group_equivalents, map_to_asu
from gonio.core.reflection_table import Flags
from gonio.core.scaling import ScalingParams, scale
from gonio.core.scaling.array_model import grid_design


@pytest.fixture(scope="module")
def sweep():
    """The synthetic sweep with g = g_true * h(x, y, phi), observed afresh (Poisson)."""
    s = make_sweep(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt"), d_min=3.0,
                   absorption=0.0)
    t = s.table
    e = s.experiments[0]
    phi = e.scan.angle_from_frame(t["xyzcal.px"][:, 2])
    nx, ny = e.detector[0].image_size
    u, v = t["xyzcal.px"][:, 0] / nx - 0.5, t["xyzcal.px"][:, 1] / ny - 0.5
    h = 1 + 0.08 * u + 0.05 * v * np.cos(np.radians(phi)) - 0.06 * (u * u + v * v)
    s.g_true = s.g_true * h
    lam = s.g_true * s.i_true
    counts = np.random.default_rng(5).poisson(lam + 20.0) - 20.0
    for k in ("sum", "prf"):
        t[f"intensity.{k}.value"] = counts.astype(float)
        t[f"intensity.{k}.variance"] = lam + 20.0
    return s


def within_group_deviation(table, g_true, space_group):
    """rms and 99th percentile of log(g / g_true) about each equivalent group's mean."""
    used = table.get_flags(Flags.scaled)
    lr = np.log(table["inverse_scale_factor"][used] / g_true[used])
    grp = group_equivalents(map_to_asu(table["miller_index"][used], space_group).hkl_asu)
    n = np.bincount(grp.group)
    dev = lr - (np.bincount(grp.group, weights=lr) / n)[grp.group]
    nn = n[grp.group]
    dev = dev[nn > 1] * np.sqrt(nn[nn > 1] / (nn[nn > 1] - 1))
    return np.sqrt(np.mean(dev ** 2)), np.percentile(np.abs(dev), 99)


def test_array_model_follows_the_applied_variation(sweep):
    sg = sweep.experiments[0].crystal.space_group
    exps, table, result = scale(sweep.experiments, sweep.table, ScalingParams(model="array"))
    rms, p99 = within_group_deviation(table, sweep.g_true, sg)
    _, table_phys, _ = scale(sweep.experiments, sweep.table, ScalingParams())
    rms_phys, _ = within_group_deviation(table_phys, sweep.g_true, sg)
    unscaled = table.copy()
    unscaled["inverse_scale_factor"] = np.ones(len(table))
    rms_raw, _ = within_group_deviation(unscaled, sweep.g_true, sg)
    print(f"within groups: array {rms:.4f} (p99 {p99:.4f}), physical {rms_phys:.4f}, "
          f"unscaled {rms_raw:.4f}")
    assert rms < 0.008 and p99 < 0.025
    assert rms < 0.75 * rms_phys  # the detector term is beyond the physical model
    assert rms_raw > 0.1
    a, b = result.error_model  # Poisson errors, and the model fits them
    assert a == pytest.approx(1.0, abs=0.05) and b < 0.01
    # merged intensities closer to the truth than unscaled ones
    used = table.get_flags(Flags.scaled)
    hkl, g = table["miller_index"][used], table["inverse_scale_factor"][used]
    scaled = merge_equivalents(hkl, table["intensity.scale.value"][used] / g,
                               np.sqrt(table["intensity.scale.variance"][used]) / g, sg)
    raw = merge_equivalents(hkl, table["intensity.sum.value"][used],
                            np.sqrt(table["intensity.sum.variance"][used]), sg)
    truth = merge_equivalents(hkl, sweep.i_true[used], np.ones(used.sum()), sg)
    assert np.corrcoef(scaled.intensity, truth.intensity)[0, 1] > \
        np.corrcoef(raw.intensity, truth.intensity)[0, 1]
    # the model as DIALS stores an ArrayScalingModel
    sm = exps[0].scaling_model
    cfg = sm["configuration_parameters"]
    assert sm["__id__"] == "array" and cfg["corrections"] == ["decay", "absorption"]
    assert cfg["n_res_param"] == 12 and cfg["n_x_param"] == cfg["n_y_param"] == 5
    assert cfg["n_time_param"] == 11  # 170 deg, decay_interval 20
    assert sm["decay"]["n_parameters"] == 12 * 11
    assert sm["absorption"]["n_parameters"] == 5 * 5 * 11
    assert len(sm["absorption"]["est_standard_devs"]) == 5 * 5 * 11
    assert np.all(table["inverse_scale_factor_variance"][used] > 0)


def test_grid_smoother_as_dials():
    """DIALS's GaussianSmoother2D test case: x in [0, 1] with 1 interval, y in [0, 4] with 4,
    parameters stored x fastest, sigma 0.65 (the smaller neighbourhood, 2, sets it)."""
    p = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0])
    des = grid_design([(0.0, 1.0, 1), (0.0, 4.0, 4)], [np.array([0.5]), np.array([1.0])])
    assert des.n_param == 12 and des.index.shape == (1, 6)
    e1, e2 = np.exp(-0.5 / 0.65 ** 2), np.exp(-2.5 / 0.65 ** 2)
    assert des.value(p)[0] == pytest.approx((10 * e1 + 2 * e2) / (4 * e1 + 2 * e2), rel=1e-12)


def test_array_model_options(sweep):
    p = ScalingParams(model="array", absorption_correction=False, modulation_correction=True,
                      n_modulation_bins=4, n_resolution_bins=5)
    exps, table, result = scale(sweep.experiments, sweep.table, p)
    sm = exps[0].scaling_model
    assert sm["configuration_parameters"]["corrections"] == ["decay", "modulation"]
    assert sm["decay"]["n_parameters"] == 7 * 11 and sm["modulation"]["n_parameters"] == 36
    assert "absorption" not in sm
    assert result.models[0].summary_cells()[:4] == ["array", 0, 77, 0]
