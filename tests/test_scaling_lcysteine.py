"""Scaling the four L-cysteine sweeps from DIALS's unscaled intensities, against DIALS's own scaling,
shell by shell.

DIALS's reference statistics are recomputed with gonio's merging code from DIALS's
``inverse_scale_factor`` and DIALS's error model (a, b from the scaling models in the
.expt files) applied to the intensities DIALS chose (Imid = 1: summation), on the
observations DIALS kept. The ``intensity.scale.variance`` column of these (DIALS 1.x) files
is not used: it is the stored error model applied on top of an earlier one (see
test_dials_variances_hold_two_error_models).

What agrees and what does not (docs/scale.md, "gonio and dials.scale"):

- CC1/2 agrees within 2 % in every shell; gonio's intensity choice (combine) picks
  summation intensities, as DIALS did.
- The scale factors DIALS 1.x wrote behave as if fitted with the integration variances as
  weights (minimisation_weights=integration brings the Rmeas ratio from 0.86-0.99 to
  0.94-1.12 per shell), though they are not at that target's minimum either.
- With the same observations, intensities and error model, gonio's scale factors alone
  give the same CC1/2 and <I/sigma> (0.5 %) and a LOWER Rmeas in every shell (by 1 to
  14 %): they fit the data better than DIALS's (a lower sum w (I - g I_h)^2 with DIALS's
  own final weights). DIALS's default reflection selection (quasi_random) does not change
  that: on these 12k observations it keeps 97.5 % of them and every statistic within 0.3 %.
- <I/sigma> follows the error model, whose b absorbs DIALS's larger scale errors; with
  DIALS's a, b applied to gonio's own scaled data it agrees to -3..+6 % per shell.
- Rmeas of a shell moves by up to 20 % with the outliers a few strong observations make
  (test_decomposition_factor_by_factor), so 2 % per shell needs DIALS's very outliers.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import lcysteine_sweeps
from scaling_synthetic import scale_deviation

from gonio.core.merging import merging_statistics
from gonio.core.merging.equivalents import group_equivalents, map_to_asu
from gonio.core.reflection_table import Flags
from gonio.core.scaling import ScalingParams, scale
from gonio.core.scaling.engine import combined_intensities
from gonio.core.scaling.error_model import apply_error_model
from gonio.core.scaling.targets import best_means


@pytest.fixture(scope="module")
def lcys():
    return lcysteine_sweeps()


@pytest.fixture(scope="module")
def runs(lcys):
    """gonio's scaling with summation intensities and with the default (combine); and with
    summation intensities and DIALS's default reflection selection (quasi_random)."""
    exps, table = lcys
    out = {choice: scale(exps, table, ScalingParams(intensity_choice=choice))
           for choice in ("sum", "combine")}
    out["sum quasi_random"] = scale(exps, table, ScalingParams(
        intensity_choice="sum", reflection_selection_method="quasi_random"))
    return out


def _stats(exps, t, g, i, v):
    c = exps[0].crystal
    return merging_statistics(t["miller_index"], i / g, np.sqrt(v) / g, c.unit_cell.parameters,
                              "P 21 21 21")


def dials_used(table):
    return ~table.get_flags(Flags.bad_for_scaling, all_bits=False) & (
        table["inverse_scale_factor"] > 0)


def dials_error_model(exps):
    return exps[0].scaling_model["configuration_parameters"]["error_model_parameters"]


def dials_intensities(exps, table):
    """DIALS's intensities (its Imid: summation) and their variances with its error model."""
    i, v = combined_intensities(table, np.arange(len(table)), 1.0)
    return i, apply_error_model(v, i, *dials_error_model(exps))


def dials_statistics(exps, table):
    t = table.select(dials_used(table))
    i, v = dials_intensities(exps, t)
    return _stats(exps, t, t["inverse_scale_factor"], i, v)


def gonio_used(scaled):
    return scaled.get_flags(Flags.scaled) & ~scaled.get_flags(Flags.bad_for_scaling, all_bits=False)


