"""Merging statistics overall and in resolution shells (iotbx.merging_statistics, as DIALS prints them).

Definitions (unmerged observations I_hi of unique reflection h, n_h of them):

- shells: ``n_bins`` shells of equal reciprocal-space volume (equal steps of
  d*^3) between the data's d_max and d_min, as cctbx's ``setup_binner``;
- completeness: unique observed / unique possible (gemmi's complete set of
  the cell and space group, systematic absences excluded); systematically
  absent observations are left out of every statistic;
- <I>, <I/sigma>: means over unique reflections of the merged (inverse
  variance weighted) intensity and of merged I / sigma(I);
- Rmerge = sum_h sum_i |I_hi - <I_h>| / sum_h sum_i I_hi, Rmeas with the
  factor sqrt(n/(n-1)), Rpim with sqrt(1/(n-1)) (Diederichs & Karplus 1997,
  Weiss 2001), <I_h> the merged (inverse-variance weighted) mean as cctbx's
  ``merge_equivalents_obs`` takes it, over reflections with n_h >= 2;
- CC1/2 by the sigma-tau method (Assmann, Brehm & Diederichs 2016, J. Appl.
  Cryst. 49, 1021): with sigma_y^2 the variance of the per-reflection means
  and sigma_e^2 the mean of s_h^2 / n_h (s_h^2 the unbiased spread of the
  observations), CC1/2 = (sigma_y^2 - sigma_e^2) / (sigma_y^2 + sigma_e^2),
  i.e. the expected correlation of two half-data-set means, over reflections
  with n_h >= 2;
- CC_ano: correlation of the anomalous differences I(+) - I(-) of two random
  halves of the observations (seeded, reproducible), acentric reflections
  with both mates in both halves; anomalous completeness: acentric
  reflections with both mates observed / acentric reflections possible;
  anomalous multiplicity: mean observations per mate of those pairs.

The resolution estimate follows dials.estimate_resolution: a tanh fit of
CC1/2 against d*^2 read at ``cc_half=0.3``, and a log-polynomial fit of
merged <I/sigma> read at ``misigma=1.0``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import gemmi
import numpy as np

from gonio.core.merging.equivalents import as_space_group, group_equivalents, map_to_asu


@dataclass
class ShellStatistics:
    """Statistics of one resolution shell (or overall). Completeness values are fractions (0-1)."""

    d_max: float
    d_min: float
    n_obs: int
    n_unique: int
    n_possible: int
    multiplicity: float
    completeness: float
    mean_i: float
    mean_i_over_sigma: float
    r_merge: float
    r_meas: float
    r_pim: float
    cc_half: float
    cc_anom: float
    anom_completeness: float
    anom_multiplicity: float


@dataclass
class ResolutionEstimate:
    """Suggested high-resolution cut-offs (A) as dials.estimate_resolution; None: not reached."""

    cc_half: float | None
    i_over_sigma: float | None
    cc_half_limit: float = 0.3
    misigma_limit: float = 1.0
    d_min_data: float = 0.0

    @property
    def suggested(self) -> float:
        """The CC1/2 cut-off (DIALS's default criterion), else the data limit."""
        return self.cc_half if self.cc_half is not None else self.d_min_data


@dataclass
class MergingStatistics:
    overall: ShellStatistics
    shells: list[ShellStatistics]
    anomalous: bool
    resolution: ResolutionEstimate
    space_group: str = ""
    notes: list[str] = field(default_factory=list)

    HEADERS = ("d_max", "d_min", "#obs", "#uniq", "mult.", "%comp", "<I>", "<I/sI>", "r_mrg",
               "r_meas", "r_pim", "cc1/2", "cc_ano")

    def table_rows(self) -> list[list[str]]:
        """Rows as iotbx/DIALS print the table: one per shell, then the overall row; a
        figure a shell cannot define (CC1/2 without two observations of any reflection,
        R factors at multiplicity 1, the anomalous CC without Friedel pairs) is "-"."""
        def f(value: float, spec: str) -> str:  # "-": undefined (no pairs, no multiplicity)
            return format(value, spec) if np.isfinite(value) else "-"

        def row(s: ShellStatistics):
            return [f(s.d_max, ".2f"), f(s.d_min, ".2f"), f"{s.n_obs}", f"{s.n_unique}",
                    f(s.multiplicity, ".2f"), f(100 * s.completeness, ".2f"), f(s.mean_i, ".1f"),
                    f(s.mean_i_over_sigma, ".1f"), f(s.r_merge, ".3f"), f(s.r_meas, ".3f"),
                    f(s.r_pim, ".3f"), f(s.cc_half, ".3f") + ("*" if _significant(s) else ""),
                    f(s.cc_anom, ".3f")]
        return [row(s) for s in self.shells] + [row(self.overall)]

    def metrics(self) -> dict[str, float]:
        """Key figures (overall and outer shell) for a step record."""
        o, s = self.overall, self.shells[-1]
        out = {"cc_half": o.cc_half, "cc_half_outer": s.cc_half, "r_meas": o.r_meas,
               "r_meas_outer": s.r_meas, "i_over_sigma": o.mean_i_over_sigma,
               "i_over_sigma_outer": s.mean_i_over_sigma, "completeness": o.completeness,
               "completeness_outer": s.completeness, "multiplicity": o.multiplicity,
               "d_min": o.d_min, "suggested_d_min": self.resolution.suggested}
        if self.anomalous:
            out["cc_anom"] = o.cc_anom
        return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in out.items()}


