"""Lattice symmetry: Bravais-lattice search (Le Page), refine_bravais_settings, reindexing.

* :func:`find_bravais_settings` - every Bravais lattice compatible with a cell;
* :func:`refine_bravais_settings` - each of them refined (the ``rbs`` step);
* :func:`reindex`, :func:`reindex_to_reference` - change of basis of crystals and
  Miller indices (the ``reindex`` step);
* :func:`parse_change_of_basis`, :func:`change_of_basis_string` - operators as
  DIALS writes them (``a+b,-a+b,c``).
"""

from .bravais import BravaisSetting, LatticeSearchError, chiral_space_groups, find_bravais_settings
from .change_of_basis import ChangeOfBasisError, change_of_basis_string, parse_change_of_basis
from .rbs import (
    RbsError,
    RbsParams,
    RbsResult,
    RbsSolution,
    crystal_in_setting,
    refine_bravais_settings,
    select_solution,
)
from .reindex import ReferenceMatch, ReindexError, reindex, reindex_to_reference
from .symmetry_cc import SymmetryCC, symmetry_correlation

__all__ = [
    "BravaisSetting", "ChangeOfBasisError", "LatticeSearchError", "RbsError", "RbsParams",
    "RbsResult", "RbsSolution", "ReferenceMatch", "ReindexError", "SymmetryCC",
    "change_of_basis_string", "chiral_space_groups", "crystal_in_setting",
    "find_bravais_settings", "parse_change_of_basis", "refine_bravais_settings", "reindex",
    "reindex_to_reference", "select_solution", "symmetry_correlation",
]
