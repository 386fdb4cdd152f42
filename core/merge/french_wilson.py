"""French & Wilson (1978) amplitudes from merged intensities.

French, S. & Wilson, K. (1978). Acta Cryst. A34, 517-525: the posterior
expectation of the true intensity J and amplitude F = sqrt(J) given an
observation I with error sigma and the Wilson prior of J with expected
intensity Sigma (= epsilon * <I/epsilon> in the resolution shell):

    acentric prior  p(J) = exp(-J/Sigma) / Sigma
    centric prior   p(J) = exp(-J/(2 Sigma)) / sqrt(2 pi Sigma J)

Times the Gaussian likelihood exp(-(I - J)^2 / (2 sigma^2)), the posterior is
a Gaussian in J truncated at 0 (times J^-1/2 for centric) centred at
h*sigma, with

    acentric  h = I/sigma - sigma/Sigma
    centric   h = I/sigma - sigma/(2 Sigma)

so that, with m_nu(h) = int_0^inf x^nu exp(-(x - h)^2 / 2) dx and x = J/sigma,

    acentric  <F> = sqrt(sigma) m_1/2 / m_0     <F^2> = sigma m_1 / m_0
    centric   <F> = sqrt(sigma) m_0 / m_-1/2    <F^2> = sigma m_1/2 / m_-1/2

and sigF^2 = <F^2> - <F>^2. The integrals are parabolic cylinder functions,
m_nu(h) = Gamma(nu + 1) exp(-h^2/4) D_(-nu-1)(-h) (scipy.special.pbdv); for
large h (the posterior far from J = 0) the ratios come from the moments of
the untruncated Gaussian. These are the functions that the tables of French
& Wilson, cctbx (french_wilson.py) and ctruncate tabulate for h in [-4, 3];
as there, a reflection with h < -4 (``sigma_iobs_rejection_criterion``) is
rejected: the observation is then too negative for the Wilson prior.

Sigma is the mean of I/epsilon in resolution shells of equal counts,
interpolated linearly in 1/d^2 between shell centres (cctbx/DIALS use
binned means in the same way), times epsilon (without centring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

#: h below which a reflection is rejected (cctbx, DIALS: -4.0).
SIGMA_IOBS_REJECTION_CRITERION = -4.0
_LARGE_H = 12.0  # beyond this, Gaussian moment series (relative error < 1e-9)


@dataclass
class FrenchWilsonResult:
    """Posterior amplitudes and intensities; NaN where rejected (h < -4)."""

    F: np.ndarray
    sigF: np.ndarray
    J: np.ndarray  # posterior mean intensity <J> = <F^2>
    sigJ: np.ndarray
    rejected: np.ndarray  # bool
    mean_intensity: np.ndarray  # Sigma used for each reflection

    @property
    def n_rejected(self) -> int:
        return int(self.rejected.sum())


def _log_moment_ratio(a: float, b: float, h: np.ndarray) -> np.ndarray:
    """log(m_a(h) / m_b(h)) for an array h (m_nu as in the module docstring)."""
    out = np.empty_like(h)
    small = h < _LARGE_H
    hs = h[small]
    da, _ = special.pbdv(-a - 1.0, -hs)
    db, _ = special.pbdv(-b - 1.0, -hs)
    out[small] = special.gammaln(a + 1) - special.gammaln(b + 1) + np.log(da) - np.log(db)
    hl = h[~small]
    out[~small] = (a - b) * np.log(hl) + np.log(_gauss_series(a, hl)) - np.log(_gauss_series(b, hl))
    return out


def _gauss_series(nu: float, h: np.ndarray, terms: int = 5) -> np.ndarray:
    """E[(1 + z/h)^nu] for z ~ N(0, 1): sum_k C(nu, 2k) (2k-1)!! h^-2k."""
    total = np.ones_like(h)
    coef, dfact = 1.0, 1.0
    for k in range(1, terms):
        coef *= (nu - (2 * k - 2)) * (nu - (2 * k - 1)) / ((2 * k - 1) * (2 * k))
        dfact *= 2 * k - 1
        total = total + coef * dfact * h ** (-2.0 * k)
    return total


def posterior_moments(I, sigI, Sigma, centric) -> FrenchWilsonResult:
    """French-Wilson <F>, sigF, <J>, sigJ for each reflection (whole arrays).

    ``I``, ``sigI`` (> 0) merged intensities, ``Sigma`` (> 0) the expected
    intensity epsilon * <I/epsilon> at each reflection's resolution,
    ``centric`` boolean.
    """
    I = np.asarray(I, dtype=float)
    sigI = np.asarray(sigI, dtype=float)
    Sigma = np.asarray(Sigma, dtype=float)
    centric = np.asarray(centric, dtype=bool)
    h = np.where(centric, I / sigI - sigI / (2.0 * Sigma), I / sigI - sigI / Sigma)
    rejected = ~(h >= SIGMA_IOBS_REJECTION_CRITERION)
    F = np.full(I.shape, np.nan)
    sigF = np.full(I.shape, np.nan)
    J = np.full(I.shape, np.nan)
    sigJ = np.full(I.shape, np.nan)
    for is_centric, (a_f, a_j, a_j2, b) in ((False, (0.5, 1.0, 2.0, 0.0)),
                                            (True, (0.0, 0.5, 1.5, -0.5))):
        sel = (centric == is_centric) & ~rejected
        if not sel.any():
            continue
        hs, s = h[sel], sigI[sel]
        ef = np.exp(_log_moment_ratio(a_f, b, hs))  # <F>/sqrt(sigma)
        ej = np.exp(_log_moment_ratio(a_j, b, hs))  # <J>/sigma
        ej2 = np.exp(_log_moment_ratio(a_j2, b, hs))  # <J^2>/sigma^2
        F[sel] = ef * np.sqrt(s)
        sigF[sel] = np.sqrt(np.maximum(ej - ef * ef, 0.0) * s)
        J[sel] = ej * s
        sigJ[sel] = np.sqrt(np.maximum(ej2 - ej * ej, 0.0)) * s
    return FrenchWilsonResult(F, sigF, J, sigJ, rejected, Sigma)


def binned_mean_intensity(I, d, epsilon, n_bins: int | None = None,
                          min_per_bin: int = 40, max_bins: int = 60) -> np.ndarray:
    """Expected intensity Sigma = epsilon * <I/epsilon>(1/d^2) for each reflection.

    Shells of equal counts (at least ``min_per_bin`` reflections, at most
    ``max_bins`` shells, as in DIALS's French-Wilson binning); the shell means
    are interpolated linearly in 1/d^2 between shell centres and held flat
    beyond the outer centres. A shell mean that is not positive (only noise)
    takes the smallest positive shell mean.
    """
    I = np.asarray(I, dtype=float)
    s2 = 1.0 / np.asarray(d, dtype=float) ** 2
    eps = np.asarray(epsilon, dtype=float)
    n = len(I)
    if n_bins is None:
        n_bins = int(np.clip(n // min_per_bin, 1, max_bins))
    order = np.argsort(s2, kind="stable")
    edges = np.linspace(0, n, n_bins + 1).astype(int)
    shell = np.empty(n, dtype=np.int64)
    shell[order] = np.searchsorted(edges, np.arange(n), side="right") - 1
    counts = np.bincount(shell, minlength=n_bins)
    mean = np.bincount(shell, weights=I / eps, minlength=n_bins) / np.maximum(counts, 1)
    centre = np.bincount(shell, weights=s2, minlength=n_bins) / np.maximum(counts, 1)
    positive = mean > 0
    floor = mean[positive].min() if positive.any() else 1.0
    mean = np.where(positive, mean, floor)
    return eps * np.interp(s2, centre, mean)


def french_wilson(I, sigI, d, epsilon, centric, n_bins: int | None = None) -> FrenchWilsonResult:
    """Amplitudes from merged intensities by French & Wilson (1978); see the module doc."""
    Sigma = binned_mean_intensity(I, d, epsilon, n_bins)
    return posterior_moments(I, sigI, Sigma, centric)
