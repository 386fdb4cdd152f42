"""Integration against the truth of gonio's own simulator: two lattices on one sweep
(overlaps flagged, nothing counted twice) and an electron-diffraction Timepix sweep
with zero-count pixels through the shell with the defaults."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.reflection_table import Flags


def _effective_sigma_b(p) -> float:
    """The simulator's spot: sigma_b in angle plus spot_sigma px (crystal and beam size)."""
    pixel = 0.172 if p.detector == "pilatus" else 0.055
    return float(np.hypot(p.sigma_b, np.rad2deg(p.spot_sigma * pixel / p.distance)))


@pytest.fixture(scope="module")
def two_lattices():
    from gonio.core.formats.reader import InMemoryReader
    from gonio.core.integration.integrate import integrate
    from gonio.core.integration.params import IntegrationParams
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    p = SimulationParams.from_preset("two_lattice", n_images=20, image_size=(768, 768))
    sim = simulate(p)
    reader = InMemoryReader([tuple(im) for im in sim.images])
    params = IntegrationParams(sigma_b=_effective_sigma_b(p), sigma_m=p.sigma_m, nproc=2)
    _, table, result = integrate(sim.experiments, None, params, readers=[reader, reader])
    truth = sim.truth
    key = {(int(i), tuple(int(x) for x in h)): j
           for j, (i, h) in enumerate(zip(truth["id"], truth["miller_index"]))}
    rows = np.array([key.get((int(i), tuple(int(x) for x in h)), -1)
                     for i, h in zip(table["id"], table["miller_index"])])
    assert (rows >= 0).mean() > 0.99
    ok = rows >= 0
    return table.select(ok), truth["intensity.true"][rows[ok]], result


def test_both_lattices_integrate_against_truth(two_lattices):
    table, true, result = two_lattices
    for lattice in (0, 1):
        for kind, flag, tol in (("sum", Flags.integrated_sum, 0.02),
                                ("prf", Flags.integrated_prf, 0.02)):
            i = table[f"intensity.{kind}.value"]
            v = table[f"intensity.{kind}.variance"]
            sel = (table["id"] == lattice) & table.get_flags(flag) & (table["partiality"] > 0.99)
            sel &= i / np.sqrt(np.maximum(v, 1e-12)) > 3
            assert sel.sum() > 1000
            assert np.corrcoef(i[sel], true[sel])[0, 1] > 0.995
            assert abs(np.median(i[sel] / true[sel]) - 1) < tol, (lattice, kind)


def test_weak_and_strong_profile_fits_agree_with_truth(two_lattices):
    """The fit of a weak spot leans on the shape of its reference profile, a strong one's
    is nearly its sum: weak (3-10 sigma, chosen by the true intensity) and strong (> 30
    sigma) reflections both within 1 % of the truth (weak ones were 1.4 % high while the
    reference grid widened the profiles)."""
    table, true, _ = two_lattices
    i = table["intensity.prf.value"]
    ok = table.get_flags(Flags.integrated_prf) & table.get_flags(Flags.integrated_sum) \
        & (table["partiality"] > 0.99)
    strength = true / np.sqrt(np.maximum(table["intensity.sum.variance"], 1e-12))
    for lo, hi in ((3.0, 10.0), (30.0, np.inf)):
        sel = ok & (strength >= lo) & (strength < hi)
        assert sel.sum() > 500
        assert abs(np.median(i[sel] / true[sel]) - 1) < 0.01, (lo, hi)


def test_overlaps_between_lattices_flagged_and_not_counted_twice(two_lattices):
    table, true, result = two_lattices
    over = table.get_flags(Flags.overlapped_fg)
    assert result.n_overlapped == over.sum() > 100
    # a pixel shared by two foregrounds is summed into one reflection only: the shared
    # reflections are not inflated (double counting would put them well above 1)
    sel = over & table.get_flags(Flags.integrated_sum) & (table["partiality"] > 0.99)
    sel &= table["intensity.sum.value"] > 10 * np.sqrt(np.abs(table["intensity.sum.variance"]))
    ratio = table["intensity.sum.value"][sel] / true[sel]
    assert sel.sum() > 50
    assert abs(np.median(ratio) - 1) < 0.03
    # and the overlapped pixels are out of both backgrounds: backgrounds stay unbiased
    bg = table["background.mean"]
    assert abs(np.median(bg[over]) / np.median(bg[~over]) - 1) < 0.05