def _significant(s: ShellStatistics) -> bool:
    """CC1/2 significant at the 0.1% level (one-sided t-test, as DIALS marks it with *)."""
    from scipy.special import stdtr  # Student's t CDF (lighter than scipy.stats)

    n = s.n_unique
    if n < 3 or not np.isfinite(s.cc_half) or abs(s.cc_half) >= 1:
        return bool(np.isfinite(s.cc_half) and s.cc_half >= 1)
    tval = s.cc_half * np.sqrt((n - 2) / (1 - s.cc_half ** 2))
    return bool(stdtr(n - 2, -tval) < 0.001)  # the upper tail P(T > tval)


def _as_cell(unit_cell) -> gemmi.UnitCell:
    if isinstance(unit_cell, gemmi.UnitCell):
        return unit_cell
    return gemmi.UnitCell(*[float(x) for x in unit_cell])


def shell_edges(d_max: float, d_min: float, n_bins: int) -> np.ndarray:
    """d at the n_bins+1 shell limits (descending), equal volume (equal steps of d*^3)."""
    s3 = np.linspace(d_max ** -3.0, d_min ** -3.0, n_bins + 1)
    return s3 ** (-1.0 / 3.0)


def _bin_of(d: np.ndarray, edges: np.ndarray) -> np.ndarray:
    s3 = d ** -3.0
    e3 = edges ** -3.0
    return np.clip(np.searchsorted(e3, s3, side="right") - 1, 0, len(edges) - 2)


#: fewest Friedel pairs (measured in both halves) for a CC_ano: below it the figure is noise
#: (a handful of strong pairs gave -0.8 on data without anomalous signal)
MIN_ANOMALOUS_PAIRS = 20


def _corr(x, y) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _ratio(num, den) -> float:
    return float(num / den) if den != 0 else float("nan")


