"""Parameters of static refinement (names and defaults as in dials.refine / dials.index).

Each field carries metadata: ``help``, ``units`` and ``dials`` (the full
dotted DIALS parameter name), so that the shell can expose them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _p(default, help, dials, units="", choices=None):
    meta = {"help": help, "dials": dials, "units": units}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RefinementParams:
    """Static (scan-independent) refinement of beam, crystal, detector and goniometer."""

    beam_fix: list = _p(
        ["in_spindle_plane", "wavelength"],
        "Beam parameters to hold fixed: all, in_spindle_plane (keep the beam in its plane "
        "with the spindle), out_spindle_plane, wavelength.",
        "refinement.parameterisation.beam.fix",
        choices=["all", "in_spindle_plane", "out_spindle_plane", "wavelength"])
    crystal_fix: list = _p(
        [], "Crystal parameters to hold fixed: all, cell, orientation.",
        "refinement.parameterisation.crystal.fix", choices=["all", "cell", "orientation"])
    detector_fix: list = _p(
        [], "Detector parameters to hold fixed: all, position, orientation, distance.",
        "refinement.parameterisation.detector.fix",
        choices=["all", "position", "orientation", "distance"])
    detector_fix_list: list = _p(
        [], "Detector parameters to hold fixed by name (Dist, Shift1, Shift2, Tau1, Tau2, Tau3).",
        "refinement.parameterisation.detector.fix_list")
    goniometer_fix: list = _p(
        ["all"], "Goniometer rotation-axis parameters to hold fixed: all, in_beam_plane (keep "
        "the axis in its plane with the beam), out_beam_plane; an empty list (None) refines "
        "both.",
        "refinement.parameterisation.goniometer.fix",
        choices=["all", "in_beam_plane", "out_beam_plane"])
    outlier_algorithm: str = _p(
        "mcd", "Outlier rejection on the (X, Y, phi) residuals: null, mcd (minimum covariance "
        "determinant, as DIALS's auto for scans) or tukey (fences on each residual).",
        "refinement.reflections.outlier.algorithm", choices=["null", "mcd", "tukey"])
    mcd_threshold_probability: float = _p(
        0.975, "MCD: residuals beyond this chi-squared quantile of the robust distance are "
        "outliers.", "refinement.reflections.outlier.mcd.threshold_probability")
    tukey_iqr_multiplier: float = _p(
        1.5, "Tukey fences: residuals beyond this many inter-quartile ranges are outliers.",
        "refinement.reflections.outlier.tukey.iqr_multiplier")
    close_to_spindle_cutoff: float = _p(
        0.02, "Leave out reflections with |zeta| below this (close to the rotation axis, "
        "where phi is ill-determined).", "refinement.reflections.close_to_spindle_cutoff")
    reflections_per_degree: float | None = _p(
        50.0, "Random subset of this many reflections per degree of rotation (None: all).",
        "refinement.reflections.reflections_per_degree", units="1/deg")
    minimum_sample_size: int = _p(
        1000, "The random subset never goes below this many reflections.",
        "refinement.reflections.minimum_sample_size")
    max_iterations: int = _p(
        100, "Maximum Levenberg-Marquardt iterations.", "refinement.refinery.max_iterations")
    rmsd_tolerance: float = _p(
        1e-4, "Stop when the relative change of every RMSD in a step is below this.",
        "refinement.refinery.rmsd_tolerance")
    bin_size_fraction: float = _p(
        0.0, "Stop when RMSDs are below this fraction of a pixel / an image (0: never).",
        "refinement.target.bin_size_fraction")
    random_seed: int = _p(42, "Seed for the random reflection subset.", "refinement.reflections.random_seed")
