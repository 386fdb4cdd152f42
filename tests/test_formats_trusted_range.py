"""Valid pixel values on counting detectors: a zero-count pixel is valid data, module gaps
(-1) and bad pixels (-2) are not (Panel.valid_range, used by spot finding and
integration). DIALS integrates nothing on an SMV sweep whose trusted minimum marks the
zero-count pixels invalid."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.formats import read_models, read_pixels
from gonio.core.formats.reader import ImageSequenceReader
from gonio.core.importer import ImportOverrides, import_images
from gonio.core.models.detector import Detector
from gonio.core.spotfinding import SpotFinderParams, find_spots
from tests.conftest import data_path


def _valid(panel, image) -> np.ndarray:
    lo, hi = panel.valid_range()
    return (image > lo) & (image < hi)


def test_timepix_zero_counts_are_valid():
    """The Timepix SMV (trusted (-1, 65535)) and the same detector read with dxtbx's newer
    inclusive minimum 0 (a DIALS .expt, or trusted_range=0,65535): zeros stay valid and
    spot finding finds the same spots."""
    path = str(data_path("images", "TIMEPIX_SU_516-stdgoni_0001.img"))
    image = read_pixels(path)[0]
    assert (image == 0).mean() > 0.01  # 1.8 % of this image's pixels count no electron
    found = []
    for trusted in (None, (0.0, 65535.0)):
        overrides = ImportOverrides(trusted_range=trusted) if trusted else None
        (expt,) = import_images([path], overrides=overrides)
        panel = expt.detector[0]
        assert panel.is_counting and _valid(panel, image).all()
        strong, _ = find_spots([expt], [ImageSequenceReader(expt)], SpotFinderParams(nproc=1))
        found.append(strong["xyzobs.px.value"])
    assert len(found[0]) >= 10
    np.testing.assert_array_equal(found[0], found[1])


def test_non_counting_detectors_keep_the_trusted_minimum():
    """A CCD's trusted minimum is its pedestal less one: values at it stay invalid."""
    path = str(data_path("images", "TIMEPIX_SU_516-stdgoni_0001.img"))
    _, detector, _, _ = read_models(path)
    ccd = detector[0].replace(type="SENSOR_CCD", trusted_range=(0.0, 65535.0))
    image = read_pixels(path)[0]
    np.testing.assert_array_equal(_valid(ccd, image), image > 0)
    user = detector[0].replace(trusted_range=(5.0, 65535.0))  # a deliberate user minimum
    np.testing.assert_array_equal(_valid(user, image), image > 5)


def test_simulated_electron_smv_with_no_pedestal():
    """simtbx's electron still (BEAMLINE=fake, ADC_OFFSET=0): half its pixels record no
    electron. dxtbx's minimum 1 - ADC_OFFSET = 1 would drop them and every 1; gonio keeps
    them (minimum pedestal - 1)."""
    path = str(data_path("images", "simtbx_FormatSMVJHSim_001.img"))
    _, detector, _, _ = read_models(path)
    image = read_pixels(path)[0]
    assert (image == 0).mean() > 0.4
    assert _valid(detector[0], image).all()
    dxtbx = detector[0].replace(trusted_range=(1.0, 65535.0))
    assert _valid(dxtbx, image).mean() < 0.5


@pytest.fixture(scope="module")
def pilatus():
    src = str(data_path("images", "thau_3_2_0001.cbf.bz2"))
    return read_models(src)[1], read_pixels(src)[0]


@pytest.mark.parametrize("trusted", [None, (0.0, 115897.0)])
def test_pilatus_gaps_stay_invalid(pilatus, trusted):
    detector, image = pilatus
    panel = detector[0] if trusted is None else detector[0].replace(trusted_range=trusted)
    gaps = image < 0
    assert gaps.sum() > 100000 and set(np.unique(image[gaps])) <= {-1, -2}
    valid = _valid(panel, image)
    np.testing.assert_array_equal(valid, ~gaps & (image < panel.trusted_range[1]))
    assert (image == 0).sum() > 0 and valid[image == 0].all()


def test_simulated_ed_c2_sweep_keeps_its_zero_counts(tmp_path):
    """The simulator's ed_c2 preset (Timepix-like, 0.3 counts of background per pixel):
    written as SMV and imported with the defaults, its many zero-count pixels are valid and
    spot finding finds its spots."""
    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams

    p = SimulationParams.from_preset("ed_c2", n_images=3, output=str(tmp_path / "sim"), seed=3)
    sweep = simulate(p)
    (expt,) = import_images([str(tmp_path / "sim")])
    reader = ImageSequenceReader(expt)
    image = reader.read(0)[0]
    assert (image == 0).mean() > 0.5
    assert _valid(expt.detector[0], image).all()
    # the simulator's own detector model is a counting one, and keeps them too
    truth_panel = sweep.header_experiments[0].detector[0]
    assert truth_panel.is_counting and _valid(truth_panel, image).all()
    strong, _ = find_spots([expt], [reader], SpotFinderParams(nproc=1))
    assert len(strong) > 30
    # the same images with the zeros marked invalid lose most of the background
    zero_invalid = Detector([expt.detector[0].replace(type="SENSOR_CCD",
                                                      trusted_range=(0.0, 65535.0))])
    assert _valid(zero_invalid[0], image).mean() < 0.5
