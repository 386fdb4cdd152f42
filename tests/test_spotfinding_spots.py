"""Spots on simulated sweeps (truth known), DIALS centroid conventions, histogram text."""

from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from gonio.core.formats.reader import InMemoryReader
from gonio.core.models.beam import Beam
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.experiment import Experiment
from gonio.core.models.imageset import ImageSetRef
from gonio.core.models.scan import Scan
from gonio.core.spotfinding import SpotFinderParams, UntrustedRegion, find_spots
from gonio.core.spotfinding.histogram import spot_count_histogram
from gonio.core.spotfinding.spots import SpotPixels, make_shoeboxes, measure_spots

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"




def sweep_experiment(shape, n_frames, first=1):
    ny, nx = shape
    panel = Panel(origin=[-nx * 0.05, ny * 0.05, -100.0], image_size=(nx, ny),
                  pixel_size=(0.1, 0.1), trusted_range=(-1, 1e6), type="SENSOR_PAD")
    return Experiment(beam=Beam(wavelength=1.0), detector=Detector([panel]),
                      scan=Scan((first, first + n_frames - 1), (0.0, 0.5)),
                      imageset=ImageSetRef(kind="ImageSequence"))


def _pixel_integral(edges, centre, sigma):
    c = 0.5 * (1 + erf((edges - centre) / (sigma * np.sqrt(2))))
    return np.diff(c)


def simulate_sweep(rng, shape=(256, 320), n_frames=6, n_spots=40, background=2.0,
                   sigma_xy=1.0, sigma_z=0.6):
    """Gaussian spots on Poisson background; truth (x, y, z) in DIALS px/frame coordinates."""
    ny, nx = shape
    grid = np.stack(np.meshgrid(np.arange(12, nx - 12, 22), np.arange(12, ny - 12, 22)),
                    -1).reshape(-1, 2)
    pick = rng.choice(len(grid), n_spots, replace=False)
    xy = grid[pick] + rng.uniform(-3, 3, (n_spots, 2))
    z = rng.uniform(1.5, n_frames - 1.5, n_spots)
    intensity = rng.uniform(300, 5000, n_spots)
    mean = np.full((n_frames, ny, nx), background)
    for (x0, y0), z0, i0 in zip(xy, z, intensity):
        px = _pixel_integral(np.arange(nx + 1), x0, sigma_xy)
        py = _pixel_integral(np.arange(ny + 1), y0, sigma_xy)
        pz = _pixel_integral(np.arange(n_frames + 1), z0, sigma_z)
        mean += i0 * pz[:, None, None] * py[None, :, None] * px[None, None, :]
    frames = [rng.poisson(m).astype(np.int32) for m in mean]
    return frames, np.column_stack([xy, z]), intensity


def match(found, truth, tol=1.5):
    d = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=2)
    nearest = d.argmin(axis=1)
    return nearest, d[np.arange(len(found)), nearest] < tol


@pytest.mark.parametrize("algorithm, low, median", [("dispersion_extended", 0.6, 0.9),
                                                     ("dispersion", 0.5, 0.7)])
def test_simulated_sweep_spots_and_centroids(algorithm, low, median):
    rng = np.random.default_rng(7)
    frames, truth, intensity = simulate_sweep(rng)
    expt = sweep_experiment(frames[0].shape, len(frames))
    strong, result = find_spots([expt], [InMemoryReader(frames)],
                                SpotFinderParams(threshold_algorithm=algorithm, nproc=1))
    xyz = strong["xyzobs.px.value"]
    nearest, ok = match(xyz, truth)
    # every found spot is a real one, every real one (all I/sigma > 10) is found once
    assert ok.all()
    assert len(strong) == len(truth) == 40
    assert len(np.unique(nearest)) == 40
    err = xyz - truth[nearest]
    rms = np.sqrt((err**2).mean(axis=0))
    assert rms[0] < 0.2 and rms[1] < 0.2 and rms[2] < 0.15, rms
    # spots span frames: z extent > 1 for most, bbox holds the centroid
    b = strong["bbox"]
    assert ((b[:, 5] - b[:, 4]) > 1).mean() > 0.9
    assert np.all((xyz[:, 0] >= b[:, 0]) & (xyz[:, 0] <= b[:, 1]))
    assert np.all((xyz[:, 2] >= b[:, 4]) & (xyz[:, 2] <= b[:, 5]))
    # summed counts (background not subtracted) of the strong pixels only: weak spots lose
    # their tails; dispersion_extended keeps more of each spot than dispersion
    ratio = strong["intensity.sum.value"] / intensity[nearest]
    assert np.all(ratio > low) and np.median(ratio) > median, ratio
    assert np.array_equal(strong["intensity.sum.value"], strong["intensity.sum.variance"])
    assert np.all(strong["xyzobs.px.variance"] > 1 / 12)
    assert np.all(strong["flags"] == 32) and np.all(strong["id"] == 0)
    assert strong.experiment_identifiers == {0: expt.identifier}
    # per-image counts add up and the histogram carries the DIALS header
    assert result.spots_per_image[0].sum() == 40
    assert result.histograms[0].splitlines()[1].startswith("40 spots found on ")
    # shoeboxes: counts on the spot pixels, mask Valid|Foreground (5)
    sb = strong["shoebox"]
    data, background, mask = sb.get(0)
    assert set(np.unique(mask)) <= {0, 5}
    assert data[mask == 5].sum() == strong["intensity.sum.value"][0]
    assert (mask == 5).sum() == strong["n_signal"][0]