def ratios(ours, ref, attr):
    """Per-shell ratio gonio / DIALS of a statistic (the shells are the same: same d range)."""
    return np.array([getattr(a, attr) / getattr(b, attr) for a, b in zip(ours.shells, ref.shells)])


# measured per-shell ratios gonio / DIALS of the whole of gonio's scaling (own observations,
# intensity choice, scales and error model): the bounds are the measured ranges (sum: Rmeas
# 0.744-1.050, I/sigma 0.842-1.252; combine: 0.739-1.043, 0.839-1.210), rounded out by 0.01
RMEAS = {"sum": (0.73, 1.06), "combine": (0.72, 1.06)}  # combine chooses summation, as DIALS
ISIGMA = {"sum": (0.83, 1.27), "combine": (0.82, 1.22)}


@pytest.mark.parametrize("choice", ["sum", "combine"])
def test_per_shell_statistics_against_dials(lcys, runs, choice):
    exps, table = lcys
    ref = dials_statistics(exps, table)
    new_exps, scaled, result = runs[choice]
    t = scaled.select(gonio_used(scaled))
    ours = _stats(new_exps, t, t["inverse_scale_factor"], t["intensity.scale.value"],
                  t["intensity.scale.variance"])
    assert result.imid == 1.0  # summation intensities, as DIALS chose for these data
    assert len(ours.shells) == len(ref.shells) == 20
    assert ours.overall.n_obs == pytest.approx(ref.overall.n_obs, rel=0.02)
    cc = ratios(ours, ref, "cc_half")
    rm = ratios(ours, ref, "r_meas")
    isig = ratios(ours, ref, "mean_i_over_sigma")
    print(f"{choice}: CC1/2 {cc.min():.4f}-{cc.max():.4f}, Rmeas {rm.min():.3f}-{rm.max():.3f}, "
          f"I/sigma {isig.min():.3f}-{isig.max():.3f}; overall Rmeas {ours.overall.r_meas:.4f} "
          f"(DIALS {ref.overall.r_meas:.4f}), I/sigma {ours.overall.mean_i_over_sigma:.1f} "
          f"(DIALS {ref.overall.mean_i_over_sigma:.1f}), error model {result.error_model}")
    assert np.all(np.abs(cc - 1) < 0.02)
    assert ours.overall.cc_half == pytest.approx(ref.overall.cc_half, rel=0.002)
    assert RMEAS[choice][0] < rm.min() and rm.max() < RMEAS[choice][1]
    assert ISIGMA[choice][0] < isig.min() and isig.max() < ISIGMA[choice][1]
    assert ours.overall.r_meas < ref.overall.r_meas
    # the <I/sigma> difference is the error model's: DIALS's a, b on gonio's scaled data
    iv, vv = combined_intensities(table, np.arange(len(table)), result.imid)
    sel = gonio_used(scaled)
    same_em = _stats(new_exps, table.select(sel), scaled["inverse_scale_factor"][sel], iv[sel],
                     apply_error_model(vv[sel], iv[sel], *dials_error_model(exps)))
    isig_same = ratios(same_em, ref, "mean_i_over_sigma")
    assert 0.97 < isig_same.min() and isig_same.max() < 1.06
    assert same_em.overall.mean_i_over_sigma == pytest.approx(ref.overall.mean_i_over_sigma,
                                                              rel=0.005)
    a, b = result.error_model
    assert 1.15 < a < 1.35 and 0.025 < b < 0.05


def test_dials_reflection_selection_changes_nothing_here(lcys, runs):
    """DIALS's default selection (quasi_random, at least 2000 groups or 50000 reflections)
    leaves out, on these 12k observations in 1578 groups, only the groups measured once or
    with mean I/sigma <= 1 (which hardly weigh in the minimisation): the statistics, and so
    the gap to DIALS's Rmeas, stay those of use_all."""
    exps, table = lcys
    stats = {}
    for key in ("sum", "sum quasi_random"):
        new_exps, scaled, result = runs[key]
        t = scaled.select(gonio_used(scaled))
        stats[key] = _stats(new_exps, t, t["inverse_scale_factor"], t["intensity.scale.value"],
                            t["intensity.scale.variance"])
    sel = runs["sum quasi_random"][2].selection
    assert 0.9 * len(sel.mask) < sel.mask.sum() < len(sel.mask)
    for attr in ("r_meas", "mean_i_over_sigma", "cc_half"):
        r = ratios(stats["sum quasi_random"], stats["sum"], attr)
        assert np.all(np.abs(r - 1) < 0.003), (attr, r)
    ref = dials_statistics(exps, table)
    rm = ratios(stats["sum quasi_random"], ref, "r_meas")
    assert rm.min() < 0.75  # still far from DIALS's in the shells where gonio's is lowest