def merging_statistics(hkl, intensity, sigma, unit_cell, space_group, anomalous: bool = False,
                       n_bins: int = 20, d_min: float | None = None, d_max: float | None = None,
                       cc_half_limit: float = 0.3, misigma_limit: float = 1.0,
                       seed: int = 0) -> MergingStatistics:
    """Merging statistics of unmerged, scaled observations.

    ``hkl`` (N, 3), ``intensity`` and ``sigma`` (N,) (observations without a
    positive finite sigma are ignored), ``unit_cell`` (gemmi.UnitCell or six
    numbers), ``space_group`` (gemmi.SpaceGroup or symbol). Raises
    ValueError when no reflection is left.
    """
    sg = as_space_group(space_group)
    cell = _as_cell(unit_cell)
    hkl = np.asarray(hkl).reshape(-1, 3)
    intensity = np.asarray(intensity, float)
    sigma = np.asarray(sigma, float)
    ok = np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0) & hkl.any(axis=1)
    ok &= ~sg.operations().systematic_absences(hkl.astype(np.int32)) if len(hkl) else ok
    d_obs = cell.calculate_d_array(hkl.astype(np.int32)) if len(hkl) else np.zeros(0)
    if d_min is not None:
        ok &= d_obs >= d_min
    if d_max is not None:
        ok &= d_obs <= d_max
    hkl, intensity, sigma = hkl[ok], intensity[ok], sigma[ok]
    if len(hkl) == 0:
        raise ValueError("no observations with a positive sigma in the resolution range")
    m = map_to_asu(hkl, sg)
    g = group_equivalents(m.hkl_asu)
    d = cell.calculate_d_array(g.hkl)
    dmax_data, dmin_data = float(d.max()), float(d.min())
    edges = shell_edges(dmax_data * (1 + 1e-6), dmin_data * (1 - 1e-6), n_bins)
    gbin = _bin_of(d, edges)

    # complete set (unique, no systematic absences)
    full = gemmi.make_miller_array(cell, sg, dmin_data * (1 - 1e-6), dmax_data * (1 + 1e-6),
                                   unique=True)
    full = full[~sg.operations().systematic_absences(full)] if len(full) else full
    dfull = cell.calculate_d_array(full) if len(full) else np.zeros(0)
    keep = (dfull >= dmin_data * (1 - 1e-6)) & (dfull <= dmax_data * (1 + 1e-6))
    full, dfull = full[keep], dfull[keep]
    fbin = _bin_of(dfull, edges)
    acentric_full = ~sg.operations().centric_flag_array(full).astype(bool) if len(full) else \
        np.zeros(0, bool)

    # per-group quantities
    n = g.count.astype(float)
    w = 1.0 / sigma ** 2
    sw = g.sum(w)
    i_merged = g.sum(w * intensity) / sw
    sig_merged = 1.0 / np.sqrt(sw)
    sum_i = g.sum(intensity)
    mean_unw = sum_i / n
    sum_abs = g.sum(np.abs(intensity - i_merged[g.group]))  # R factors: about the merged mean
    dev = intensity - mean_unw[g.group]
    s2 = np.where(n > 1, g.sum(dev ** 2) / np.maximum(n - 1, 1), np.nan)
    multi = n >= 2

    # anomalous pairs
    centric_g = np.zeros(len(g), bool)
    centric_g[g.group] = m.centric
    ga = group_equivalents(m.hkl_asu, m.friedel_minus)
    parent = np.empty(len(ga), np.int64)
    parent[ga.group] = g.group
    n_plus = np.zeros(len(g))
    n_minus = np.zeros(len(g))
    np.add.at(n_plus, parent[~ga.minus], ga.count[~ga.minus])
    np.add.at(n_minus, parent[ga.minus], ga.count[ga.minus])
    pair = (n_plus > 0) & (n_minus > 0) & ~centric_g
    dano_a, dano_b = _half_anomalous_differences(ga, parent, len(g), intensity, seed)

    def stats(sel_g: np.ndarray, sel_full: np.ndarray, dmx: float, dmn: float) -> ShellStatistics:
        n_u = int(sel_g.sum())
        n_o = int(n[sel_g].sum())
        n_p = int(sel_full.sum())
        sm = sel_g & multi
        den = sum_i[sm].sum()
        nm = n[sm]
        r_merge = _ratio(sum_abs[sm].sum(), den)
        r_meas = _ratio((np.sqrt(nm / (nm - 1)) * sum_abs[sm]).sum(), den)
        r_pim = _ratio((np.sqrt(1 / (nm - 1)) * sum_abs[sm]).sum(), den)
        if sm.sum() >= 2:
            var_y = np.var(mean_unw[sm], ddof=1)
            var_e = np.mean(s2[sm] / nm)
            cc_half = float((var_y - var_e) / (var_y + var_e)) if var_y + var_e > 0 else float("nan")
        else:
            cc_half = float("nan")
        both = sel_g & np.isfinite(dano_a) & np.isfinite(dano_b)
        cc_anom = (_corr(dano_a[both], dano_b[both]) if both.sum() >= MIN_ANOMALOUS_PAIRS
                   else float("nan"))
        n_acen = int((sel_full & acentric_full).sum())
        sp = sel_g & pair
        return ShellStatistics(
            d_max=dmx, d_min=dmn, n_obs=n_o, n_unique=n_u, n_possible=n_p,
            multiplicity=_ratio(n_o, n_u), completeness=_ratio(n_u, n_p),
            mean_i=float(np.mean(i_merged[sel_g])) if n_u else float("nan"),
            mean_i_over_sigma=float(np.mean(i_merged[sel_g] / sig_merged[sel_g])) if n_u else float("nan"),
            r_merge=r_merge, r_meas=r_meas, r_pim=r_pim, cc_half=cc_half, cc_anom=cc_anom,
            anom_completeness=_ratio(int(sp.sum()), n_acen),
            anom_multiplicity=float(np.mean(np.concatenate([n_plus[sp], n_minus[sp]]))) if sp.any()
            else float("nan"))

    shells = [stats(gbin == b, fbin == b, float(edges[b]), float(edges[b + 1])) for b in range(n_bins)]
    for s, b in zip(shells, range(n_bins)):
        sel = gbin == b
        if sel.any():
            s.d_max, s.d_min = float(d[sel].max()), float(d[sel].min())
    overall = stats(np.ones(len(g), bool), np.ones(len(full), bool), dmax_data, dmin_data)
    res = estimate_resolution(shells, cc_half_limit, misigma_limit)
    return MergingStatistics(overall, shells, anomalous, res, sg.xhm())


