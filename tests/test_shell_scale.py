"""The ``scale`` command through the shell: several DIALS files imported together, scaling,
saving for DIALS, and every bad input leaving the session as it was."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import data_path, run_fail, run_ok

from gonio.core.io.dials_expt import read_expt
from gonio.core.io.dials_refl import read_refl, write_refl
from gonio.core.reflection_table import Flags

PAIRS = ("scaled_20_25", "scaled_30", "scaled_35")




def _files(*names):
    out = []
    for n in names:
        out += [str(data_path("l_cysteine_4_sweeps_scaled", n + ".expt")),
                str(data_path("l_cysteine_4_sweeps_scaled", n + ".refl"))]
    return " ".join(out)


@pytest.fixture(scope="module")
def scaled_session(tmp_path_factory):
    from gonio.shell.session import Session

    s = Session(tmp_path_factory.mktemp("lcys"))
    # the .refl files first: each is paired with its .expt by the experiment identifiers
    names = list(reversed(PAIRS))
    words = [str(data_path("l_cysteine_4_sweeps_scaled", n + ".refl")) for n in names]
    words += [str(data_path("l_cysteine_4_sweeps_scaled", n + ".expt")) for n in PAIRS]
    r = run_ok(s, "import " + " ".join(words))
    yield s, r
    s.close()


def test_import_several_pairs(scaled_session):
    session, r = scaled_session
    state = session.state
    assert len(state.experiments) == 4
    assert [e.identifier for e in state.experiments] == ["0", "1", "2", "3"]
    t = state.reflections["scaled"]
    assert len(t) == 9972 + 5308 + 5463
    assert t.experiment_identifiers == {0: "0", 1: "1", 2: "2", 3: "3"}
    # each row still carries the identifier it had in its own file
    for name in PAIRS:
        own = read_refl(data_path("l_cysteine_4_sweeps_scaled", name + ".refl"))
        ids = {own.experiment_identifiers[int(i)] for i in np.unique(own["id"])}
        rows = np.isin(t["id"], [k for k, v in t.experiment_identifiers.items() if v in ids])
        assert rows.sum() == len(own)
        assert np.allclose(np.sort(t["intensity.sum.value"][rows]),
                           np.sort(own["intensity.sum.value"]))


def test_scale_prints_tables_records_metrics_and_saves(scaled_session, tmp_path):
    session, _ = scaled_session
    r = run_ok(session, "scale")
    assert "d_max" in r.text and "cc1/2" in r.text and "r_meas" in r.text
    assert "Error model" in r.text and "Resolution limit suggested" in r.text
    step = session.history.steps()[-1]
    m = step.metrics if hasattr(step, "metrics") else session.history.metrics(step)
    for key in ("cc_half", "r_meas", "i_over_sigma", "completeness", "cc_half_outer",
                "completeness_outer", "suggested_d_min"):
        assert key in m
    assert m["cc_half"] > 0.99 and 0.02 < m["r_meas"] < 0.06
    state = session.state
    assert list(state.reflections)[-1] == "scaled"
    t = state.reflections["scaled"]
    assert t.get_flags(Flags.scaled).sum() > 11000
    # save: files DIALS reads, with the scaling model of every experiment
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    (tmp_path / "out").mkdir()
    run_ok(session, f"save prefix={tmp_path / 'out' / 'scaled'}")
    exps = read_expt(tmp_path / "out" / "scaled.expt")
    refl = read_refl(tmp_path / "out" / "scaled.refl")
    assert all(e.scaling_model["__id__"] == "physical" for e in exps)
    assert "inverse_scale_factor_variance" in refl and len(refl) == len(t)
    # undo gives back DIALS's table, unscaled by gonio
    run_ok(session, "undo")
    assert session.state.reflections["scaled"].get_flags(Flags.scaled).sum() == 0


def test_scale_before_integrate(session):
    text = run_fail(session, "scale")
    assert "run integrate first" in text
    run_ok(session, f"import {data_path('myd88', 'imported.expt')} {data_path('myd88', 'strong.refl')}")
    assert "run integrate first" in run_fail(session, "scale")


def _import_modified(session, tmp_path, change):
    t = read_refl(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.refl"))
    t = change(t)
    write_refl(t, tmp_path / "x.refl")
    shutil.copy(data_path("l_cysteine_4_sweeps_scaled", "scaled_30.expt"), tmp_path / "x.expt")
    run_ok(session, f"import {tmp_path / 'x.expt'} {tmp_path / 'x.refl'}")


def test_unknown_model_and_d_min_beyond_the_data(session, tmp_path):
    _import_modified(session, tmp_path, lambda t: t)
    assert "model" in run_fail(session, "scale model=aimless")
    text = run_fail(session, "scale d_min=20")
    assert "beyond the data" in text and "d_min" in text


def test_bad_exclude_images(session, tmp_path):
    _import_modified(session, tmp_path, lambda t: t)
    assert "exp:first:last" in run_fail(session, "scale exclude_images=1-50")
    assert "no experiment 3" in run_fail(session, "scale exclude_images=3:1:50")
    run_ok(session, "scale exclude_images=0:1:100,0:1601:1700")
    t = session.state.reflections["scaled"]
    z = t["xyzobs.px.value"][:, 2]
    z = np.where(z != 0, z, t["xyzcal.px"][:, 2])  # unobserved rows: the predicted frame
    user = t.get_flags(Flags.user_excluded_in_scaling)
    assert user[(z < 99) | (z > 1601)].all() and not user[(z > 101) & (z < 1599)].any()


def test_one_observation_per_reflection(session, tmp_path):
    def single(t):
        _, first = np.unique(np.abs(t["miller_index"]), axis=0, return_index=True)
        return t.select(np.sort(first))

    _import_modified(session, tmp_path, single)
    assert "more than once" in run_fail(session, "scale")


def test_all_intensities_negative(session, tmp_path):
    def negative(t):
        for k in ("sum", "prf"):
            t[f"intensity.{k}.value"] = -np.sqrt(np.abs(t[f"intensity.{k}.variance"]))
        return t

    _import_modified(session, tmp_path, negative)
    assert "negative" in run_fail(session, "scale")