def test_gonio_scales_fit_dials_observations_better(lcys, runs):
    """Like for like: DIALS's observations, intensities and error model; only the scale
    factors differ (gonio's from its summation run)."""
    exps, table = lcys
    used = dials_used(table)
    t = table.select(used)
    i, v = dials_intensities(exps, t)
    g_dials = t["inverse_scale_factor"]
    g_gonio = runs["sum"][1]["inverse_scale_factor"][used]
    ref = _stats(exps, t, g_dials, i, v)
    ours = _stats(exps, t, g_gonio, i, v)
    cc = ratios(ours, ref, "cc_half")
    rm = ratios(ours, ref, "r_meas")
    isig = ratios(ours, ref, "mean_i_over_sigma")
    print(f"like for like: CC1/2 {cc.min():.4f}-{cc.max():.4f}, Rmeas {rm.min():.3f}-"
          f"{rm.max():.3f}, I/sigma {isig.min():.4f}-{isig.max():.4f}")
    assert np.all(np.abs(cc - 1) < 0.005)
    assert np.all(np.abs(isig - 1) < 0.002)
    assert 0.855 < rm.min() and rm.max() < 0.99  # lower in every shell (0.863-0.988)
    # because DIALS's scales are not at the minimum of the scaling target with DIALS's own
    # final weights (its error model applied once, or twice as in intensity.scale.variance)
    grp = group_equivalents(map_to_asu(t["miller_index"], exps[0].crystal.space_group).hkl_asu)
    for var in (v, t["intensity.scale.variance"]):
        chi2 = []
        for g in (g_gonio, g_dials):
            ih, _ = best_means(grp.group, len(grp), i, 1 / var, g)
            chi2.append(np.sum((i - g * ih[grp.group]) ** 2 / var))
        print(f"target with DIALS's weights: gonio's scales / DIALS's {chi2[0] / chi2[1]:.3f}")
        assert chi2[0] < 0.96 * chi2[1]
    # the scale factors agree with DIALS's up to the free overall scale and B
    dev, _ = scale_deviation(g_gonio, g_dials, t["d"])
    print(f"rms difference from DIALS's scales {np.sqrt(np.mean(dev ** 2)):.4f}")
    assert 0.015 < np.sqrt(np.mean(dev ** 2)) < 0.035


def test_dials_error_model_minimisation_on_dials_scales(lcys):
    """DIALS's own (individual) minimisation on DIALS's scaled observations gives DIALS's a, b
    (1.008, 0.053 in the .expt, from DIALS 1.x)."""
    from gonio.core.scaling.error_model_dials import refine_individual

    exps, table = lcys
    t = table.select(dials_used(table))
    i, v = combined_intensities(t, np.arange(len(t)), 1.0)
    grp = group_equivalents(map_to_asu(t["miller_index"], exps[0].crystal.space_group).hkl_asu)
    a, b = refine_individual(grp.group, len(grp), i, v, t["inverse_scale_factor"])
    a_dials, b_dials = dials_error_model(exps)
    assert a == pytest.approx(a_dials, abs=0.03)
    assert b == pytest.approx(b_dials, rel=0.2)


