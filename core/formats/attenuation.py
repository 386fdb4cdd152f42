"""X-ray linear attenuation coefficient of detector sensor materials.

The mass attenuation coefficients mu/rho (total, with coherent scattering)
are the NIST XCOM / Hubbell & Seltzer tabulation for silicon (Z = 14,
density 2.33 g/cm^3), the same table dxtbx uses (via cctbx.eltbx) to set
the parallax correction of pixel-array detectors. Between tabulated
energies mu/rho is interpolated linearly in log(energy)-log(mu/rho), as
cctbx does, so gonio's mu equals the value in DIALS experiment files.

>>> round(silicon_mu_per_mm(0.9795), 4)   # 12.66 keV; DIALS writes 3.96038
3.9604
"""

from __future__ import annotations

import numpy as np

#: h c in eV A from the 1986 CODATA constants (as in scitbx), wavelength <-> energy.
EV_ANGSTROM = 6.6260755e-34 * 299792458 / 1.60217733e-19 * 1e10

_SI_DENSITY = 2.33  # g/cm^3
_SI_ENERGY_MEV = np.array(
    [
        0.001,
        0.0015,
        0.0018389,
        0.0018389,
        0.002,
        0.003,
        0.004,
        0.005,
        0.006,
        0.008,
        0.01,
        0.015,
        0.02,
        0.03,
        0.04,
        0.05,
        0.06,
        0.08,
        0.1,
        0.15,
        0.2,
        0.3,
        0.4,
        0.5,
        0.6,
        0.8,
        1.0,
        1.25,
        1.5,
        2.0,
        3.0,
        4.0,
        5.0,
        6.0,
        8.0,
        10.0,
        15.0,
        20.0,
    ]
)
_SI_MU_RHO = np.array(
    [  # cm^2/g
        1570.0,
        535.5,
        309.2,
        3192.0,
        2777.0,
        978.4,
        452.9,
        245.0,
        147.0,
        64.68,
        33.89,
        10.34,
        4.464,
        1.436,
        0.7012,
        0.4385,
        0.3207,
        0.2228,
        0.1835,
        0.1448,
        0.1275,
        0.1082,
        0.09614,
        0.08748,
        0.08077,
        0.07082,
        0.06361,
        0.05688,
        0.05183,
        0.0448,
        0.03678,
        0.0324,
        0.02967,
        0.02788,
        0.02574,
        0.02462,
        0.02352,
        0.02338,
    ]
)


def silicon_mu_per_mm(wavelength_A: float) -> float:
    """Linear attenuation coefficient mu (1/mm) of silicon at ``wavelength_A``.

    Returns 0 outside the tabulated range (1 keV - 20 MeV), e.g. for electrons,
    which switches the parallax correction off.
    """
    if wavelength_A <= 0:
        return 0.0
    e = EV_ANGSTROM / wavelength_A * 1e-6  # MeV
    if not (_SI_ENERGY_MEV[0] < e < _SI_ENERGY_MEV[-1]):
        return 0.0
    # the interval [E_i, E_i+1) containing e; at the K edge the later entry wins
    i = int(np.searchsorted(_SI_ENERGY_MEV, e, side="right")) - 1
    x0, x1 = np.log(_SI_ENERGY_MEV[i]), np.log(_SI_ENERGY_MEV[i + 1])
    y0, y1 = np.log(_SI_MU_RHO[i]), np.log(_SI_MU_RHO[i + 1])
    mu_rho = np.exp(y0 + (y1 - y0) * (np.log(e) - x0) / (x1 - x0))
    return float(mu_rho * _SI_DENSITY / 10.0)


def mu_per_mm(material: str, wavelength_A: float) -> float:
    """mu (1/mm) for a sensor material; 0 (no parallax correction) when unknown."""
    if material == "Si":
        return silicon_mu_per_mm(wavelength_A)
    return 0.0


def sensor_fields(material: str, thickness_mm: float, wavelength_A: float) -> dict:
    """Panel fields for a pixel-array sensor: material, thickness, mu and the px<->mm
    strategy (parallax-corrected whenever mu is known)."""
    from gonio.core.models.detector import PARALLAX, SIMPLE

    mu = mu_per_mm(material, wavelength_A) if thickness_mm > 0 else 0.0
    return {"material": material, "thickness": thickness_mm, "mu": mu,
            "px_mm_strategy": PARALLAX if mu > 0 else SIMPLE, "type": "SENSOR_PAD"}
