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