def test_sweep_frame_numbering_follows_scan():
    rng = np.random.default_rng(3)
    frames, truth, _ = simulate_sweep(rng, n_frames=5, n_spots=10)
    expt = sweep_experiment(frames[0].shape, len(frames), first=11)
    strong, result = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=1))
    # image 11 is frame z in [10, 11)
    nearest, ok = match(strong["xyzobs.px.value"] - [0, 0, 10], truth)
    assert ok.all() and len(strong) == 10
    assert list(result.image_numbers[0]) == [11, 12, 13, 14, 15]
    # scan_range restricts the search; spots cut by the range end are measured on it
    part, res2 = find_spots([expt], [InMemoryReader(frames)],
                            SpotFinderParams(nproc=1, scan_range=((11, 12),)))
    assert list(res2.image_numbers[0]) == [11, 12]
    assert np.all(part["bbox"][:, 5] <= 12) and np.all(part["bbox"][:, 4] >= 10)


def test_no_false_spots_on_pure_poisson_background():
    """A Pilatus 6M-sized frame pair of pure Poisson noise: measured false-positive rate."""
    rng = np.random.default_rng(11)
    shape = (2527, 2463)
    for background in (0.5, 10.0):
        frames = [rng.poisson(background, shape).astype(np.int32) for _ in range(2)]
        expt = sweep_experiment(shape, 2)
        strong, result = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=1))
        # ~6.2M pixels per frame: the strong pixels are rare single-pixel flukes
        assert result.strong_pixels_per_image[0].max() < 200, result.strong_pixels_per_image
        assert len(strong) <= 1, (background, len(strong))


def test_untrusted_rectangle_and_circle_remove_spots():
    rng = np.random.default_rng(7)
    frames, truth, _ = simulate_sweep(rng)
    expt = sweep_experiment(frames[0].shape, len(frames))
    rect = UntrustedRegion(rectangle=(0, 160, 0, 256))
    strong, _ = find_spots([expt], [InMemoryReader(frames)],
                           SpotFinderParams(nproc=1, untrusted=(rect,)))
    assert np.all(strong["xyzobs.px.value"][:, 0] > 160)
    assert abs(len(strong) - (truth[:, 0] > 163).sum()) <= 2
    circle = UntrustedRegion(circle=(160.0, 128.0, 60.0))
    strong, _ = find_spots([expt], [InMemoryReader(frames)],
                           SpotFinderParams(nproc=1, untrusted=(circle,)))
    r = np.hypot(strong["xyzobs.px.value"][:, 0] - 160, strong["xyzobs.px.value"][:, 1] - 128)
    assert np.all(r > 60) and len(strong) < 40


def test_min_spot_size_auto_and_max_separation():
    rng = np.random.default_rng(7)
    frames, truth, _ = simulate_sweep(rng)
    expt = sweep_experiment(frames[0].shape, len(frames))
    _, r_pad = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=1))
    assert r_pad.min_spot_size == 3
    expt.detector.panels[0].type = "SENSOR_CCD"
    _, r_ccd = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=1))
    assert r_ccd.min_spot_size == 6
    assert r_ccd.n_too_small >= r_pad.n_too_small
    strong, r0 = find_spots([expt], [InMemoryReader(frames)],
                            SpotFinderParams(nproc=1, max_separation=0.3))
    assert len(strong) < r0.n_centroids
    lines = r0.summary_lines()
    assert lines[-1] == f"Filtered {len(strong)} of {r0.n_centroids} spots by peak-centroid distance"


