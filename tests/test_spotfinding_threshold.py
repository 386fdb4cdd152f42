"""Strong-pixel masks on the real thaumatin Pilatus3 6M image vs scipy.ndimage references."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from gonio.core.formats.reader import InMemoryReader
from gonio.core.models.beam import Beam
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.experiment import Experiment
from gonio.core.spotfinding import SpotFinderParams, find_spots
from gonio.core.spotfinding.threshold import threshold_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRUSTED = (-1.0, 115897.0)  # Pilatus: gaps at -1 are outside; Count_cutoff from the header


@pytest.fixture(scope="module")
def thaumatin():
    path = DATA / "images" / "thau_3_2_0001.cbf.bz2"
    if not path.exists():
        pytest.skip(f"real test data not found at {path}")
    fabio = pytest.importorskip("fabio")
    return fabio.open(str(path)).data




def thaumatin_experiment():
    px = 0.172  # header: Beam_xy (1261.61, 1306.96) px, distance 351 mm, 0.96859 A
    panel = Panel(origin=[-1261.61 * px, 1306.96 * px, -351.0], image_size=(2463, 2527),
                  pixel_size=(px, px), trusted_range=TRUSTED, type="SENSOR_PAD")
    return Experiment(beam=Beam(wavelength=0.96859), detector=Detector([panel]))


def window_sums(valid, image, k):
    """Sums over the clipped (2k+1)^2 window, exact integers."""
    ones = np.ones((2 * k[1] + 1, 2 * k[0] + 1), np.int64)
    v = np.where(valid, image, 0).astype(np.int64)
    corr = lambda a: ndimage.correlate(a, ones, mode="constant", cval=0)  # noqa: E731
    return corr(valid.astype(np.int64)), corr(v), corr(v * v)


def reference_dispersion(image, valid, k=(3, 3), gain=1.0, nsig_b=6.0, nsig_s=3.0,
                         min_local=2, threshold=0.0):
    """The dispersion definition written out directly."""
    n, s, q = window_sums(valid, image, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / n
        var = (q - s * s / n) / (n - 1)
        return (valid & (n >= min_local) & (var / mean > gain * (1 + nsig_b * np.sqrt(2 / (n - 1))))
                & (image > mean + nsig_s * np.sqrt(gain * mean)) & (image > threshold))


def reference_dispersion_extended(image, valid, k=(3, 3), nsig_b=6.0, nsig_s=3.0, min_local=2):
    """dispersion_extended: dispersion-only mask, erosion, mean of background in a wider window."""
    n, s, q = window_sums(valid, image, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / n
        var = (q - s * s / n) / (n - 1)
        signal = (n >= min_local) & (var / mean > 1 + nsig_b * np.sqrt(2 / (n - 1)))
    signal = signal | ~valid
    h = min(k) - 1
    core = ndimage.binary_erosion(signal, np.ones((2 * h + 1, 2 * h + 1), bool), border_value=1)
    background = valid & ~core
    nb, sb, _ = window_sums(background, image, (k[0] + 2, k[1] + 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_b = np.where(nb >= 2, sb / np.maximum(nb, 1), 0.0)
    return valid & core & (image > 0) & (image >= mean_b + nsig_s * np.sqrt(mean_b))


def test_dispersion_mask_equals_reference_full_image(thaumatin):
    valid = (thaumatin > TRUSTED[0]) & (thaumatin < TRUSTED[1])
    ours = threshold_image(thaumatin, np.ones_like(valid), TRUSTED, "dispersion")
    ref = reference_dispersion(thaumatin, valid)
    assert ref.sum() == 2172
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("kw", [dict(k=(2, 4), gain=1.5, nsig_b=4.0, nsig_s=2.0, min_local=5,
                                     threshold=2.0)])
def test_dispersion_mask_other_parameters_crop(thaumatin, kw):
    crop = thaumatin[1000:1600, 900:1700]
    valid = (crop > TRUSTED[0]) & (crop < TRUSTED[1])
    static = np.ones_like(valid)
    static[100:140, 200:260] = False  # a user-masked block joins the invalid pixels
    ours = threshold_image(crop, static, TRUSTED, "dispersion", kernel_size=kw["k"],
                           gain=kw["gain"], sigma_background=kw["nsig_b"],
                           sigma_strong=kw["nsig_s"], min_local=kw["min_local"],
                           global_threshold=kw["threshold"])
    ref = reference_dispersion(crop, valid & static, **kw)
    assert ref.sum() > 100
    assert np.array_equal(ours, ref)


def test_dispersion_extended_mask_equals_reference_crop(thaumatin):
    crop = thaumatin[800:1800, 700:1900]  # includes a module gap row and column
    valid = (crop > TRUSTED[0]) & (crop < TRUSTED[1])
    ours = threshold_image(crop, np.ones_like(valid), TRUSTED, "dispersion_extended")
    ref = reference_dispersion_extended(crop, valid)
    assert ref.sum() > 500
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("n_spots", [6, 400])
def test_masks_with_bright_peaks_equal_reference(n_spots):
    """Peaks above the int32 accumulator bound (6620 counts for a 7x7 window):
    a few take the exact re-summation of their windows, many (over 1024
    pixels) the fallback to wide sums; both must give the reference masks."""
    rng = np.random.default_rng(7)
    ny, nx = 300, 420
    yy, xx = np.mgrid[0:ny, 0:nx]
    flux = np.full((ny, nx), 8.0)
    for cy, cx in zip(rng.uniform(5, ny - 5, n_spots), rng.uniform(5, nx - 5, n_spots)):
        flux += 40000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.8 ** 2))
    image = rng.poisson(flux).astype(np.int32)
    image[:, 200:203] = -1  # a module gap
    n_bright = int((image >= 6620).sum())
    assert (0 < n_bright < 1024) if n_spots == 6 else (n_bright > 1024)
    valid = (image > TRUSTED[0]) & (image < TRUSTED[1])
    ours = threshold_image(image, np.ones_like(valid), TRUSTED, "dispersion")
    ref = reference_dispersion(image, valid)
    assert ref[image >= 6620].mean() > 0.99  # bright pixels are strong (bar overlaps)
    assert np.array_equal(ours, ref)
    ours = threshold_image(image, np.ones_like(valid), TRUSTED, "dispersion_extended")
    ref = reference_dispersion_extended(image, valid)
    assert ref.sum() > n_bright
    assert np.array_equal(ours, ref)


def test_spot_count_follows_from_mask(thaumatin):
    """Spots = 4-connected components of the mask with >= 3 px; then the peak filter."""
    valid = (thaumatin > TRUSTED[0]) & (thaumatin < TRUSTED[1])
    ref = reference_dispersion(thaumatin, valid)
    labels, n = ndimage.label(ref)
    sizes = np.bincount(labels.ravel())[1:]
    strong, result = find_spots([thaumatin_experiment()], [InMemoryReader([thaumatin])],
                                SpotFinderParams(threshold_algorithm="dispersion", nproc=1))
    assert result.n_extracted == n == 519
    assert result.n_too_small == (sizes < 3).sum() == 229
    assert result.n_centroids == (sizes >= 3).sum() == 290
    assert len(strong) == result.n_after_separation == 288
    assert result.strong_pixels_per_image[0][0] == 2172
    assert set(strong["n_signal"]) <= set(sizes[sizes >= 3])


def test_dispersion_extended_full_image_count(thaumatin):
    strong, result = find_spots([thaumatin_experiment()], [InMemoryReader([thaumatin])],
                                SpotFinderParams(nproc=1))
    # the default finds more (weak spot edges) than dispersion, on the same image
    assert result.strong_pixels_per_image[0][0] == 3727
    assert len(strong) == 303
    # a still (no scan): 2D spots on image 1, z in [0, 1)
    assert np.all(strong["xyzobs.px.value"][:, 2] == 0.5) and np.all(strong["bbox"][:, 5] == 1)
    assert result.n_centroids == 310
    assert result.histograms[0] == ("Histogram of per-image spot count for imageset 0:\n"
                                    "303 spots found on 1 image")
    # d_max=20 drops the spots nearest the beam
    strong20, _ = find_spots([thaumatin_experiment()], [InMemoryReader([thaumatin])],
                             SpotFinderParams(nproc=1, d_max=20))
    assert len(strong20) < len(strong)
    panel = thaumatin_experiment().detector[0]
    d = panel.resolution_at_pixel(Beam(wavelength=0.96859).s0, strong20["xyzobs.px.value"][:, :2])
    assert d.max() < 20


def test_panel_mask_rectangles_cover_the_pilatus_gaps(thaumatin):
    """DIALS's Pilatus 6M panel mask (f0, s0, f1, s1; ends excluded) is exactly the -1 gap pixels."""
    import json

    from gonio.core.spotfinding.masks import static_mask

    path = DATA / "x4_xds" / "imported_experiments.json"
    if not path.exists():
        pytest.skip(f"real test data not found at {path}")
    detector = Detector.from_dict(json.loads(path.read_text())["detector"][0])
    assert len(detector[0].mask) == 15
    mask = static_mask(detector[0], None, SpotFinderParams())
    assert (~mask).sum() == (thaumatin == -1).sum() == 526101
    assert np.array_equal(~mask, thaumatin == -1)


