"""Parameters of static refinement (names and defaults as in dials.refine / dials.index).

Each field carries metadata: ``help``, ``units`` and ``dials`` (the full
dotted DIALS parameter name), so that the shell can expose them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param as _p


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
        "determinant, as DIALS's auto for scans), tukey (fences on each residual) or "
        "sauter_poon (radial X, Y deviations against a fitted Rayleigh distribution, Sauter & "
        "Poon 2010).",
        "refinement.reflections.outlier.algorithm",
        choices=["null", "mcd", "tukey", "sauter_poon"])
    outlier_separate_experiments: bool = _p(
        True, "Judge outliers separately for each experiment.",
        "refinement.reflections.outlier.separate_experiments")
    outlier_separate_panels: bool = _p(
        True, "Judge outliers separately for each detector panel.",
        "refinement.reflections.outlier.separate_panels")
    outlier_separate_blocks: bool = _p(
        True, "Judge outliers separately in blocks of the scan (block_width).",
        "refinement.reflections.outlier.separate_blocks")
    outlier_block_width: float = _p(
        18.0, "Width of the scan blocks in which outliers are judged separately.",
        "refinement.reflections.outlier.block_width", units="deg", min=0, min_exclusive=True)
    mcd_threshold_probability: float = _p(
        0.975, "MCD: residuals beyond this chi-squared quantile of the robust distance are "
        "outliers.", "refinement.reflections.outlier.mcd.threshold_probability", min=0, max=1)
    tukey_iqr_multiplier: float = _p(
        1.5, "Tukey fences: residuals beyond this many inter-quartile ranges are outliers.",
        "refinement.reflections.outlier.tukey.iqr_multiplier", min=0)
    sauter_poon_px_sz: tuple[float, ...] | None = _p(
        None, "sauter_poon: pixel size (fast, slow) that turns the pixel residuals into the "
        "lengths the Rayleigh fit works on (None: Auto, the first panel's pixel size).",
        "refinement.reflections.outlier.sauter_poon.px_sz", units="mm", length=2,
        min=0, min_exclusive=True)
    close_to_spindle_cutoff: float = _p(
        0.02, "Leave out reflections with |zeta| below this (close to the rotation axis, "
        "where phi is ill-determined).", "refinement.reflections.close_to_spindle_cutoff", min=0)
    reflections_per_degree: float | None = _p(
        50.0, "Random subset of this many reflections per degree of rotation (None: all).",
        "refinement.reflections.reflections_per_degree", units="1/deg", min=0, min_exclusive=True)
    use_all_reflections: bool = _p(
        False, "Refine against every reflection (ignore reflections_per_degree).",
        "refinement.reflections.use_all_reflections")
    minimum_sample_size: int = _p(
        1000, "The random subset never goes below this many reflections.",
        "refinement.reflections.minimum_sample_size", min=0)
    engine: str = _p(
        "LevMar", "Minimiser: LevMar (Levenberg-Marquardt, as DIALS's default), GaussNewton "
        "(undamped steps, damped only when a step fails) or LBFGS (limited-memory "
        "quasi-Newton on the same target and gradient).", "refinement.refinery.engine",
        choices=["LevMar", "GaussNewton", "LBFGS"])
    max_iterations: int = _p(
        100, "Maximum iterations of the minimiser.", "refinement.refinery.max_iterations", min=0)
    rmsd_tolerance: float = _p(
        1e-4, "Stop when the relative change of every RMSD in a step is below this.",
        "refinement.refinery.rmsd_tolerance", min=0)
    bin_size_fraction: float = _p(
        0.0, "Stop when RMSDs are below this fraction of a pixel / an image (0: never).",
        "refinement.target.bin_size_fraction", min=0)
    random_seed: int = _p(42, "Seed for the random reflection subset.",
                          "refinement.reflections.random_seed", min=0)


@dataclass
class RefineParams(RefinementParams):
    """dials.refine: static refinement, then (optionally) scan-varying crystal models."""

    scan_varying: bool | str = _p(
        "Auto", "Refine the crystal orientation and unit cell as smoothly varying over the "
        "scan, after a static refinement. Auto: only when the scan spans at least one smoother "
        "interval (interval_width_degrees); True: always (an error for a scan too short for "
        "the smoother); False: static only.", "refinement.parameterisation.scan_varying", type="bool")
    interval_width_degrees: float = _p(
        36.0, "Width of one smoother interval: the scan-varying parameters have one sample "
        "per interval (plus two at the ends), so changes slower than this are followed.",
        "refinement.parameterisation.crystal.smoother.interval_width_degrees", units="deg",
        min=0, min_exclusive=True)
    absolute_num_intervals: int | None = _p(
        None, "Number of smoother intervals over the whole scan (overrides "
        "interval_width_degrees).", "refinement.parameterisation.crystal.smoother."
        "absolute_num_intervals", min=1)
    unit_cell_force_static: bool = _p(
        False, "Keep the unit cell static in scan-varying refinement.",
        "refinement.parameterisation.crystal.unit_cell.force_static")
    orientation_force_static: bool = _p(
        False, "Keep the crystal orientation static in scan-varying refinement.",
        "refinement.parameterisation.crystal.orientation.force_static")
    min_nref_per_parameter: int = _p(
        5, "Scan-varying refinement needs at least this many reflections per parameter.",
        "refinement.parameterisation.auto_reduction.min_nref_per_parameter", min=1)
    tie_to_target_values: tuple[float, ...] | None = _p(
        None, "Restrain the unit cell to this target a, b, c, alpha, beta, gamma (static "
        "refinement).", "refinement.parameterisation.crystal.unit_cell.restraints."
        "tie_to_target.values", units="A, deg", length=6)
    tie_to_target_sigmas: tuple[float, ...] | None = _p(
        None, "Standard deviations of the tie_to_target restraint for a, b, c, alpha, beta, "
        "gamma (0: that parameter is not restrained).", "refinement.parameterisation.crystal."
        "unit_cell.restraints.tie_to_target.sigmas", units="A, deg", length=6, min=0)
    tie_to_target_id: tuple[int, ...] | None = _p(
        None, "Experiments whose crystals the tie_to_target restraint applies to (None: all).",
        "refinement.parameterisation.crystal.unit_cell.restraints.tie_to_target.id")
    tie_to_group_sigmas: tuple[float, ...] | None = _p(
        None, "Restrain the cells of the crystals to their mean with these standard deviations "
        "for a, b, c, alpha, beta, gamma (0: not restrained).", "refinement.parameterisation."
        "crystal.unit_cell.restraints.tie_to_group.sigmas", units="A, deg", length=6, min=0)
    tie_to_group_id: tuple[int, ...] | None = _p(
        None, "Experiments whose crystals form the tie_to_group group (None: all).",
        "refinement.parameterisation.crystal.unit_cell.restraints.tie_to_group.id")