def test_parallel_runs_equal_serial():
    rng = np.random.default_rng(5)
    frames, _, _ = simulate_sweep(rng, n_frames=8)
    expt = sweep_experiment(frames[0].shape, len(frames))
    serial, _ = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=1))
    done = []
    threads, res = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=2),
                              progress=lambda d, t: done.append((d, t)), executor="thread")
    assert threads == serial
    assert done[-1] == (8, 8) and len(done) == 8
    procs, _ = find_spots([expt], [InMemoryReader(frames)], SpotFinderParams(nproc=2),
                          executor="process")
    assert procs == serial


def test_centroids_reproduce_dials_strong_refl():
    """Recompute DIALS's own strong.refl (MyD88) columns from its shoeboxes."""
    path = DATA / "myd88" / "strong.refl"
    if not path.exists():
        pytest.skip(f"real test data not found at {path}")
    from gonio.core.io.dials_refl import read_refl

    t = read_refl(path)
    sb = t["shoebox"]
    parts = []
    for i in range(len(sb)):
        d, _, m = sb.get(i)
        z, y, x = np.nonzero(m & 1)
        b = sb.bbox[i]
        parts.append((z + b[4], y + b[2], x + b[0], d[z, y, x], np.full(len(z), i)))
    p = SpotPixels(*(np.concatenate([q[k] for q in parts]) for k in range(5)))
    s = measure_spots(p)
    assert len(t) == 646
    np.testing.assert_allclose(s.xyz, t["xyzobs.px.value"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.xyz_variance, t["xyzobs.px.variance"], rtol=1e-9)
    assert np.array_equal(s.intensity, t["intensity.sum.value"])
    assert np.array_equal(s.bbox, t["bbox"]) and np.array_equal(s.n_signal, t["n_signal"])
    assert make_shoeboxes(p, s.bbox, 0) == sb
    text = spot_count_histogram(t["xyzobs.px.value"][:, 2])
    lines = text.splitlines()
    assert lines[0].startswith("646 spots found on 72 images (max ")
    assert len(lines) == 12 and all(len(r) == 60 for r in lines[1:11])
    assert lines[-1].startswith("1") and lines[-1].endswith("72") and "image" in lines[-1]


class TwoPanelReader:
    """The simulated frames cut into a left and a right panel."""

    def __init__(self, frames, cut):
        self.frames, self.cut = frames, cut

    def __len__(self):
        return len(self.frames)

    def read(self, i):
        f = self.frames[i]
        return (f[:, :self.cut].copy(), f[:, self.cut:].copy())


def test_two_panel_detector():
    rng = np.random.default_rng(7)
    frames, truth, _ = simulate_sweep(rng)
    ny, nx = frames[0].shape
    cut = 150
    expt = sweep_experiment(frames[0].shape, len(frames))
    p0 = expt.detector.panels[0].replace(image_size=(cut, ny))
    p1 = expt.detector.panels[0].replace(image_size=(nx - cut, ny), name="right")
    expt = expt.replace(detector=Detector([p0, p1]))
    strong, _ = find_spots([expt], [TwoPanelReader(frames, cut)], SpotFinderParams(nproc=1))
    panel = strong["panel"].astype(int)
    xyz = strong["xyzobs.px.value"] + np.where(panel == 1, cut, 0)[:, None] * [1, 0, 0]
    nearest, ok = match(xyz, truth)
    near_cut = np.abs(truth[:, 0] - cut) < 4  # spots split by the panel edge may be lost
    assert ok.all() and len(np.unique(nearest)) == len(strong)
    assert len(strong) >= (~near_cut).sum()
    assert set(panel) == {0, 1}
    assert np.array_equal(strong["shoebox"].panel, strong["panel"])
    assert np.all(strong["bbox"][panel == 0, 1] <= cut)


def test_select_spots_keeps_the_pixels_of_kept_spots_renumbered_in_order():
    label = np.array([0, 1, 0, 2, 3, 1, 3, 3])
    pix = SpotPixels(np.arange(8, dtype=np.int32), np.arange(8) + 10, np.arange(8) + 20,
                     np.arange(8, dtype=np.float32) * 1.5, label)
    sel = pix.select_spots(np.array([True, False, False, True]))
    assert sel.label.tolist() == [0, 0, 1, 1, 1]  # spots 0 and 3, numbered 0 and 1
    assert sel.z.tolist() == [0, 2, 4, 6, 7] and sel.x.tolist() == [20, 22, 24, 26, 27]
    assert sel.value.tolist() == [0.0, 3.0, 6.0, 9.0, 10.5]
    assert [a.dtype for a in (sel.z, sel.y, sel.x, sel.value, sel.label)] == \
        [np.int64] * 3 + [np.float64, np.int64]
    assert pix.select_spots(np.ones(4, bool)) is pix
    assert len(pix.select_spots(np.zeros(4, bool)).label) == 0
