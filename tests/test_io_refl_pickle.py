"""Old-style (pickled, DIALS 1.x) reflection files: decoded without cctbx."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from gonio.core.io.dials_refl import ReflectionFileError, read_refl, refl_from_bytes, refl_to_bytes
from gonio.core.reflection_table import Flags


def test_lcysteine_pickle_columns_and_physics():
    t = read_refl(data_path("l_cysteine_4_sweeps_scaled", "scaled_20_25.refl"))
    assert len(t) == 9972 and t.experiment_identifiers == {0: "0", 1: "1"}
    assert np.unique(t["id"]).tolist() == [0, 1]
    assert t["miller_index"].dtype == np.int32 and t["miller_index"].shape == (9972, 3)
    assert t["bbox"].shape == (9972, 6) and t["flags"].dtype == np.uint64
    assert t["entering"].dtype == bool
    # DIALS's scale intensity is the summation intensity * lp / dqe / partiality here
    ok = ~t.get_flags(Flags.bad_for_scaling, all_bits=False)
    expect = t["intensity.sum.value"][ok] * t["lp"][ok] / t["dqe"][ok] / t["partiality"][ok]
    assert np.allclose(t["intensity.scale.value"][ok], expect, rtol=1e-9)
    # d agrees with the Miller indices and the cell (5.48, 8.22, 12.15, orthorhombic)
    has_d = t["d"] > 0
    h = t["miller_index"][has_d].astype(float)
    d = 1 / np.sqrt((h[:, 0] / 5.481536) ** 2 + (h[:, 1] / 8.215784) ** 2 + (h[:, 2] / 12.145705) ** 2)
    assert has_d.sum() > 6000 and np.allclose(t["d"][has_d], d, rtol=1e-5)
    # the observed frame is within the scan (1800 images)
    assert t["xyzobs.px.value"][:, 2].max() <= 1800


def test_pickle_round_trips_to_msgpack():
    t = read_refl(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl"))
    assert refl_from_bytes(refl_to_bytes(t)) == t


def test_broken_pickle_is_a_clear_error():
    raw = data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl").read_bytes()
    with pytest.raises(ReflectionFileError, match="Python pickle"):
        refl_from_bytes(raw[: len(raw) // 3], "cut.refl")
