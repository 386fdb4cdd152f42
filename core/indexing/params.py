"""Parameters of autoindexing (names and defaults as in dials.index).

Each field carries metadata ``help``, ``units`` and ``dials`` (the full
dotted DIALS parameter name) for the shell's parameter definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..params import param as _p
from ..refinement.params import RefinementParams


@dataclass
class IndexParams:
    """Autoindexing: lattice search, index assignment and macro-cycles of refinement."""

    method: str = _p("fft3d", "Lattice search: fft3d, fft1d or real_space_grid_search "
                     "(the last needs unit_cell).", "indexing.method",
                     choices=["fft3d", "fft1d", "real_space_grid_search"])
    max_cell: float | None = _p(None, "Longest real-space cell edge to search for (None: "
                                "estimated from the spot separations).", "indexing.max_cell",
                                units="A", min=0, min_exclusive=True)
    max_cell_multiplier: float = _p(1.3, "Safety factor on the estimated max_cell.",
                                    "indexing.max_cell_estimation.multiplier",
                                    min=0, min_exclusive=True)
    nearest_neighbor_percentile: float | None = _p(
        None, "Use this percentile of the nearest-neighbour distances instead of the "
        "histogram method for max_cell.", "indexing.max_cell_estimation.nearest_neighbor_percentile",
        min=0, max=1)
    max_height_fraction: float = _p(0.25, "Histogram bins above this fraction of the highest "
                                    "bin count towards max_cell.",
                                    "indexing.max_cell_estimation.max_height_fraction",
                                    min=0, max=1)
    step_size: float = _p(45.0, "Rotation range (deg) of each group of spots in the "
                          "nearest-neighbour analysis.", "indexing.max_cell_estimation.step_size",
                          units="deg", min=0, min_exclusive=True)
    min_cell: float = _p(3.0, "Shortest real-space basis vector considered.", "indexing.min_cell",
                         units="A", min=0, min_exclusive=True)
    min_cell_volume: float = _p(25.0, "Smallest unit-cell volume considered.",
                                "indexing.min_cell_volume", units="A^3", min=0)
    n_points: int = _p(256, "Points along each edge of the reciprocal-space FFT grid.",
                       "indexing.fft3d.reciprocal_space_grid.n_points", min=2,
                       max=512)
    fft3d_d_min: float | None = _p(None, "Resolution limit of the spots put on the FFT grid "
                                   "(None: from max_cell and n_points).",
                                   "indexing.fft3d.reciprocal_space_grid.d_min", units="A",
                                   min=0, min_exclusive=True)
    rmsd_cutoff: float = _p(15.0, "FFT map peaks must exceed this many times the map's RMS.",
                            "indexing.fft3d.rmsd_cutoff", min=0)
    peak_volume_cutoff: float = _p(0.15, "Drop FFT peaks smaller than this fraction of the "
                                   "largest.", "indexing.fft3d.peak_volume_cutoff", min=0, max=1)
    max_vectors: int = _p(30, "Number of shortest candidate basis vectors combined.",
                          "indexing.basis_vector_combinations.max_vectors", min=3)
    characteristic_grid: float | None = _p(
        None, "Angular step (rad) of the direction search of fft1d / real_space_grid_search "
        "(None: from d_min and max_cell).", "indexing.real_space_grid_search.characteristic_grid",
        units="rad", min=0, min_exclusive=True)
    index_assignment: str = _p("simple", "Index assignment: simple (round to the nearest "
                               "integer) or local (Gildea et al. 2014).",
                               "indexing.index_assignment.method", choices=["simple", "local"])
    hkl_tolerance: float = _p(0.3, "Largest distance of any fractional index from an "
                              "integer for a spot to be indexed.",
                              "indexing.index_assignment.simple.hkl_tolerance",
                              min=0, min_exclusive=True, max=0.5)
    space_group: str | None = _p(None, "Known space group: choose the lattice setting that "
                                 "matches it and constrain the cell.",
                                 "indexing.known_symmetry.space_group")
    unit_cell: tuple | None = _p(None, "Known unit cell a b c alpha beta gamma.",
                                 "indexing.known_symmetry.unit_cell", units="A, deg")
    relative_length_tolerance: float = _p(0.1, "Tolerance on cell lengths vs unit_cell.",
                                          "indexing.known_symmetry.relative_length_tolerance",
                                          min=0)
    absolute_angle_tolerance: float = _p(5.0, "Tolerance on cell angles vs unit_cell.",
                                         "indexing.known_symmetry.absolute_angle_tolerance",
                                         units="deg", min=0)
    n_macro_cycles: int = _p(5, "Cycles of index assignment and refinement at increasing "
                             "resolution.", "indexing.refinement_protocol.n_macro_cycles", min=1,
                             max=100)
    d_min_step: float | None = _p(None, "Resolution step between macro-cycles (None: "
                                  "from d_min_start to d_min_final in n_macro_cycles).",
                                  "indexing.refinement_protocol.d_min_step", units="A", min=0)
    d_min_start: float | None = _p(None, "Resolution of the first macro-cycle.",
                                   "indexing.refinement_protocol.d_min_start", units="A",
                                   min=0, min_exclusive=True)
    d_min_final: float | None = _p(None, "Resolution of the last macro-cycle (None: all spots).",
                                   "indexing.refinement_protocol.d_min_final", units="A",
                                   min=0, min_exclusive=True)
    joint_indexing: bool | str = _p(
        "Auto", "Several sweeps: True indexes them together as one crystal (one crystal model "
        "shared by every sweep: a single crystal measured in several sweeps or goniometer "
        "settings); False indexes each sweep on its own (one crystal model per sweep: "
        "different crystals). Auto: jointly when one lattice indexes every sweep, else each "
        "on its own (DIALS's Auto stops and asks instead).",
        "indexing.joint_indexing", type="bool")
    max_lattices: int = _p(1, "Search for up to this many lattices among the unindexed spots.",
                           "indexing.multiple_lattice_search.max_lattices", min=1)
    refinement: RefinementParams = field(
        default_factory=RefinementParams,
        metadata={"help": "Refinement parameters.", "dials": "refinement", "units": ""})