def test_resolution_and_ice_ring_masks():
    from gonio.core.spotfinding.masks import ice_ring_ranges, resolution_map, static_mask

    rings = ice_ring_ranges(2.0)
    # hexagonal ice Ih: (100) 3.895 A, (002) 3.669 A, (101) 3.441 A ...; width 0.002 A^-2
    centres = [1 / np.sqrt(0.5 * (1 / lo**2 + 1 / hi**2)) for lo, hi in rings]
    assert np.allclose(centres[:3], [3.8954, 3.669, 3.4406], atol=1e-3)
    assert np.allclose([1 / lo**2 - 1 / hi**2 for lo, hi in rings], 0.002)
    expt = thaumatin_experiment()
    panel = expt.detector[0]
    d = resolution_map(panel, expt.beam)
    mask = static_mask(panel, expt.beam, SpotFinderParams(d_min=2.5, d_max=20.0,
                                                          ice_rings_filter=True))
    on_ring = np.zeros_like(mask)
    for lo, hi in ice_ring_ranges(float(d.min())):
        on_ring |= (d >= lo) & (d <= hi)
    assert np.array_equal(mask, (d > 2.5) & (d < 20.0) & ~on_ring)
    assert on_ring[(d > 2.5) & (d < 20)].mean() > 0.01
    assert not (mask & on_ring).any()


