"""The integrate step keeps a summary of its reference profiles (Kabsch (2010)) in the
state's data, and `report` draws them: checked on a simulated sweep, whose spots are
Gaussians centred on their predictions, so every reference profile peaks at the centre of
its grid."""

from __future__ import annotations

import json

import numpy as np
from conftest import run_ok as ok

from gonio.core.report.html import figure_json
from gonio.shell.commands.report import data_sections
from gonio.shell.session import Session


def test_report_draws_the_reference_profiles_integrate_kept(tmp_path):
    s = Session(tmp_path)
    try:
        for line in ("simulate preset=lysozyme n_images=8 image_size=512,512 d_min=2.5 "
                     "output=sim seed=3", "import sim/image_#####.cbf", "findspots", "index",
                     "integrate nproc=1"):
            ok(s, line)
        summary = s.state.data["integrate"]["reference_profiles"]
        refs = summary["references"]
        assert refs and len(json.dumps(summary)) < 4000 * len(refs)
        assert summary["n_integrated"] == len(s.state.reflections["integrated"])
        nx, ny = s.state.experiments[0].detector[0].image_size
        for r in refs:
            z = np.array(r["slice"]) / 100
            n = len(z)
            e = (np.arange(n) - n // 2) * summary["slice_step"]
            w = np.clip(z, 0, None)
            # the e1-e2 profile peaks at the centre (exactly when learnt from several spots,
            # within one point from a single one) and its centroid is there
            peak = np.array(np.unravel_index(np.argmax(z), z.shape)) - n // 2
            assert np.abs(peak).max() <= (0 if r["n_reference"] >= 4 else 1), r
            assert abs(w.sum(1) @ e) / w.sum() < 0.05 and abs(w.sum(0) @ e) / w.sum() < 0.05
            assert np.abs(np.concatenate([z[0], z[-1], z[:, 0], z[:, -1]])).max() < 0.1
            rock = np.clip(np.array(r["rocking"]) / 100, 0, None)
            e3 = (np.arange(len(rock)) - len(rock) // 2) * summary["rocking_step"]
            assert abs(rock @ e3) / rock.sum() < 0.1 and max(rock[0], rock[-1]) < 0.1
            assert 0 <= r["x"] <= nx and 0 <= r["y"] <= ny and 1 <= r["image"] <= 8
        assert sum(r["n_reference"] for r in refs) > 0
        ok(s, "report")
        html = (tmp_path / "gonio_report.html").read_text()
        assert "Reference profiles in e1-e2" in html
        assert "Reference profiles along e3 (rocking curves)" in html
        assert html.count('"type":"heatmap"') == len(refs)
        # a table that is not the one integrate made (e.g. imported later) is drawn without
        table = s.state.reflections["integrated"]
        other = s.state.evolve(reflections={"integrated": table.select(np.arange(len(table) - 1))})
        for state, drawn in ((s.state, True), (other, False)):
            figs = "".join(figure_json(f) for sec in data_sections([("", state)])
                           for f in sec.figures)
            assert ('"type":"heatmap"' in figs) == drawn
    finally:
        s.close()
