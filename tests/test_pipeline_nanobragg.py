"""The whole pipeline on the independent nanoBragg sweep (../shared/data/nanobragg_c2), through
the shell as a user types it, judged against the simulator's exact truth: the merged intensities
against the true F^2 and the French-Wilson amplitudes against the true F (issue 12's figures:
DIALS on a similar sweep reaches CC 0.9967 and R 0.044)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from tests.conftest import data_path


def _columns(mtz: gemmi.Mtz, labels):
    a = np.array(mtz, copy=False)
    idx = {c.label: i for i, c in enumerate(mtz.columns)}
    return a[:, :3].astype(np.int64), {lab: a[:, idx[lab]] for lab in labels}


@pytest.mark.slow
def test_import_to_merge_matches_the_true_structure_factors(tmp_path):
    from gonio.shell.session import Session

    folder = data_path("nanobragg_c2")
    s = Session(tmp_path)
    try:
        for line in (f"import {folder}/c2_####.cbf.gz", "findspots", "index", "rbs",
                     "reindex solution=2", "refine", "integrate", "symmetry", "scale", "merge",
                     "report"):
            r = s.run_line(line)
            assert r.ok, f"{line}: {r.text}"
    finally:
        s.close()
    # the report draws refinement from the indexed table, not from integrate's predictions
    report = tmp_path / "gonio_report.html"
    assert report.stat().st_size < 10e6  # a full session's report stays small (issue 13)
    html = report.read_text()
    for section in ("Indexing and refinement", "Integration", "Symmetry", "Scaling"):
        assert f">{section}<" in html
    assert "Absorption surface" in html  # gonio's own scaling model is drawn
    assert "\n0 reflections; RMSD" not in html and ">0 reflections; RMSD" not in html
    merged = gemmi.read_mtz_file(str(tmp_path / "merged.mtz"))
    assert merged.spacegroup.xhm() == "C 1 2 1"
    truth = gemmi.read_mtz_file(str(folder / "c2_truth.mtz"))
    hm, m = _columns(merged, ["IMEAN", "F"])
    ht, t = _columns(truth, ["I", "F"])

    def key(h):
        return (h[:, 0] * 1000 + h[:, 1]) * 1000 + h[:, 2]

    order = np.argsort(key(ht))
    pos = np.searchsorted(key(ht)[order], key(hm))
    pos = np.clip(pos, 0, len(order) - 1)
    found = key(ht)[order][pos] == key(hm)
    assert found.mean() > 0.99  # merged into the truth's ASU
    it = t["I"][order][pos][found]
    ft = t["F"][order][pos][found]
    i, f = m["IMEAN"][found], m["F"][found]
    assert len(i) > 9000
    # issue 12 asks >= 0.998 and < 0.03; gonio reaches 0.9998 and 0.014 (the profile model's
    # resolution term: with DIALS's constant sigma_m it was 0.9986 and 0.019)
    assert np.corrcoef(i, it)[0, 1] >= 0.9995
    k = (f @ ft) / (f @ f)
    assert np.sum(np.abs(k * f - ft)) / np.sum(ft) < 0.02
