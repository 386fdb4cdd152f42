"""Outlier rejection as dials.scale's standard algorithm (NormDevOutlierRejection), on the
cases DIALS's own tests use: the worst deviant of each group of three or more, again and
again; weights capped at 10x the group's median. Pairs: see test_a_discrepant_pair_loses_both."""

from __future__ import annotations

import numpy as np

from gonio.core.merging.equivalents import group_equivalents, map_to_asu
from gonio.core.scaling.targets import group_median, reject_outliers


def _outliers(hkl, intensity, variance, space_group):
    grp = group_equivalents(map_to_asu(np.asarray(hkl), space_group).hkl_asu)
    return reject_outliers(grp.group, len(grp), np.asarray(intensity, float),
                           np.asarray(variance, float), np.ones(len(intensity)), 6.0)


def test_worst_first_in_groups_of_three_or_more():
    hkl = [(0, 0, 1)] * 4 + [(0, 0, 2)] * 5 + [(0, 0, 23), (0, 0, 3)]
    i = [1.0, 1.0, 1.0, 20.0, 1.0, 1.0, 20.0, 400.0, 500.0, 10.0, 10.0]
    out = _outliers(hkl, i, np.ones(len(i)), "C 1 2 1")
    assert list(np.flatnonzero(out)) == [3, 6, 7, 8]  # DIALS: 20; then 500, 400, 20


def test_tiny_sigma_zeros_do_not_set_the_mean():
    """Three zero intensities with tiny variances among ~3600 +- 95: without the weight cap
    they would pull the mean of the others to zero and every good observation would look
    like an outlier."""
    i = [3560.84231, 3433.66407, 3830.64235, 0.20552, 3786.59537, 4009.98652, 0.0, 3578.91470,
         3549.19151, 3379.58616, 3686.38610, 3913.42869, 0.0, 3608.84869, 3681.11110]
    v = [10163.98104, 9577.90389, 9702.84868, 3.77427, 8244.70685, 9142.38221, 1.51118,
         9634.53782, 9870.73103, 9078.23488, 8977.26984, 8712.91360, 1.78802, 7473.26521,
         10075.49862]
    out = _outliers([(0, 0, 1)] * len(i), i, v, "P 1")
    assert list(np.flatnonzero(out)) == [3, 6, 12]


def test_a_discrepant_pair_loses_both():
    """Two observations 900 sigma apart: either may be wrong, so neither is kept (DIALS keeps
    both); a pair that agrees stays."""
    out = _outliers([(1, 2, 3), (1, 2, 3), (2, 2, 3), (2, 2, 3)], [100.0, 1000.0, 50.0, 52.0],
                    [1.0, 1.0, 1.0, 1.0], "P 1")
    assert list(out) == [True, True, False, False]


def test_group_median():
    group = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    v = np.array([3.0, 1.0, 2.0, 5.0, 7.0, 4.0, 1.0, 3.0, 2.0])
    assert np.allclose(group_median(group, 4, v)[:3], [2.0, 6.0, 2.5])
    assert np.isnan(group_median(group, 4, v)[3])


def _simple(hkl, intensity, variance, space_group):
    from gonio.core.scaling.targets import reject_outliers_simple

    grp = group_equivalents(map_to_asu(np.asarray(hkl), space_group).hkl_asu)
    return reject_outliers_simple(grp.group, len(grp), np.asarray(intensity, float),
                                  np.asarray(variance, float), np.ones(len(intensity)), 6.0)


def test_simple_rejects_in_one_pass_against_the_whole_group():
    """outlier_rejection=simple (dials.scale's SimpleNormDevOutlierRejection): one deviant
    among equals goes, as with standard (20 among 1s: z = 14.25 / sqrt(3/4) = 16.5; the
    others are at z = 5.5); several deviants in one group pull its mean so far that the
    whole group goes, which is why standard (worst first, against the others) is the
    default."""
    hkl = [(0, 0, 1)] * 4 + [(0, 0, 2)] * 5 + [(0, 0, 3)] * 2
    i = [1.0, 1.0, 1.0, 20.0, 1.0, 1.0, 20.0, 400.0, 500.0, 10.0, 10.0]
    out = _simple(hkl, i, np.ones(len(i)), "P 1")
    assert list(np.flatnonzero(out)) == [3, 4, 5, 6, 7, 8]
    std = _outliers(hkl, i, np.ones(len(i)), "P 1")
    assert list(np.flatnonzero(std)) == [3, 6, 7, 8]
    # a single observation is never an outlier; a discrepant pair loses both, an agreeing one
    # neither
    out = _simple([(1, 2, 3), (1, 2, 3), (2, 2, 3), (2, 2, 3), (3, 3, 3)],
                  [100.0, 1000.0, 50.0, 52.0, 1e6], np.ones(5), "P 1")
    assert list(out) == [True, True, False, False, False]