def test_scaling_model_in_dials_layout(lcys, runs):
    exps, table = lcys
    new_exps, scaled, _ = runs["combine"]
    for old, new in zip(exps, new_exps):
        a, b = old.scaling_model, new.scaling_model
        for part in ("scale", "decay", "absorption"):
            assert b[part]["n_parameters"] == a[part]["n_parameters"]
        ca, cb = a["configuration_parameters"], b["configuration_parameters"]
        for key in ("scale_rot_interval", "decay_rot_interval", "s_norm_fac", "lmax",
                    "abs_surface_weight"):
            assert cb[key] == pytest.approx(ca[key], rel=2e-3)  # DIALS rounds some to 3 figures
        assert cb["valid_osc_range"] == pytest.approx(ca["valid_osc_range"])
    # flags: every row is scaled, an outlier, or excluded (by the user or for scaling)
    f = [scaled.get_flags(x) for x in (Flags.scaled, Flags.outlier_in_scaling,
                                        Flags.user_excluded_in_scaling, Flags.excluded_for_scaling)]
    assert np.all(np.sum(f, axis=0) == 1)


@pytest.fixture(scope="module")
def dials_choices(lcys):
    """gonio's scaling with the choices the DIALS 1.x run behind these files made: summation
    intensities (its Imid = 1), only reflections integrated both ways (DIALS 1.x under
    intensity_choice=combine) and the integration variances as minimisation weights."""
    exps, table = lcys
    return scale(exps, table, ScalingParams(intensity_choice="sum", require_both_integrated=True,
                                            minimisation_weights="integration"))


def _ranges(ours, ref):
    return {a: ratios(ours, ref, a) for a in ("cc_half", "r_meas", "mean_i_over_sigma")}


def _within(r, attr, lo, hi):
    x = r[attr]
    assert lo < x.min() and x.max() < hi, (attr, np.round(x, 3))


def test_decomposition_factor_by_factor(lcys, runs, dials_choices):
    """From DIALS's reference (its scales, its error model, its observations), one of gonio's
    ingredients at a time, per shell (docs/scale.md, "gonio and dials.scale")."""
    exps, table = lcys
    ref = dials_statistics(exps, table)
    used = dials_used(table)
    i, v_raw = combined_intensities(table, np.arange(len(table)), 1.0)
    v = apply_error_model(v_raw, i, *dials_error_model(exps))
    g_dials = table["inverse_scale_factor"]
    _, scaled, result = runs["sum"]
    ours_used = gonio_used(scaled)
    sum_only = table.get_flags(Flags.integrated_sum) & ~table.get_flags(Flags.integrated_prf)

    def swap(sel, g=g_dials, var=v, inten=i):
        t = table.select(sel)
        r = _ranges(_stats(exps, t, g[sel], inten[sel], var[sel]), ref)
        print({k: f"{x.min():.3f}-{x.max():.3f}" for k, x in r.items()})
        return r

    # the error model (a, b): only <I/sigma> moves
    r = swap(used, var=apply_error_model(v_raw, i, *result.error_model))
    _within(r, "cc_half", 0.999, 1.001)
    _within(r, "r_meas", 0.985, 1.015)
    _within(r, "mean_i_over_sigma", 0.83, 1.26)
    # the scale factors: Rmeas lower in every shell, the rest unchanged
    r = swap(used, g=scaled["inverse_scale_factor"])
    _within(r, "cc_half", 0.999, 1.006)
    _within(r, "r_meas", 0.85, 0.99)
    _within(r, "mean_i_over_sigma", 0.998, 1.002)
    # the scale factors fitted with DIALS 1.x's weights (the integration variances): Rmeas
    # on both sides of DIALS's
    r = swap(used, g=dials_choices[1]["inverse_scale_factor"])
    _within(r, "cc_half", 0.99, 1.002)
    _within(r, "r_meas", 0.93, 1.13)
    assert r["r_meas"].min() < 0.97 and r["r_meas"].max() > 1.03
    _within(r, "mean_i_over_sigma", 0.998, 1.002)
    # the reflections integrated by summation only (DIALS 1.x left them out): the outer shells
    r = swap(used | (ours_used & sum_only))
    _within(r, "cc_half", 0.98, 1.002)
    _within(r, "r_meas", 0.999, 1.26)
    assert np.argmax(r["r_meas"]) >= 17
    _within(r, "mean_i_over_sigma", 0.97, 1.06)
    # gonio's outliers (rejected on its own scales and sigmas) instead of DIALS's
    r = swap(ours_used & ~sum_only)
    _within(r, "cc_half", 0.985, 1.001)
    _within(r, "r_meas", 0.88, 1.23)
    _within(r, "mean_i_over_sigma", 0.995, 1.005)
    # profile-fitted intensities instead of summation ones (DIALS's and gonio's choice)
    i0, v0 = combined_intensities(table, np.arange(len(table)), 0.0)
    r = swap(used, inten=i0, var=apply_error_model(v0, i0, *dials_error_model(exps)))
    _within(r, "cc_half", 0.98, 1.002)
    _within(r, "r_meas", 0.97, 2.1)
    _within(r, "mean_i_over_sigma", 0.98, 1.03)


