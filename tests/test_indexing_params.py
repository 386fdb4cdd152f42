"""IndexParams / RefinementParams: DIALS names, help and defaults the shell builds on."""

from __future__ import annotations

import dataclasses

from gonio.core.indexing import IndexParams
from gonio.core.refinement import RefinementParams


def test_every_field_has_a_dials_name_and_help():
    for cls in (IndexParams, RefinementParams):
        names = set()
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f.name
            dials = f.metadata.get("dials")
            assert dials, f.name
            assert dials not in names
            names.add(dials)


def test_defaults_are_those_of_dials_index():
    p = IndexParams()
    assert p.method == "fft3d" and p.n_points == 256
    assert p.hkl_tolerance == 0.3 and p.index_assignment == "simple"
    assert p.n_macro_cycles == 5 and p.max_cell_multiplier == 1.3
    assert (p.relative_length_tolerance, p.absolute_angle_tolerance) == (0.1, 5.0)
    r = p.refinement
    assert r.goniometer_fix == ["all"] and r.detector_fix == [] and r.crystal_fix == []
    assert r.beam_fix == ["in_spindle_plane", "wavelength"]
    assert r.reflections_per_degree == 50 and r.bin_size_fraction == 0.0
    assert r.outlier_algorithm == "mcd" and r.tukey_iqr_multiplier == 1.5
    assert r.close_to_spindle_cutoff == 0.02


def test_max_lattices_below_one_is_refused():
    import pytest

    from gonio.shell.commands import lookup
    from gonio.shell.params import ParameterError

    with pytest.raises(ParameterError, match="max_lattices must be >= 1"):
        lookup("index").paramset.parse(["max_lattices=0"], cwd=".")


def test_impossible_values_are_refused_before_the_step_runs():
    """Values no crystallographer means (a negative or zero resolution, cell length, step or
    smoother width, a fraction outside 0-1, a negative seed, a billion grid points or
    shells) are refused with the parameter's range, before the step runs: ``index
    step_size=0`` and ``refine interval_width_degrees=0`` once divided by zero, ``scale
    d_min=-1`` scaled as if no limit had been given, seeds of -1 raised ValueError,
    ``scale n_bins=0`` IndexError, ``n_bins=1000000000`` and ``lmax=1000000000`` ran out of
    time or memory (each step with 0, -1 and 1e9 for every number, 2026-12-07)."""
    import pytest

    from gonio.shell.commands import lookup
    from gonio.shell.params import ParameterError

    cases = [("index", "step_size=0", "step_size must be > 0 deg"),
             ("index", "min_cell=-1", "min_cell must be > 0 A"),
             ("index", "max_cell=0", "max_cell must be > 0 A"),
             ("index", "d_min_start=-2", "d_min_start must be > 0 A"),
             ("index", "hkl_tolerance=0.7", "hkl_tolerance must be > 0 and <= 0.5"),
             ("index", "max_height_fraction=1.5", "between 0 and 1"),
             ("refine", "interval_width_degrees=0", "interval_width_degrees must be > 0 deg"),
             ("refine", "close_to_spindle_cutoff=-0.1", "close_to_spindle_cutoff must be >= 0"),
             ("refine", "outlier.block_width=0", "block_width must be > 0 deg"),
             ("scale", "d_min=-1", "d_min must be > 0 A"),
             ("scale", "d_min=0", "d_min must be > 0 A"),
             ("scale", "d_range=5,-1", "every value of d_range must be > 0 A"),
             ("scale", "partiality_cutoff=2", "between 0 and 1"),
             ("index", "n_points=1000000000", "n_points must be between 2 and 512"),
             ("index", "n_macro_cycles=1000000000", "n_macro_cycles must be between 1 and 100"),
             ("refine", "random_seed=-1", "random_seed must be >= 0"),
             ("symmetry", "seed=-1", "seed must be >= 0"),
             ("scale", "lmax=1000000000", "lmax must be <= 12"),
             ("scale", "n_bins=0", "n_bins must be between 1 and 100"),
             ("merge", "n_bins=1000000000", "n_bins must be between 1 and 100"),
             ("integrate", "tuning_constant=-1", "tuning_constant must be > 0"),
             ("integrate", "grid_size=1000", "grid_size must be between 1 and 25"),
             ("integrate", "nsigma.lower=0", "lower must be > 0"),
             ("integrate", "min_reference_spots=0", "min_reference_spots must be >= 1"),
             ("scale", "decay_restraint=-1", "decay_restraint must be >= 0"),
             ("scale", "surface_weight=-1", "surface_weight must be >= 0"),
             ("scale", "outlier_zmax=0", "outlier_zmax must be > 0"),
             ("scale", "max_percent_removed=150", "between 0 and 100"),
             ("scale", "min_partiality=1.5", "between 0 and 1")]
    for step, word, message in cases:
        with pytest.raises(ParameterError, match=message):
            lookup(step).paramset.parse([word], cwd=".")
    for step, word in [("index", "step_size=30"), ("refine", "interval_width_degrees=10"),
                       ("scale", "d_min=1.8"), ("scale", "partiality_cutoff=1")]:
        lookup(step).paramset.parse([word], cwd=".")  # sensible values still pass