@pytest.mark.parametrize("k", [(3, 3), (1, 2), (4, 2)])
def test_extended_second_stage_at_edges_and_for_every_count_type(k):
    """The second stage runs a few rows behind the first pass and finishes the
    last rows at the end: spots on all four edges (clipped windows) and in
    the last rows, integer counts (packed sliding sums), float counts and
    integers too wide to pack (windows summed afresh) all give the reference."""
    rng = np.random.default_rng(3)
    ny, nx = 90, 130  # more rows than a batch of the second stage (16)
    yy, xx = np.mgrid[0:ny, 0:nx]
    flux = np.full((ny, nx), 3.0)
    centres = [(0, 40), (ny - 1, 70), (45, 0), (30, nx - 1), (ny - 2, 5), (1, nx - 2)]
    centres += list(zip(rng.uniform(0, ny, 25), rng.uniform(0, nx, 25)))
    for cy, cx in centres:
        flux += 300.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
    image = rng.poisson(flux).astype(np.int32)
    image[:, 60:62] = -1  # a module gap
    valid = image > -1
    ref = reference_dispersion_extended(image, valid, k=k)
    assert ref[:3].any() and ref[-3:].any() and ref[:, :3].any() and ref[:, -3:].any()
    static = np.ones_like(valid)
    for im in (image, image.astype(np.float64)):
        ours = threshold_image(im, static, TRUSTED, "dispersion_extended", kernel_size=k)
        assert np.array_equal(ours, ref)
    # integer images with the widest trusted ranges (the default (-inf, inf), or one whose
    # packed int64 sums could overflow) run as float64 and give the same pixels
    with np.errstate(invalid="ignore"):  # the gap's -1 counts make some local means < 0
        ref_all = reference_dispersion_extended(image, np.ones_like(valid), k=k)
    for wide in ((-np.inf, np.inf), (-2.0 ** 53, 2.0 ** 62)):
        ours = threshold_image(image.astype(np.int64), static, wide, "dispersion_extended",
                               kernel_size=k)
        assert np.array_equal(ours, ref_all), wide