@pytest.mark.slow
def test_electron_diffraction_timepix_sweep_with_zero_pixels(session):
    """simulate ed_c2 -> import -> findspots -> index -> integrate, all defaults: the
    zero-count pixels are valid data (DIALS's default trusted range drops them)."""
    for line in ("simulate preset=ed_c2 n_images=24 output=ed seed=4", "import ed/image_#####.img",
                 "findspots", "index", "integrate"):
        r = session.run_line(line)
        assert r.ok, r.text
    table = session.state.reflections["integrated"]
    m = session.history.step(session.head).metrics
    assert m["integrated (sum)"] > 0.5 * len(table)
    assert m["integrated (prf)"] > 0.5 * len(table)
    ok = table.get_flags(Flags.integrated_sum)
    # zero pixels are valid data: nearly every shoebox pixel is valid, and the background
    # (mostly zeros) is below one count
    b = table["bbox"][ok].astype(np.int64)
    volume = (b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2]) * (b[:, 5] - b[:, 4])
    assert np.median(table["num_pixels.valid"][ok] / volume) > 0.95
    assert np.median(table["background.mean"][ok]) < 1.0


def test_blocks_threads_and_background_choices_agree():
    """The result does not depend on how the images are cut into blocks or threads; the
    simple background models give the same summation intensities as the GLM."""
    from gonio.core.formats.reader import InMemoryReader
    from gonio.core.integration.integrate import integrate
    from gonio.core.integration.params import IntegrationParams
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    p = SimulationParams.from_preset("lysozyme", n_images=10, image_size=(512, 512))
    sim = simulate(p)
    reader = InMemoryReader([tuple(im) for im in sim.images])
    base = dict(sigma_b=_effective_sigma_b(p), sigma_m=p.sigma_m)
    runs = [integrate(sim.experiments, None, IntegrationParams(**base, **kw), readers=[reader])[1]
            for kw in (dict(nproc=2), dict(block_size=1, nproc=1),
                       dict(background_algorithm="simple", simple_model="linear3d",
                            simple_outlier="tukey", profile_fitting=False))]
    a, b, c = runs
    assert np.array_equal(a["miller_index"], b["miller_index"])
    for col in ("intensity.sum.value", "intensity.prf.value", "background.mean"):
        assert np.allclose(a[col], b[col], equal_nan=True)
    assert "intensity.prf.value" not in c
    ok = a.get_flags(Flags.integrated_sum) & c.get_flags(Flags.integrated_sum)
    ok &= a["intensity.sum.value"] > 10 * np.sqrt(np.abs(a["intensity.sum.variance"]))
    assert ok.sum() > 100
    assert abs(np.median(c["intensity.sum.value"][ok] / a["intensity.sum.value"][ok]) - 1) < 0.02


def test_reflections_beyond_the_signal_are_profile_fitted_with_the_nearest_rings_profile():
    """A sweep whose spots stop at 3 A on a detector that reaches 1.8 A: the resolution
    rings beyond the signal learn no reference profile, and their reflections are fitted
    with the nearest ring's (as DIALS fits every reflection with the profile of the
    nearest grid point that has one), not left without intensity.prf; their true
    intensity is 0, so I_prf / sigma is centred on 0 with a spread near 1."""
    from gonio.core.formats.reader import InMemoryReader
    from gonio.core.integration.integrate import integrate
    from gonio.core.integration.params import IntegrationParams
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    p = SimulationParams.from_preset("lysozyme", n_images=20, image_size=(512, 512),
                                     d_min=3.0, distance=100.0)
    sim = simulate(p)
    reader = InMemoryReader([tuple(im) for im in sim.images])
    params = IntegrationParams(sigma_b=_effective_sigma_b(p), sigma_m=p.sigma_m, nproc=2)
    _, table, _ = integrate(sim.experiments, None, params, readers=[reader])
    beyond = table.get_flags(Flags.integrated_sum) & (table["d"] < 2.7)
    assert beyond.sum() > 1000 and table["d"].min() < 1.9
    fitted = beyond & table.get_flags(Flags.integrated_prf)
    assert fitted.sum() > 0.99 * beyond.sum()
    z = table["intensity.prf.value"][fitted] / np.sqrt(table["intensity.prf.variance"][fitted])
    assert abs(z.mean()) < 0.15 and 0.8 < z.std() < 1.2