def test_dials_choices(lcys, dials_choices):
    """With DIALS's choices gonio scales the same observations as DIALS (all but 0.5 %) and
    its CC1/2 agrees within 2 % in every shell (0.985-1.001); Rmeas (0.80-1.20) and
    <I/sigma> (0.82-1.22) do not (docs/scale.md, "gonio and dials.scale": the scales DIALS
    1.x reached are not the minimum of its own target, and its sigmas come from its error
    model applied twice)."""
    exps, table = lcys
    ref = dials_statistics(exps, table)
    new_exps, scaled, result = dials_choices
    assert result.intensity_choice == "sum"
    considered = scaled.get_flags(Flags.scaled) | scaled.get_flags(Flags.outlier_in_scaling)
    dials_considered = dials_used(table) | table.get_flags(Flags.outlier_in_scaling)
    assert (considered ^ dials_considered).sum() < 0.005 * dials_considered.sum()
    t = scaled.select(gonio_used(scaled))
    ours = _stats(new_exps, t, t["inverse_scale_factor"], t["intensity.scale.value"],
                  t["intensity.scale.variance"])
    assert ours.overall.n_obs == pytest.approx(ref.overall.n_obs, rel=0.01)
    r = _ranges(ours, ref)
    print({k: f"{x.min():.3f}-{x.max():.3f}" for k, x in r.items()}, result.error_model)
    _within(r, "cc_half", 0.98, 1.005)
    _within(r, "r_meas", 0.78, 1.22)
    _within(r, "mean_i_over_sigma", 0.80, 1.24)


def test_dials_variances_hold_two_error_models(lcys):
    """The intensity.scale.variance DIALS 1.x wrote is its final error model (a = 1.008,
    b = 0.053, as stored in the .expt) applied on top of an earlier one: within 4 % it is one
    model a = 1.07, b = 0.073 on the integration variances, i.e. the stored one after
    (1.06, 0.054). DIALS's <I/sigma> from that column is 24.2, against 31.8 with the stored
    model applied once (the reference the other tests use)."""
    exps, table = lcys
    used = dials_used(table)
    t = table.select(used)
    i, v = combined_intensities(t, np.arange(len(t)), 1.0)
    fv = t["intensity.scale.variance"]
    x = np.column_stack([v, i * i]) / fv[:, None]
    (a2, a2b2), *_ = np.linalg.lstsq(x, np.ones(len(fv)), rcond=None)
    a_eff, b_eff = np.sqrt(a2), np.sqrt(a2b2 / a2)
    assert 1.05 < a_eff < 1.09 and 0.070 < b_eff < 0.076
    assert np.all(np.abs(apply_error_model(v, i, a_eff, b_eff) / fv - 1) < 0.045)
    a, b = dials_error_model(exps)
    first = (np.sqrt(a2 / a ** 2), np.sqrt(a2b2 / a ** 2 - b ** 2) / np.sqrt(a2 / a ** 2))
    assert first[0] == pytest.approx(1.06, abs=0.01) and first[1] == pytest.approx(0.054, abs=0.003)
    twice = apply_error_model(apply_error_model(v, i, *first), i, a, b)
    assert np.all(np.abs(twice / fv - 1) < 0.045)
    from_file = _stats(exps, t, t["inverse_scale_factor"], i, fv)
    assert from_file.overall.mean_i_over_sigma == pytest.approx(24.2, abs=0.1)
    assert dials_statistics(exps, table).overall.mean_i_over_sigma == pytest.approx(31.8, abs=0.1)
