"""Parameters of the symmetry analysis (names and defaults as dials.symmetry)."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param as _p


@dataclass
class SymmetryParams:
    """Laue group from symmetry-related intensities, space group from screw-axis absences."""

    d_min: float | str | None = _p(
        "Auto", "High-resolution limit of the data used for the Laue group analysis: Auto "
        "estimates it from <I>/<sigma> and CC1/2 in resolution shells, None uses all data.",
        "d_min", units="A", min=0, min_exclusive=True, type="float", allow_none=True)
    min_i_mean_over_sigma_mean: float | None = _p(
        4.0, "Automatic d_min: the resolution where <I>/<sigma(I)> of the merged data falls "
        "to this value.", "min_i_mean_over_sigma_mean", min=0)
    min_cc_half: float | None = _p(
        0.6, "Automatic d_min: the resolution where the fitted CC1/2 falls to this value "
        "(the less strict of the two limits is used).", "min_cc_half", min=0, max=1)
    normalisation: str = _p(
        "ml_aniso", "How intensities are put on one scale before comparing them: quasi "
        "(E^2 = I / <I> in resolution shells) or ml_aniso (that, then a maximum-likelihood "
        "anisotropic fall-off removed as well).", "normalisation",
        choices=["ml_aniso", "quasi"])
    lattice_symmetry_max_delta: float = _p(
        2.0, "Largest Le Page angle of a lattice twofold for the lattice symmetry searched.",
        "lattice_symmetry_max_delta", units="deg", min=0)
    relative_length_tolerance: float = _p(
        0.05, "Several experiments: each cell length must be within this fraction of the "
        "median cell's.", "relative_length_tolerance", min=0)
    absolute_angle_tolerance: float = _p(
        2.0, "Several experiments: each cell angle must be within this of the median cell's.",
        "absolute_angle_tolerance", units="deg", min=0)
    partiality_threshold: float = _p(
        0.4, "Use only reflections whose partiality is at least this.", "partiality_threshold",
        min=0, max=1)
    best_monoclinic_beta: bool = _p(
        True, "For a centred monoclinic cell prefer I2 over C2 when its beta is nearer 90 deg.",
        "best_monoclinic_beta")
    check_absences: bool = _p(
        True, "Choose the space group from the systematic absences along the screw axes.",
        "systematic_absences.check")
    absences_method: str = _p(
        "direct", "Screw-axis scoring: direct (mean I/sigma of the reflections the axis "
        "would extinguish, as DIALS's default).", "systematic_absences.method",
        choices=["direct"])
    significance_level: float = _p(
        0.95, "Significance level of the screw-axis z-tests.",
        "systematic_absences.significance_level", min=0.5, max=0.9999)
    seed: int = _p(230, "Random seed of the sigma(CC) estimate and the CC1/2 half-sets.",
                   "seed", expert_level=1, min=0)
