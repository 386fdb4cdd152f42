"""`report`: one self-contained HTML file whose sections follow the session's data, rendered in
headless Chromium (no script errors, every figure drawn, a non-blank screenshot), on a session
that only found spots and on DIALS's integrated and scaled files; bad output paths."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gonio.shell.session import Session
from tests.conftest import data_path
from tests.conftest import run_ok as ok
from tests.report_browser import non_blank, render


def _sections(html: str) -> list[str]:
    return re.findall(r"<section id=\"[^\"]*\"><h2>([^<]*)</h2>", html)


def _figures(html: str) -> int:
    return html.count("drawn.push(Plotly.newPlot(")


@pytest.mark.slow
def test_report_of_spot_finding_only_leaves_the_rest_out(tmp_path):
    s = Session(tmp_path)
    ok(s, "simulate n_images=3 image_size=256,256 output=sim")
    ok(s, "import sim/image_#####.cbf")
    ok(s, "findspots")
    head = s.head
    r = ok(s, "report")
    page = tmp_path / "gonio_report.html"
    assert str(page) in r.text and s.head == head and len(s.history.steps()) == 3
    html = page.read_text()
    assert _sections(html) == ["History", "Models", "Spot finding"]
    # self-contained: no script, style sheet or font fetched from anywhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"?https?:", html)
    shown = render(page, tmp_path, size=(1280, 1000))
    assert shown.console_errors == []
    assert shown.figures_drawn == _figures(html) == 2 and shown.drawn_ms is not None
    assert shown.screenshot.shape == (1000, 1280, 3) and non_blank(shown.screenshot) > 0.03
    s.close()


@pytest.mark.slow
def test_report_of_dials_scaled_data_renders_quickly_and_small(tmp_path):
    from gonio.core.report.scaling import statistics

    d = data_path("l_cysteine_4_sweeps_scaled")
    s = Session(tmp_path)
    ok(s, f"import {d / 'scaled_30.expt'} {d / 'scaled_30.refl'}")
    ok(s, "report output=scaled.html")
    page = tmp_path / "scaled.html"
    html = page.read_text()
    assert _sections(html) == ["History", "Models", "Indexing and refinement", "Integration",
                               "Scaling"]
    assert page.stat().st_size < 10e6
    # the merging table is the statistics of DIALS's scaled intensities (overall row last)
    st = statistics(s.state.experiments, s.state.reflections["scaled"])
    assert st.overall.n_obs > 3000 and st.overall.cc_half > 0.99
    overall = [c for c in re.findall(r"<tr>(.*?)</tr>", html)][-1]
    assert f"<td>{st.overall.n_unique}</td>" in overall and f"{st.overall.cc_half:.3f}" in overall
    shown = render(page, tmp_path, size=(1400, 1200))
    assert shown.console_errors == []
    assert shown.figures_drawn == _figures(html) >= 14
    assert shown.drawn_ms is not None  # ~1-5 s from load to the last figure (docs/report.md)
    assert non_blank(shown.screenshot) > 0.03
    s.close()


def test_report_of_dials_integrated_data(tmp_path):
    d = data_path("x4_xds")
    s = Session(tmp_path)
    ok(s, f"import {d / 'indexed.expt'} {d / 'integrated.refl'}")
    ok(s, "report")
    html = (tmp_path / "gonio_report.html").read_text()
    assert _sections(html) == ["History", "Models", "Indexing and refinement", "Integration"]
    # DIALS's predictions of these 9 images lie within a fraction of a pixel and of an image
    # (0.2 deg) of the integrated centroids
    m = re.search(r"RMSD x ([\d.]+) px, y ([\d.]+) px, phi ([\d.]+) deg", html)
    assert m and max(float(m.group(1)), float(m.group(2))) < 0.5 and float(m.group(3)) < 0.2
    assert "<p>2269 reflections;" in html  # the integration summary counts DIALS's table
    s.close()


def test_normal_probability_plot_reads_the_error_in_the_sigmas():
    """Deviations of simulated equivalents with known errors: slope 1 when the sigmas are
    right, 2 when they are half the true errors (Howell & Smith 1992)."""
    from gonio.core.report.scaling import normal_probability

    rng = np.random.default_rng(1)
    hkl = np.array([[h, k, 1] for h in range(1, 40) for k in range(1, 40)])
    obs = np.repeat(hkl, 4, axis=0)
    true = np.repeat(rng.exponential(1000, len(hkl)), 4)
    sigma = np.sqrt(true) + 5
    intensity = true + rng.normal(0, sigma)
    for factor, slope in ((1.0, 1.0), (0.5, 2.0)):
        e, dev = normal_probability(obs, intensity, sigma * factor, "P 1")
        centre = np.abs(e) < 1.5
        fitted = np.polyfit(e[centre], dev[centre], 1)[0]
        assert fitted == pytest.approx(slope, rel=0.06)


def test_report_to_an_unwritable_path_changes_nothing(tmp_path):
    d = data_path("myd88")
    s = Session(tmp_path)
    r = s.run_line("report")
    assert not r.ok and "nothing to report yet" in r.text and s.head is None
    ok(s, f"import {d / 'imported.expt'} {d / 'strong.refl'}")
    head, n = s.head, len(s.history.steps())
    for line, words in [(f"report output={tmp_path / 'no' / 'such' / 'r.html'}", "Cannot write"),
                        (f"report output={tmp_path}", "is a folder"),
                        ("report compare=1", "compare")]:
        r = s.run_line(line)
        assert not r.ok and words in r.text, r.text
        assert "\n" not in r.text
    assert s.head == head and len(s.history.steps()) == n
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gonio"]
    s.close()


def test_the_browser_check_sees_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>text</p><script>undefinedFunction();</script></body></html>")
    shown = render(page, tmp_path, size=(400, 300))
    assert shown.console_errors and "undefinedFunction" in shown.console_errors[0]


def test_scaling_model_curves_reproduce_dials_scale_factors():
    """The scale and decay curves drawn from DIALS's .expt scaling model, times exp(B / 2d^2),
    give DIALS's own inverse scale factors up to the absorption term (not drawn)."""
    from gonio.core.io.dials_expt import expt_from_bytes
    from gonio.core.io.dials_refl import refl_from_bytes
    from gonio.core.report.scaling import model_curves

    d = data_path("l_cysteine_4_sweeps_scaled")
    experiments = expt_from_bytes((d / "scaled_30.expt").read_bytes())
    t = refl_from_bytes((d / "scaled_30.refl").read_bytes())
    phi, scale, decay = model_curves(experiments[0].scaling_model, n=2000)
    ok = (t["inverse_scale_factor"] > 0) & (t["d"] > 0)
    phi_obs = np.degrees(t["xyzobs.mm.value"][ok, 2])
    g = np.interp(phi_obs, phi, scale) * np.exp(np.interp(phi_obs, phi, decay)
                                                / (2 * t["d"][ok] ** 2))
    ratio = t["inverse_scale_factor"][ok] / g
    assert ok.sum() > 3000
    assert np.median(ratio) == pytest.approx(1.0, abs=0.005)
    assert np.corrcoef(t["inverse_scale_factor"][ok], g)[0, 1] > 0.85
