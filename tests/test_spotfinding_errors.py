"""Bad input to spot finding: a clear SpotFinderError (a GonioError) before or instead of results."""

import os

import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.formats.reader import InMemoryReader
from gonio.core.models.beam import Beam
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.experiment import Experiment
from gonio.core.models.imageset import ImageSetRef
from gonio.core.models.scan import Scan
from gonio.core.spotfinding import SpotFinderError, SpotFinderParams, find_spots


def experiment(shape=(64, 80), n=3):
    ny, nx = shape
    panel = Panel(origin=[-4.0, 3.2, -100.0], image_size=(nx, ny), pixel_size=(0.1, 0.1),
                  trusted_range=(-1, 1e6), type="SENSOR_PAD")
    return Experiment(beam=Beam(wavelength=1.0), detector=Detector([panel]),
                      scan=Scan((1, n), (0.0, 0.5)), imageset=ImageSetRef(kind="ImageSequence"))




class FileReader:
    """Reads .npy frames from disk on each call, like a lazy image reader."""

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]

    def __len__(self):
        return len(self.paths)

    def read(self, i):
        return (np.load(self.paths[i]),)


def frames(n=3, shape=(64, 80)):
    rng = np.random.default_rng(0)
    return [rng.poisson(2.0, shape).astype(np.int32) for _ in range(n)]


@pytest.mark.parametrize("kw, words", [
    (dict(d_min=20.0, d_max=5.0), ["d_min=20.0", "d_max=5.0", "did you mean d_min=5.0 d_max=20.0"]),
    (dict(d_min=5.0, d_max=5.0), ["is not below"]),
    (dict(nproc=0), ["nproc=0"]),
    (dict(kernel_size=(0, 3)), ["kernel_size"]),
    (dict(threshold_algorithm="otsu"), ["otsu", "dispersion_extended"]),
    (dict(gain=0.0), ["gain"]),
    (dict(min_local=1), ["min_local"]),
    (dict(scan_range=((3, 1),)), ["scan_range"]),
    (dict(border=-3), ["border=-3", "negative"]),
    (dict(max_separation=-1.0), ["max_separation=-1.0", "negative"]),
    (dict(ice_rings_d_min=0.0), ["ice_rings.d_min=0.0", "positive"]),
])
def test_bad_parameters(kw, words):
    with pytest.raises(SpotFinderError) as e:
        find_spots([experiment()], [InMemoryReader(frames())], SpotFinderParams(**kw))
    assert isinstance(e.value, GonioError)
    for w in words:
        assert w in str(e.value)


def test_kernel_larger_than_the_image():
    with pytest.raises(SpotFinderError, match=r"larger than panel 0 \(80 x 64 px\)"):
        find_spots([experiment()], [InMemoryReader(frames())],
                   SpotFinderParams(kernel_size=(50, 3), nproc=1))


def test_scan_range_outside_the_sweep():
    with pytest.raises(SpotFinderError, match="outside the images of this sweep"):
        find_spots([experiment()], [InMemoryReader(frames())],
                   SpotFinderParams(scan_range=((2, 9),), nproc=1))


@pytest.mark.parametrize("nproc, executor", [(1, "thread"), (2, "thread"), (2, "process")])
def test_missing_image_file_is_named(tmp_path, nproc, executor):
    paths = []
    for i, f in enumerate(frames(4)):
        paths.append(tmp_path / f"sweep_{i + 1:04d}.npy")
        np.save(paths[-1], f)
    paths[2].unlink()  # image 3 deleted after import
    with pytest.raises(SpotFinderError) as e:
        find_spots([experiment(n=4)], [FileReader(paths)], SpotFinderParams(nproc=nproc),
                   executor=executor)
    msg = str(e.value)
    assert "Image 3 could not be read" in msg and "sweep_0003.npy" in msg
    assert "moved or deleted" in msg


def test_panel_shape_mismatch():
    with pytest.raises(SpotFinderError, match="detector model says"):
        find_spots([experiment()], [InMemoryReader(frames(3, (60, 80)))], SpotFinderParams(nproc=1))


def test_too_many_strong_pixels():
    rng = np.random.default_rng(1)
    # pixel-to-pixel stripes: half the image is far above its neighbours
    img = [np.where(np.indices((64, 80)).sum(0) % 2 == 0, 1000, 1).astype(np.int32)
           + rng.poisson(1, (64, 80)).astype(np.int32) for _ in range(3)]
    with pytest.raises(SpotFinderError, match="max_strong_pixel_fraction"):
        find_spots([experiment()], [InMemoryReader(img)],
                   SpotFinderParams(threshold_algorithm="dispersion", nproc=1))


def test_mask_of_the_wrong_shape():
    with pytest.raises(SpotFinderError, match="one mask per panel"):
        find_spots([experiment()], [InMemoryReader(frames())],
                   SpotFinderParams(nproc=1, mask=(np.ones((10, 10), bool),)))


def test_reader_shorter_than_the_sweep():
    with pytest.raises(SpotFinderError, match="re-import"):
        find_spots([experiment(n=5)], [InMemoryReader(frames(3))], SpotFinderParams(nproc=1))


def test_user_mask_removes_spots():
    rng = np.random.default_rng(4)
    img = [rng.poisson(1.0, (64, 80)).astype(np.int32) for _ in range(3)]
    for f in img:
        f[30:33, 40:43] += 200  # one bright 3x3 spot on every frame, joined in 3D
    strong, _ = find_spots([experiment()], [InMemoryReader(img)], SpotFinderParams(nproc=1))
    assert len(strong) == 1
    assert np.allclose(strong["xyzobs.px.value"][0], [41.5, 31.5, 1.5], atol=0.05)
    assert tuple(strong["bbox"][0]) == (40, 43, 30, 33, 0, 3)
    mask = np.ones((64, 80), bool)
    mask[25:40, 35:50] = False
    strong, _ = find_spots([experiment()], [InMemoryReader(img)],
                           SpotFinderParams(nproc=1, mask=(mask,)))
    assert len(strong) == 0


def test_a_huge_nproc_runs_as_many_threads_as_make_sense():
    """nproc=1000000000 (a slip of the keyboard) once tried to start that many threads and
    failed after 40 s with an internal error; the step now runs no more threads than
    images, and no more than four per core, with the spots of nproc=1."""
    from gonio.core.threads import MAX_THREADS_PER_CORE, usable_threads

    assert usable_threads(10**9) == MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    assert usable_threads(1) == 1
    images = frames()
    for k, image in enumerate(images):
        image[20 + 5 * k:23 + 5 * k, 30:33] += 200  # a 3 x 3 px spot on every image
    one, _ = find_spots([experiment()], [InMemoryReader(images)], SpotFinderParams(nproc=1))
    many, _ = find_spots([experiment()], [InMemoryReader(images)], SpotFinderParams(nproc=10**9))
    assert len(one) == len(many) > 0
    assert np.array_equal(one["xyzobs.px.value"], many["xyzobs.px.value"])
