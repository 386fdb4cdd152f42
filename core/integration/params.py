"""Parameters of integration (names and defaults as in dials.integrate).

Each field carries ``help``, ``units`` and ``dials`` (the full dotted DIALS
parameter name) so that the shell can expose them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import GonioError
from ..params import param as _p


class IntegrationError(GonioError):
    pass




#: Widest profiles (deg) and foreground (standard deviations) integrate accepts: beyond
#: them a shoebox would span much of the detector or of the scan.
MAX_SIGMA_B_DEG, MAX_SIGMA_M_DEG, MAX_N_SIGMA = 2.0, 10.0, 10.0


@dataclass
class IntegrationParams:
    """Summation and 3D profile-fitting integration of a rotation sweep."""

    sigma_b: float | None = _p(
        None, "Beam divergence: the spot's standard deviation across the Ewald sphere "
        "(None: estimate from the indexed strong spots).",
        "profile.gaussian_rs.parameters.sigma_b", units="deg")
    sigma_m: float | None = _p(
        None, "Mosaicity: the spot's standard deviation along the rotation in the Kabsch "
        "frame, zeta * dphi (None: estimate from the indexed strong spots).",
        "profile.gaussian_rs.parameters.sigma_m", units="deg")
    sigma_m_model: str = _p(
        "Auto", "Width along the rotation: Auto (estimate a resolution term, the lattice "
        "point's size, sigma_m_rlp in 1/A, besides the mosaic sigma_m when the strong "
        "spots show it: finite crystals, electron diffraction) or constant (DIALS's single "
        "sigma_m).", "profile.gaussian_rs.sigma_m_model", choices=["constant"])
    n_sigma: float = _p(
        3.0, "The foreground ellipsoid is n_sigma standard deviations wide; the shoebox is "
        "twice that across the spot and the same along the rotation.",
        "profile.gaussian_rs.parameters.n_sigma")
    d_min: float | None = _p(
        None, "High-resolution limit of the predicted reflections (None: the detector corner).",
        "prediction.d_min", units="A")
    d_max: float | None = _p(
        None, "Low-resolution limit of the predicted reflections (None: no limit).",
        "prediction.d_max", units="A")
    background_algorithm: str = _p(
        "glm", "Background model: glm (robust Poisson generalised linear model, constant; "
        "right for counting detectors) or simple (constant or linear, with outlier "
        "rejection).", "integration.background.algorithm", choices=["glm", "simple"])
    glm_tuning_constant: float = _p(
        1.345, "Huber tuning constant of the robust Poisson GLM (Cantoni & Ronchetti 2001).",
        "integration.background.glm.robust.tuning_constant", min=0, min_exclusive=True)
    simple_model: str = _p(
        "constant3d", "simple background model over the whole shoebox: constant3d or "
        "linear3d (a + b x + c y + d z).", "integration.background.simple.model.algorithm",
        choices=["constant3d", "linear3d"])
    simple_outlier: str = _p(
        "nsigma", "simple background outlier rejection: null, nsigma, truncated, tukey or "
        "normal.", "integration.background.simple.outlier.algorithm",
        choices=["null", "nsigma", "truncated", "tukey", "normal"])
    nsigma_lower: float = _p(3.0, "nsigma outlier rejection: lower limit (sigmas).",
                             "integration.background.simple.outlier.nsigma.lower",
                             min=0, min_exclusive=True)
    nsigma_upper: float = _p(3.0, "nsigma outlier rejection: upper limit (sigmas).",
                             "integration.background.simple.outlier.nsigma.upper",
                             min=0, min_exclusive=True)
    tukey_multiplier: float = _p(1.5, "tukey outlier rejection: IQR multiplier.",
                                 "integration.background.simple.outlier.tukey.iqr_multiplier",
                                 min=0)
    normal_min_pixels: int = _p(10, "normal outlier rejection: fewest pixels kept.",
                                "integration.background.simple.outlier.normal.min_pixels", min=1)
    profile_fitting: bool = _p(True, "Also integrate by 3D profile fitting (intensity.prf).",
                               "profile.fitting")
    grid_size: int = _p(5, "Reference-profile grid: 2*grid_size+1 points across the "
                        "foreground in each Kabsch coordinate.",
                        "profile.gaussian_rs.fitting.grid_size", min=1, max=25)
    scan_step: float = _p(5.0, "Reference profiles are learnt per scan range of this width "
                          "(and per 3x3 detector region).",
                          "profile.gaussian_rs.fitting.scan_step", units="deg")
    min_reference_spots: int = _p(
        10, "Fewest strong, fully recorded reflections for a reference profile (gonio); a "
        "region with fewer uses its resolution ring in the scan range, then in the whole "
        "scan.", "profile.gaussian_rs.fitting.min_reference_spots", min=1)
    block_size: float | None = _p(
        None, "Images read per block (None: Auto, about 1 deg of data, at least 4 images).",
        "integration.block.size", units="images")
    nproc: int | None = _p(None, "Worker threads (None: all cores).", "integration.mp.nproc")

    def effective_nproc(self) -> int:
        from ..threads import usable_threads

        return usable_threads(self.nproc) if self.nproc else (os.cpu_count() or 1)

    def validate(self) -> None:
        def bad(msg):
            raise IntegrationError(msg)

        for name in ("sigma_b", "sigma_m"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                bad(f"{name}={v} deg is not a usable profile width: it must be positive. "
                    f"Leave {name} unset to estimate it from the indexed spots, or give the "
                    "value printed by a previous integrate run.")
        if str(self.sigma_m_model).lower() not in ("auto", "constant"):
            bad(f"sigma_m_model={self.sigma_m_model!r} is not a model: choose auto (a "
                "resolution term besides sigma_m when the strong spots show one) or "
                "constant (DIALS's single sigma_m).")
        for name, most in (("sigma_b", MAX_SIGMA_B_DEG), ("sigma_m", MAX_SIGMA_M_DEG)):
            v = getattr(self, name)
            if v is not None and v > most:
                bad(f"{name}={v} deg is wider than any Bragg spot (at most {most} deg here; "
                    "X-ray data give about 0.01-0.1 deg for sigma_b and 0.02-0.5 deg for "
                    "sigma_m, electron diffraction a few times more). Leave it unset to "
                    "estimate it from the indexed spots.")
        if not 0 < self.n_sigma <= MAX_N_SIGMA:
            bad(f"n_sigma={self.n_sigma} must be positive and at most {MAX_N_SIGMA} (the "
                "default is 3).")
        if self.d_min is not None and not self.d_min > 0:
            bad(f"d_min={self.d_min} A is not a resolution: give a positive d_min in A, "
                "or leave it unset to integrate to the detector corner.")
        if self.d_max is not None and not self.d_max > 0:
            bad(f"d_max={self.d_max} A is not a resolution: give a positive d_max in A.")
        if self.d_min is not None and self.d_max is not None and self.d_max <= self.d_min:
            bad(f"d_max={self.d_max} A must be larger than d_min={self.d_min} A.")
        if self.grid_size < 1:
            bad(f"grid_size={self.grid_size} must be at least 1 (the default is 5).")
        if not self.scan_step > 0:
            bad(f"scan_step={self.scan_step} deg must be positive (the default is 5).")
        if self.block_size is not None and self.block_size < 1:
            bad(f"block.size={self.block_size} must be at least 1 image (or Auto).")
        if self.nproc is not None and int(self.nproc) < 1:
            bad(f"nproc={self.nproc} must be at least 1 (or unset for all cores).")
