"""Delta-CC1/2 filtering (filtering.method=deltacchalf) finds the data that do not belong."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from scaling_synthetic import combine, make_sweep

from gonio.core.reflection_table import Flags
from gonio.core.scaling import ScalingParams, scale
from gonio.core.scaling.filtering import cc_half_sigma_tau


@pytest.fixture(scope="module")
def expt():
    return data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt")


def _scramble(table, rows, rng):
    """Intensities of ``rows`` replaced by those of other reflections (a wrong crystal)."""
    perm = rng.permutation(rows)
    for k in ("sum", "prf"):
        for part in ("value", "variance"):
            col = table[f"intensity.{k}.{part}"]
            col[rows] = col[perm]


def test_a_bad_data_set_is_removed(expt):
    rng = np.random.default_rng(0)
    sweeps = [make_sweep(expt, d_min=3.5, seed=s, identifier=f"s{s}", orientation_seed=s)
              for s in range(1, 6)]
    both = combine(sweeps)
    bad = np.flatnonzero(both.table["id"] == 2)
    _scramble(both.table, bad, rng)
    # with 5 data sets one outlier is at most (5 - 1) / sqrt(5) = 1.8 sd from the mean
    p = ScalingParams(filtering_method="deltacchalf", filtering_max_percent_removed=30,
                      filtering_stdcutoff=1.5)
    _, table, result = scale(both.experiments, both.table, p)
    assert result.filtering[0].removed == ["dataset 2"]
    assert table.get_flags(Flags.user_excluded_in_scaling)[bad].all()
    assert not table.get_flags(Flags.scaled)[bad].any()
    assert table.get_flags(Flags.scaled)[both.table["id"] != 2].mean() > 0.95
    # the second cycle finds nothing more
    assert len(result.filtering) == 2 and result.filtering[1].removed == []


def test_a_bad_image_range_is_removed(expt):
    rng = np.random.default_rng(1)
    s = make_sweep(expt, d_min=3.0)
    z = s.table["xyzobs.px.value"][:, 2]
    bad = np.flatnonzero(z < 60)  # images 1-60 of 1700: 30 % extra noise, not outliers
    f = np.exp(rng.normal(0, 0.3, len(bad)))
    for k in ("sum", "prf"):
        s.table[f"intensity.{k}.value"][bad] *= f
    p = ScalingParams(filtering_method="deltacchalf", filtering_mode="image_group",
                      filtering_group_size=20)
    _, table, result = scale(s.experiments, s.table, p)
    removed = [r for c in result.filtering for r in c.removed]
    assert sorted(removed) == ["dataset 0 images 1-20", "dataset 0 images 21-40",
                               "dataset 0 images 41-60"]
    excluded = table.get_flags(Flags.user_excluded_in_scaling)
    assert excluded[bad].all() and excluded.sum() == len(bad)


def test_cc_half_from_sums():
    rng = np.random.default_rng(2)
    truth = rng.exponential(100, 300)
    obs = np.repeat(truth, 4) + rng.normal(0, 20, 1200)
    grp = np.repeat(np.arange(300), 4)
    n = np.bincount(grp).astype(float)
    cc = cc_half_sigma_tau(n, np.bincount(grp, obs), np.bincount(grp, obs ** 2))
    # expected half-set correlation: var_t / (var_t + 2 * 400 / 4)
    var_t = np.var(truth)
    assert cc == pytest.approx(var_t / (var_t + 200.0), abs=0.02)
