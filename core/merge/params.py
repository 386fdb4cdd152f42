"""Parameters of merging (names and defaults as in dials.merge)."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param as _p


@dataclass
class MergeParams:
    """Merge symmetry equivalents of scaled data; French-Wilson amplitudes."""

    anomalous: bool = _p(True, "Also merge I(+) and I(-) separately (I(+) SIGI(+) I(-) SIGI(-) "
                         "N(+) N(-), and F(+) F(-) DANO with truncate).", "anomalous")
    truncate: bool = _p(True, "Amplitudes F SIGF by French & Wilson (1978), which treats weak and "
                        "negative intensities with the Wilson prior.", "truncate")
    d_min: float | None = _p(None, "High-resolution limit.", "d_min", units="A", min=0,
                             min_exclusive=True)
    d_max: float | None = _p(None, "Low-resolution limit.", "d_max", units="A", min=0,
                             min_exclusive=True)
    wavelength_tolerance: float = _p(1e-4, "Experiments whose wavelengths differ by less than "
                                     "this are merged together (one dataset each group).",
                                     "wavelength_tolerance", units="A", min=0)
    combine_partials: bool = _p(True, "Combine partials of one reflection (same partial_id).",
                                "combine_partials")
    partiality_threshold: float = _p(0.4, "Keep reflections whose (combined) partiality is at "
                                     "least this.", "partiality_threshold", min=0, max=1)
    best_unit_cell: tuple | None = _p(
        None, "Cell for the resolution of each reflection and the MTZ (default: the mean "
        "over the experiments).", "best_unit_cell", units="A,deg", type="unit_cell")
    fw_min_reflections: int = _p(200, "French-Wilson only with at least this many reflections; "
                                 "otherwise the flat prior |F| = sqrt((I + sqrt(I^2 + 2 sigma^2))/2).",
                                 "french_wilson.min_reflections", min=1, expert_level=1)
    n_bins: int = _p(20, "Resolution shells of the merging-statistics table.", "merging.n_bins",
                     min=1, max=100)
    mtz: str = _p("merged.mtz", "Name of the merged MTZ file (in the session folder unless "
                  "a path).", "output.mtz")
    crystal_names: str = _p("XTAL", "Crystal name(s) in the MTZ, comma-separated (one per "
                            "wavelength).", "output.crystal_names")
    project_name: str = _p("AUTOMATIC", "Project name in the MTZ.", "output.project_name")
    dataset_names: str = _p("NATIVE", "Dataset name(s) in the MTZ, comma-separated (one per "
                            "wavelength).", "output.dataset_names")
