"""Profile fitting through the whole shell pipeline on gonio's simulated lysozyme sweep
(PILATUS geometry with module gaps, gonio's own index and estimated profile model): no
unphysical fit is flagged integrated_prf, the profile-fitted variances are honest, and
the profile-fitted intensities give the crystal's Laue group."""

from __future__ import annotations

import numpy as np
import pytest

from gonio.core.reflection_table import Flags


@pytest.mark.slow
def test_profile_fits_are_measurements_and_give_the_true_laue_group(session):
    from gonio.core.io.dials_refl import read_refl

    for line in ("simulate preset=lysozyme n_images=40 output=sim seed=3",
                 "import sim/image_#####.cbf", "findspots", "index", "integrate"):
        r = session.run_line(line)
        assert r.ok, r.text
    table = session.state.reflections["integrated"]
    truth = read_refl(session.folder / "sim" / "truth.refl")
    prf = table.get_flags(Flags.integrated_prf)
    assert prf.sum() > 0.8 * len(table)
    i_prf, v_prf = table["intensity.prf.value"], table["intensity.prf.variance"]
    v_sum = table["intensity.sum.variance"]
    # a profile fit is a measurement of the spot: never orders of magnitude less precise
    # than summing its pixels (fits extrapolated from a profile lying mostly on gap
    # pixels gave 1e3-1e6 times the summation variance and intensities of 1e5 for
    # reflections of a few photons)
    assert np.all(v_prf[prf] < 100 * np.maximum(v_sum[prf], 1.0))
    # against the simulator's truth: the same event at the same place (gonio indexes in
    # its own basis, so match by predicted position, px and frames)
    from scipy.spatial import cKDTree

    dist, rows = cKDTree(truth["xyzcal.px"]).query(table["xyzcal.px"])
    sel = prf & (dist < 1.0) & (table["partiality"] > 0.99)
    assert sel.sum() > 2000
    true = truth["intensity.true"][rows[sel]]
    z = (i_prf[sel] - true) / np.sqrt(v_sum[sel])
    assert np.mean(np.abs(z) > 10) < 0.002
    # the variances are the fit's own: (I - I_true) / sigma_prf of about unit width
    zp = (i_prf[sel] - true) / np.sqrt(v_prf[sel])
    assert 0.8 < 1.4826 * np.median(np.abs(zp - np.median(zp))) < 1.3
    r = session.run_line("symmetry")
    assert r.ok, r.text
    m = session.history.step(session.head).metrics
    assert "Intensities: prf" in r.text
    assert m["laue_group"] == "P 4/m m m", r.text
