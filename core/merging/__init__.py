"""Symmetry equivalents, merging and merging statistics (as dials.merge / iotbx.merging_statistics)."""

from gonio.core.merging.equivalents import (
    AsuMapping,
    EquivalentGroups,
    MergedIntensities,
    group_equivalents,
    map_to_asu,
    merge_equivalents,
)
from gonio.core.merging.statistics import (
    MergingStatistics,
    ResolutionEstimate,
    ShellStatistics,
    estimate_resolution,
    merging_statistics,
)

__all__ = [
    "AsuMapping", "EquivalentGroups", "MergedIntensities", "MergingStatistics",
    "ResolutionEstimate", "ShellStatistics", "estimate_resolution", "group_equivalents",
    "map_to_asu", "merge_equivalents", "merging_statistics",
]
