"""The integrate step keeps a summary of its reference profiles (Kabsch (2010)) in the
state's data, and `report` draws them: checked on a simulated sweep, whose spots are
Gaussians centred on their predictions, so every reference profile peaks at the centre of
its grid."""

from __future__ import annotations

import json

import numpy as np

from gonio.shell.session import Session


def ok(s, line):
    r = s.run_line(line)
    assert r.ok, r.text
    return r


def test_report_draws_the_reference_profiles_integrate_kept(tmp_path):
    s = Session(tmp_path)
    try:
        for line in ("simulate preset=lysozyme n_images=8 image_size=512,512 d_min=2.5 "
                     "output=sim seed=3", "import sim/image_#####.cbf", "findspots", "index",
                     "integrate nproc=1"):
            ok(s, line)
        summary = s.state.data["integrate"]["reference_profiles"]
        refs = summary["references"]
        assert refs and len(json.dumps(summary)) < 30_000
        assert summary["n_integrated"] == len(s.state.reflections["integrated"])
        nx, ny = s.state.experiments[0].detector[0].image_size
        for r in refs:
            z = np.array(r["slice"])
            n = len(z)
            # the peak is at the centre of the e1-e2 slice and of the rocking profile
            assert np.unravel_index(np.argmax(z), z.shape) == (n // 2, n // 2)
            assert z[n // 2, n // 2] == 1.0 and z[0, 0] < 0.1 and z[-1, -1] < 0.1
            rock = np.array(r["rocking"])
            assert abs(int(np.argmax(rock)) - len(rock) // 2) <= 1
            assert rock[0] < 0.2 and rock[-1] < 0.2
            assert 0 <= r["x"] <= nx and 0 <= r["y"] <= ny and 1 <= r["image"] <= 8
        assert sum(r["n_reference"] for r in refs) > 0
        ok(s, "report")
        html = (tmp_path / "gonio_report.html").read_text()
        assert "Reference profiles: central e1-e2 slice" in html
        assert "Reference profiles along e3" in html
        assert html.count('"type":"heatmap"') == len(refs)
    finally:
        s.close()
