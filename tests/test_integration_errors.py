"""Bad input to integrate: one-paragraph errors, session unchanged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gonio.core.integration.params import IntegrationError, IntegrationParams
from tests.conftest import data_path
from tests.test_integration_nanobragg import nanobragg_experiment


def _run(experiments, readers=None, **kw):
    from gonio.core.integration.integrate import integrate

    return integrate(experiments, None, IntegrationParams(**kw), readers=readers)


def test_integrate_before_index_says_run_index(session):
    folder = data_path("nanobragg_c2")
    r = session.run_line(f"import {folder}/c2_####.cbf.gz image_range=1,3")
    assert r.ok, r.text
    before = session.head
    r = session.run_line("integrate")
    assert not r.ok
    assert "index" in r.text and "first" in r.text
    assert session.head == before


@pytest.mark.parametrize("kw, words", [
    (dict(sigma_b=0.09, sigma_m=0.0), "sigma_m=0.0"),
    (dict(sigma_b=-1.0, sigma_m=0.3), "sigma_b=-1.0"),
    (dict(sigma_b=0.09, sigma_m=0.3, d_min=0.0), "d_min=0.0"),
    (dict(sigma_b=0.09, sigma_m=0.3, d_min=-2.0), "d_min=-2.0"),
    (dict(sigma_b=0.09, sigma_m=0.3, d_min=3.0, d_max=2.0), "d_max=2.0"),
    (dict(sigma_m_model="linear"), "sigma_m_model='linear'"),
    (dict(sigma_b=1e9, sigma_m=0.3), "wider than any Bragg spot"),  # once an IndexError
    (dict(sigma_b=0.09, sigma_m=45.0), "sigma_m=45.0"),
    (dict(n_sigma=1e9), "n_sigma=1000000000.0 must be positive and at most 10"),
])
def test_impossible_parameters(kw, words):
    with pytest.raises(IntegrationError, match=words.replace(".", r"\.")):
        IntegrationParams(**kw).validate()


def test_resolution_beyond_the_detector():
    e, _ = nanobragg_experiment(data_path("nanobragg_c2"), 3)
    with pytest.raises(IntegrationError, match="beyond the detector"):
        _run([e], sigma_b=0.09, sigma_m=0.39, d_max=1.0)
    with pytest.raises(IntegrationError, match="diffraction limit"):
        _run([e], sigma_b=0.09, sigma_m=0.39, d_min=0.3)


def test_images_moved_since_import_are_named(tmp_path):
    folder = data_path("nanobragg_c2")
    for i in (1, 2, 3):
        shutil.copy(folder / f"c2_{i:04d}.cbf.gz", tmp_path)
    shutil.copy(folder / "truth.json", tmp_path)
    e, _ = nanobragg_experiment(tmp_path, 3)
    (tmp_path / "c2_0002.cbf.gz").unlink()
    with pytest.raises(IntegrationError, match="c2_0002.cbf.gz"):
        _run([e], sigma_b=0.09, sigma_m=0.39)


def test_all_zero_images():
    from gonio.core.formats.reader import InMemoryReader

    e, _ = nanobragg_experiment(data_path("nanobragg_c2"), 3)
    nx, ny = e.detector[0].image_size
    zeros = InMemoryReader([np.zeros((ny, nx), np.int32)] * 3)
    with pytest.raises(IntegrationError, match="is zero"):
        _run([e], readers=[zeros], sigma_b=0.09, sigma_m=0.39, d_min=3.0)


def test_no_crystal():
    e, _ = nanobragg_experiment(data_path("nanobragg_c2"), 3)
    with pytest.raises(IntegrationError, match="index"):
        _run([e.replace(crystal=None)], sigma_b=0.09, sigma_m=0.39)
