"""Parameters of scaling (names and defaults as in dials.scale)."""

from __future__ import annotations

from dataclasses import dataclass

from gonio.core.refinement.params import _p

#: absorption_level -> (lmax, surface_weight); current dials.scale uses 5e5, 5e4, 5e3 (and 5e5
#: without a level): against truth on simulated 1, 5 and 25 % absorption-like terms, gonio's
#: are as good or better at the level each is meant for (25 %, high: 0.29 % against 0.54 % rms;
#: docs/scale.md)
ABSORPTION_LEVELS = {"low": (4, 5e4), "medium": (6, 5e3), "high": (6, 5e2)}
#: dials.scale's automatic (scale, decay) intervals (deg) for sweeps narrower than each width
_AUTO_INTERVALS = ((5.0, (1.0, 1.5)), (10.0, (2.0, 3.0)), (25.0, (4.0, 5.0)),
                   (90.0, (8.0, 10.0)), (float("inf"), (15.0, 20.0)))
#: no absorption term when every scattered beam is this close to the incident one:
#: acos(0.999) (dials.scale, DIALS issue 2316)
_MIN_TWO_THETA_DEG = 2.5626


@dataclass
class ScalingParams:
    """Scaling of integrated intensities with a physical model (dials.scale)."""

    model: str = _p("physical", "Scaling model: physical (smooth scale and relative B in rotation, "
                    "spherical-harmonic absorption; Beilsten-Edmands et al. 2020), KB (one "
                    "scale and one B per sweep) or array (smoothed grids: decay over resolution "
                    "and rotation, absorption over detector x, y and rotation).", "model",
                    choices=["physical", "KB", "array"])
    scale_interval: float | str = _p(
        "Auto", "Rotation between the smoothly interpolated scale parameters. Auto (as "
        "dials.scale): 15 deg for sweeps of 90 deg or more, 8 / 4 / 2 / 1 deg below 90 / 25 / "
        "10 / 5 deg.", "physical.scale_interval", units="deg", type="float", min=0,
        min_exclusive=True)
    decay_interval: float | str = _p(
        "Auto", "Rotation between the smoothly interpolated relative-B parameters (model=array: "
        "between the rotation samples of the decay and absorption grids). Auto (as "
        "dials.scale): 20 deg for sweeps of 90 deg or more, 10 / 5 / 3 / 1.5 deg below 90 / 25 "
        "/ 10 / 5 deg; model=array 20 deg.", "physical.decay_interval", units="deg",
        type="float", min=0, min_exclusive=True)
    decay_correction: bool = _p(True, "Refine the relative-B (decay) term (model=array: the "
                                "decay grid).", "physical.decay_correction")
    absorption_correction: bool | str = _p(
        True, "Refine the spherical-harmonic absorption term (model=array: the absorption "
        "grid). Auto (dials.scale's default): only for sweeps wider than 60 deg, or when "
        "absorption_level is set, and not when every reflection is within 2.6 deg of the beam "
        "(model=array: always). True is gonio's default: restrained by surface_weight, the "
        "term also helps shorter sweeps.", "physical.absorption_correction", type="bool",
        allow_auto=True)
    lmax: int = _p(4, "Highest spherical-harmonic order of the absorption term.", "physical.lmax",
                   max=12)
    absorption_level: str | None = _p(
        None, "Expected relative absorption: low (~1%), medium (~5%), high (>25%); sets lmax and "
        "surface_weight (low: 4, 5e4; medium: 6, 5e3; high: 6, 5e2).",
        "physical.absorption_level", choices=["low", "medium", "high"])
    surface_weight: float = _p(1e6, "Restraint weight pulling the absorption surface towards a "
                               "sphere (larger: smoother, smaller correction).",
                               "physical.surface_weight", min=0)
    decay_restraint: float = _p(1e-1, "Restraint weight pulling the relative B values towards 0.",
                                "physical.decay_restraint", min=0)
    n_resolution_bins: int = _p(10, "model=array: resolution bins (equal in 1/d^2) of the decay "
                                "grid.", "array.n_resolution_bins", min=1, max=100)
    n_absorption_bins: int = _p(3, "model=array: bins in detector x and in y of the absorption "
                                "grid.", "array.n_absorption_bins", min=1, max=50)
    modulation_correction: bool = _p(False, "model=array: also refine a detector-position "
                                     "(modulation) grid.", "array.modulation_correction")
    n_modulation_bins: int = _p(20, "model=array: bins in detector x and in y of the modulation "
                                "grid.", "array.n_modulation_bins", min=1, max=100)
    d_min: float | None = _p(None, "Leave out reflections beyond this resolution.", "cut_data.d_min",
                             units="A", min=0, min_exclusive=True)
    partiality_cutoff: float = _p(0.4, "Leave out reflections with a smaller partiality.",
                                  "cut_data.partiality_cutoff", min=0, max=1)
    min_isigi: float = _p(-5.0, "Leave out reflections with a smaller I/sigma.", "cut_data.min_isigi")
    exclude_images: str | None = _p(None, "Images to leave out, as exp:first:last, several "
                                    "separated by commas (e.g. 0:1:50,1:200:260); experiments "
                                    "counted from 0.", "exclude_images")
    require_both_integrated: bool = _p(
        False, "Scale only reflections that both profile fitting and summation integrated "
        "(DIALS 1.x under intensity_choice=combine); by default one success is enough, as in "
        "current DIALS.", "reflection_selection.combine.require_both")
    intensity_choice: str = _p("combine", "Intensities to scale: profile, sum, or combine (the "
                               "profile/summation mix with the Imid that minimises Rmeas).",
                               "reflection_selection.intensity_choice",
                               choices=["combine", "profile", "sum"])
    reflection_selection_method: str = _p(
        "use_all", "Reflections that enter the minimisation of the model (all still get scale "
        "factors and statistics): use_all; random (groups of equivalents at random, at least "
        "random.min_groups and random.min_reflections); quasi_random (DIALS's default: random "
        "for one sweep; for several, the groups connecting the sweeps best, then random ones); "
        "intensity_ranges (E2_range, Isigma_range, d_range, min_partiality).",
        "reflection_selection.method",
        choices=["use_all", "quasi_random", "random", "intensity_ranges"])
    random_min_groups: int = _p(2000, "random/quasi_random: at least this many groups of "
                                "equivalents.", "reflection_selection.random.min_groups", min=1)
    random_min_reflections: int = _p(50000, "random/quasi_random: at least this many "
                                     "reflections (at the mean multiplicity).",
                                     "reflection_selection.random.min_reflections", min=1)
    random_isigma_cutoff: float = _p(1.0, "random/quasi_random with several sweeps: only groups "
                                     "whose mean I/sigma exceeds this.",
                                     "reflection_selection.random.multi_dataset.Isigma_cutoff")
    e2_range: tuple[float, float] = _p((0.8, 5.0), "intensity_ranges: normalised E^2 range.",
                                       "reflection_selection.E2_range")
    isigma_range: tuple[float, float] = _p((-5.0, 0.0), "intensity_ranges and quasi_random: I/sigma "
                                           "range (an upper limit of 0 is none).",
                                           "reflection_selection.Isigma_range")
    d_range: tuple[float, float] | None = _p(None, "intensity_ranges and quasi_random: d range.",
                                             "reflection_selection.d_range", units="A",
                                             min=0, min_exclusive=True)
    min_partiality: float = _p(0.95, "intensity_ranges and quasi_random: only reflections with a "
                               "larger partiality.", "reflection_selection.min_partiality",
                               min=0, max=1)
    outlier_zmax: float = _p(6.0, "Reject observations deviating by more than this many sigma "
                             "from the rest of their symmetry group.", "outlier_zmax",
                             min=0, min_exclusive=True)
    emax: float = _p(10.0, "With every outlier rejection, also reject observations whose "
                     "normalised intensity E^2 = (I / g) / <I / g>(d*^2) exceeds emax^2 (as "
                     "dials.scale; 0: never).", "emax", min=0)
    outlier_rejection: str = _p("standard", "Outlier rejection: standard (in each group the "
                                "observation furthest from the mean of the others, repeatedly), "
                                "simple (every observation further than outlier_zmax from the "
                                "mean of its whole group, in one pass; quicker at high "
                                "multiplicity) or none.", "outlier_rejection",
                                choices=["standard", "simple", "none"])
    error_model: str = _p("basic", "Error model: basic (sigma'^2 = a^2 (sigma^2 + (b I)^2)) or "
                          "none.", "error_model.error_model", choices=["basic", "none"])
    error_model_minimisation: str = _p(
        "leave_one_out", "How a and b are found: leave_one_out (unit mean square of each "
        "observation's deviation from the rest of its group, in intensity bins; Evans & "
        "Murshudov 2013), or DIALS's individual (a from the normal probability plot, b from "
        "binned variances; its deviations, scaled by sqrt((n-1)/n), give a lower a at low "
        "multiplicity) or regression (a straight line through the groups' spread against "
        "sigma^2).", "error_model.basic.minimisation",
        choices=["leave_one_out", "individual", "regression"])
    minimisation_weights: str = _p(
        "error_model", "Weights of the model minimisation after the first round: error_model "
        "(1 / sigma'^2, the error model applied) or integration (1 / sigma^2 of the integrated "
        "intensities throughout, as the DIALS 1.x runs that wrote the L-cysteine test files; "
        "the error model still sets the outlier rejection and the output sigmas).",
        "weighting.minimisation_weights", choices=["error_model", "integration"])
    error_model_schedule: str = _p(
        "gonio", "The procedure: gonio (the error model refined before every outlier "
        "rejection, the first time provisionally on all observations with the initial "
        "scales; L-BFGS rounds to their minimum; the full-matrix round last) or dials (as "
        "dials.scale 3.x, iteration for iteration: partials summed; first outliers per sweep "
        "judged with the table's inverse scale factors; a = 1, b = 0.02 until the error model "
        "is first refined after the second L-BFGS round; L-BFGS stopped where the RMSD "
        "changes by less than 1e-4; pairs never rejected; smoothers placed from the first "
        "reflection; the final error model refined after the full-matrix round).", None,
        phil="error_model.schedule", choices=["gonio", "dials"])
    overwrite_existing_models: bool = _p(
        False, "Start every sweep from a new scaling model. By default (as dials.scale) a sweep "
        "that a previous scale gave a model continues from its parameters, when gonio made "
        "that model and it has the layout these parameters ask for (model, intervals, lmax, "
        "corrections; model=array: the same grids); otherwise it starts afresh.",
        "overwrite_existing_models")
    full_matrix: bool = _p(True, "Finish with a full-matrix (Gauss-Newton) round that gives the "
                           "parameter uncertainties.", "full_matrix")
    max_iterations: int = _p(200, "Maximum L-BFGS iterations per round.",
                             "scaling_refinery.max_iterations", min=0)
    filtering_method: str | None = _p(
        None, "deltacchalf: remove data sets or image groups that lower CC1/2 (delta CC1/2, "
        "Assmann et al. 2016), alternating with scaling.", "filtering.method",
        choices=["deltacchalf"])
    filtering_mode: str = _p("dataset", "Filter whole data sets or groups of images.",
                             "filtering.deltacchalf.mode", choices=["dataset", "image_group"])
    filtering_group_size: int = _p(10, "Images per group for mode=image_group.",
                                   "filtering.deltacchalf.group_size", min=1)
    filtering_stdcutoff: float = _p(4.0, "Remove groups whose delta CC1/2 is below the mean by "
                                    "more than this many standard deviations.",
                                    "filtering.deltacchalf.stdcutoff", min=0, min_exclusive=True)
    filtering_max_cycles: int = _p(6, "Scaling and filtering cycles at most.",
                                   "filtering.deltacchalf.max_cycles", min=1)
    filtering_max_percent_removed: float = _p(10.0, "Never remove more than this percentage of "
                                              "the observations.",
                                              "filtering.deltacchalf.max_percent_removed",
                                              min=0, max=100)
    anomalous: bool = _p(False, "Keep Friedel mates apart in scaling and statistics.", "anomalous")
    n_bins: int = _p(20, "Resolution shells of the merging statistics.", "output.n_bins",
                     min=1, max=100)

    def resolved_intervals(self, width_deg: float) -> tuple[float, float]:
        """(scale_interval, decay_interval) in deg for a sweep of ``width_deg``; Auto as
        dials.scale (PhysicalScalingModel.from_data; the array model's decay interval 20)."""
        auto = next(pair for limit, pair in _AUTO_INTERVALS if width_deg < limit)
        if self.model == "array":
            auto = (auto[0], 20.0)
        return tuple(float(v) if v != "Auto" else a
                     for v, a in zip((self.scale_interval, self.decay_interval), auto))

    def resolved_absorption_correction(self, width_deg: float, max_two_theta_deg: float) -> bool:
        """Whether the sweep gets an absorption term; Auto as dials.scale."""
        if self.absorption_correction != "Auto":
            return bool(self.absorption_correction)
        if self.model == "array" or self.absorption_level:
            return True
        return width_deg > 60.0 and max_two_theta_deg >= _MIN_TWO_THETA_DEG

    def resolved_absorption(self) -> tuple[int, float]:
        """(lmax, surface_weight) after absorption_level."""
        if self.absorption_level:
            return ABSORPTION_LEVELS[self.absorption_level]
        return self.lmax, self.surface_weight
