"""The absorption surface the report draws: the scaling model's spherical-harmonic term."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.scaling.model import HARMONICS, absorption_surface


def test_surface_of_the_first_harmonic_is_a_cosine_of_the_polar_angle():
    lmax = 2
    p = np.zeros(lmax * (lmax + 2))
    p[1] = 0.1  # l=1, m=0: sqrt(3 / 4 pi) cos(theta)
    polar, azimuth, values = absorption_surface(p, lmax, n_polar=7, n_azimuth=5)
    expected = 1 + 0.1 * np.sqrt(3 / (4 * np.pi)) * np.cos(np.radians(polar))
    assert np.allclose(values, expected[:, None])


def test_only_models_that_name_gonio_harmonics_are_drawn():
    from gonio.core.models.experiment import Experiment
    from gonio.core.report.scaling import ScaledSeries, absorption_figures

    cfg = {"lmax": 1, "gonio_harmonics": HARMONICS}
    ours = Experiment(scaling_model={"absorption": {"parameters": [0.0, 0.05, 0.0]},
                                     "configuration_parameters": cfg})
    theirs = Experiment(scaling_model={"absorption": {"parameters": [0.0, 0.05, 0.0]},
                                       "configuration_parameters": {"lmax": 1}})
    figs = absorption_figures([ScaledSeries("", [ours, theirs], None, None)])
    assert len(figs) == 1
    z = np.asarray(figs[0]["data"][0]["z"])
    assert z.max() == pytest.approx(1 + 0.05 * np.sqrt(3 / (4 * np.pi)), rel=1e-3)