def _half_anomalous_differences(ga, parent, n_unique: int, intensity, seed: int):
    """I(+) - I(-) per unique reflection from two random halves of each mate's observations."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(ga.group)), ga.group))
    start = np.concatenate([[0], np.cumsum(ga.count)[:-1]])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(start, ga.count)
    half = rank % 2  # alternate within each group: halves differ by at most one observation
    out = []
    for h in (0, 1):
        sel = half == h
        cnt = np.bincount(ga.group[sel], minlength=len(ga))
        mean = np.bincount(ga.group[sel], weights=intensity[sel], minlength=len(ga)) / \
            np.maximum(cnt, 1)
        plus = np.full(n_unique, np.nan)
        minus = np.full(n_unique, np.nan)
        have = cnt > 0
        plus[parent[have & ~ga.minus]] = mean[have & ~ga.minus]
        minus[parent[have & ga.minus]] = mean[have & ga.minus]
        out.append(plus - minus)
    return out[0], out[1]


def estimate_resolution(shells: list[ShellStatistics], cc_half_limit: float = 0.3,
                        misigma_limit: float = 1.0) -> ResolutionEstimate:
    """Resolution cut-offs from shell statistics as dials.estimate_resolution.

    CC1/2: least-squares fit of ``(1 - tanh((x - x0) / r)) / 2`` to CC1/2
    against x = d*^2, solved for CC1/2 = ``cc_half_limit``. Merged I/sigma:
    a degree-6 polynomial fit of log(<I/sigma>) against d*^2, the first d
    where it drops below ``misigma_limit``. None when the limit is not
    reached within the data.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    good = [s for s in shells if s.n_unique > 0]
    d_min_data = min(s.d_min for s in good) if good else 0.0
    x = np.array([(s.d_max ** -2 + s.d_min ** -2) / 2 for s in good])
    cc = np.array([s.cc_half for s in good])
    isig = np.array([s.mean_i_over_sigma for s in good])
    d_cc = None
    sel = np.isfinite(cc)
    if sel.sum() >= 3:
        def f(x, x0, r):
            return 0.5 * (1 - np.tanh((x - x0) / r))
        try:
            with warnings.catch_warnings():  # a flat CC1/2 leaves the covariance undefined
                warnings.simplefilter("ignore", OptimizeWarning)
                p, _ = curve_fit(f, x[sel], cc[sel],
                                 p0=[x[sel].mean(), max(np.ptp(x[sel]), 1e-3) / 4], maxfev=5000)
            xl = p[0] + p[1] * np.arctanh(1 - 2 * cc_half_limit)
            if np.isfinite(xl) and 0 < xl <= x.max() * (1 + 1e-9):
                d_cc = float(1 / np.sqrt(xl))
        except (RuntimeError, ValueError):
            d_cc = None
    d_is = None
    sel = np.isfinite(isig) & (isig > 0)
    if sel.sum() >= 3:
        deg = min(6, int(sel.sum()) - 1)
        coef = np.polyfit(x[sel], np.log(isig[sel]), deg)
        xs = np.linspace(x[sel].min(), x.max(), 2000)
        below = np.flatnonzero(np.polyval(coef, xs) < np.log(misigma_limit))
        if len(below):
            d_is = float(1 / np.sqrt(xs[below[0]]))
    return ResolutionEstimate(d_cc, d_is, cc_half_limit, misigma_limit, d_min_data)
