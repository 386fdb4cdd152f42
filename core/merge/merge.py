"""Merging scaled data into the asymmetric unit, with French-Wilson amplitudes (dials.merge).

The scaled reflections (``scaled`` flag, intensity.scale / inverse_scale_factor,
partials combined, partiality >= ``partiality_threshold``; the DIALS export
filter) of each wavelength group are merged with
:func:`gonio.core.merging.merge_equivalents` (inverse-variance weighted
means): IMEAN SIGIMEAN N, and with ``anomalous`` I(+) SIGI(+) N(+) I(-)
SIGI(-) N(-). With ``truncate``, amplitudes F SIGF (and F(+) SIGF(+) F(-)
SIGF(-) DANO SIGDANO) come from French & Wilson (1978)
(:mod:`gonio.core.merge.french_wilson`), as dials.merge does them: with
``anomalous``, on I(+) and I(-) separately (with the expected intensity of
the mean data at their resolution) and F SIGF as the weighted mean of F(+)
and F(-); without, on IMEAN. With fewer than
``fw_min_reflections`` reflections the flat prior of DIALS is used instead:
|F| = sqrt((I + sqrt(I^2 + 2 sigma^2)) / 2), sigF = sigma / (2 |F|).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gemmi
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.export.filtering import is_scaled
from gonio.core.export.prepare import prepare
from gonio.core.merge.french_wilson import binned_mean_intensity, posterior_moments
from gonio.core.merge.params import MergeParams
from gonio.core.merge.wilson import wilson_b
from gonio.core.merging import (
    MergedIntensities,
    MergingStatistics,
    merge_equivalents,
    merging_statistics,
)
from gonio.core.models.experiment import ExperimentList
from gonio.core.reflection_table import Flags, ReflectionTable


class MergeInputError(GonioError):
    pass


@dataclass
class Amplitudes:
    """F, sigF per unique reflection (NaN: rejected by French-Wilson or absent)."""

    F: np.ndarray
    sigF: np.ndarray
    rejected: np.ndarray


@dataclass
class MergedDataset:
    """The merged data of one wavelength group (one MTZ dataset)."""

    wavelength: float
    experiments: list[int]
    merged: MergedIntensities
    d: np.ndarray  # A, of each unique reflection
    n_observations: int
    mean: Amplitudes | None = None
    plus: Amplitudes | None = None
    minus: Amplitudes | None = None
    dano: np.ndarray | None = None
    sigdano: np.ndarray | None = None
    wilson_b: float = float("nan")
    fraction_changed: float = float("nan")  # French-Wilson |F| vs sqrt(I): share changed > 1%
    flat_prior: bool = False
    statistics: MergingStatistics | None = None
    observations: dict = field(default_factory=dict)  # hkl, I, sigI of the merged observations


@dataclass
class MergeResult:
    datasets: list[MergedDataset]
    space_group: gemmi.SpaceGroup
    cell: gemmi.UnitCell


def flat_prior_amplitudes(I, sigI) -> Amplitudes:
    """|F| = sqrt((I + sqrt(I^2 + 2 sigma^2))/2), sigF = sigma/(2|F|) (DIALS fallback)."""
    F = np.sqrt((I + np.sqrt(I * I + 2 * sigI * sigI)) / 2)
    return Amplitudes(F, sigI / (2 * F), np.zeros(len(I), bool))


def _amplitudes(I, sigI, Sigma, centric, flat: bool) -> Amplitudes:
    present = np.isfinite(I) & (sigI > 0)
    F = np.full(len(I), np.nan)
    sigF = np.full(len(I), np.nan)
    rejected = np.zeros(len(I), bool)
    if present.any():
        if flat:
            a = flat_prior_amplitudes(I[present], sigI[present])
        else:
            r = posterior_moments(I[present], sigI[present], Sigma[present], centric[present])
            a = Amplitudes(r.F, r.sigF, r.rejected)
        F[present], sigF[present], rejected[present] = a.F, a.sigF, a.rejected
    return Amplitudes(F, sigF, rejected)


def mean_of_mates(plus: Amplitudes, minus: Amplitudes) -> Amplitudes:
    """F SIGF from F(+) and F(-): their inverse-variance weighted mean, as dials.merge does
    (cctbx merge_equivalents of the anomalous amplitudes); one mate alone where the other is
    missing or rejected."""
    def weight(a):
        ok = np.isfinite(a.F) & (a.sigF > 0)
        return np.where(ok, 1.0 / np.where(ok, a.sigF, 1.0) ** 2, 0.0), np.where(ok, a.F, 0.0)

    wp, fp = weight(plus)
    wm, fm = weight(minus)
    sw = wp + wm
    present = sw > 0
    F = np.where(present, (wp * fp + wm * fm) / np.where(present, sw, 1.0), np.nan)
    sigF = np.where(present, 1.0 / np.sqrt(np.where(present, sw, 1.0)), np.nan)
    return Amplitudes(F, sigF, ~present & (plus.rejected | minus.rejected))


def _check_resolution(table: ReflectionTable, cell: gemmi.UnitCell, d_min, d_max) -> None:
    d = cell.calculate_d_array(table["miller_index"])
    lo, hi = float(d.min()), float(d.max())
    if d_min is not None and d_min >= hi or d_max is not None and d_max <= lo \
            or d_min is not None and d_max is not None and d_min >= d_max:
        raise MergeInputError(
            f"The resolution limits d_min={d_min}, d_max={d_max} leave no reflections: the "
            f"data extend from {hi:.2f} to {lo:.2f} A. Choose d_min below {hi:.2f} A "
            "(and d_max above d_min).")


def merge_scaled(experiments: ExperimentList, table: ReflectionTable,
                 params: MergeParams | None = None) -> MergeResult:
    """Merge the scaled reflections of ``experiments`` (module docstring)."""
    from gonio.core.export.crystal_info import best_unit_cell

    p = params or MergeParams()
    if not is_scaled(table):
        raise MergeInputError(
            "These reflections are not scaled (no intensity.scale.value / inverse_scale_factor "
            "columns): run scale first; merge works on scaled data.")
    if table.get_flags(Flags.scaled).any():
        table = table.select(table.get_flags(Flags.scaled))
    cell = gemmi.UnitCell(*p.best_unit_cell) if p.best_unit_cell else best_unit_cell(experiments)
    _check_resolution(table, cell, p.d_min, p.d_max)
    prep = prepare(experiments, table, ["scale"], partiality_threshold=p.partiality_threshold,
                   combine_partials=p.combine_partials, d_min=p.d_min, d_max=p.d_max,
                   best_cell=cell.parameters, wavelength_tolerance=p.wavelength_tolerance)
    t = prep.table
    ops = prep.space_group.operations()
    datasets = []
    for group in prep.wavelengths:
        sel = np.isin(t["expt"], group.experiments)
        if not sel.any():
            continue
        hkl = t["miller_index"][sel]
        I = t["intensity.scale.value"][sel]
        sigI = np.sqrt(t["intensity.scale.variance"][sel])
        merged = merge_equivalents(hkl, I, sigI, prep.space_group, anomalous=p.anomalous)
        d = cell.calculate_d_array(merged.miller_index)
        eps = ops.epsilon_factor_without_centering_array(merged.miller_index).astype(float)
        ds = MergedDataset(group.weighted_mean, list(group.experiments), merged, d, int(sel.sum()),
                           observations={"hkl": hkl, "I": I, "sigI": sigI})
        ds.wilson_b = wilson_b(merged.intensity, d, eps)
        try:
            ds.statistics = merging_statistics(hkl, I, sigI, cell, prep.space_group,
                                               n_bins=p.n_bins)
        except ValueError:
            ds.statistics = None
        if p.truncate:
            flat = len(merged) < p.fw_min_reflections
            Sigma = binned_mean_intensity(merged.intensity, d, eps)
            ds.flat_prior = flat
            if p.anomalous:
                ds.plus = _amplitudes(merged.i_plus, merged.sigma_plus, Sigma, merged.centric, flat)
                ds.minus = _amplitudes(merged.i_minus, merged.sigma_minus, Sigma, merged.centric,
                                       flat)
                ds.dano = ds.plus.F - ds.minus.F
                ds.sigdano = np.sqrt(ds.plus.sigF**2 + ds.minus.sigF**2)
                ds.mean = mean_of_mates(ds.plus, ds.minus)
            else:
                ds.mean = _amplitudes(merged.intensity, merged.sigma, Sigma, merged.centric, flat)
            root = np.sqrt(np.clip(merged.intensity, 0, None))
            ok = np.isfinite(ds.mean.F)
            changed = np.abs(ds.mean.F[ok] - root[ok]) > 0.01 * ds.mean.F[ok]
            ds.fraction_changed = float(changed.mean()) if ok.any() else float("nan")
        datasets.append(ds)
    return MergeResult(datasets, prep.space_group, cell)
