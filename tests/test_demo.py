"""``gonio demo``: a simulated sweep processed from its images to a merged MTZ, each step
explained; the merged intensities are the simulation's truth."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

#: The demo's commands, in the DIALS order a crystallographer runs them.
WORKFLOW = ["simulate", "import", "show", "findspots", "index", "rbs", "reindex", "refine",
            "integrate", "symmetry", "scale", "scale", "merge", "export", "history"]


def test_every_step_of_the_demo_has_its_comment():
    """The script runs the whole workflow, and every command comes with a comment (printed
    before it runs) saying what it does."""
    from gonio.shell.demo import SCRIPT, _steps

    steps = _steps(SCRIPT.read_text())
    assert [line.split()[0] for _, line in steps] == WORKFLOW
    for comment, line in steps:
        assert comment and all(c.startswith("# ") for c in comment), line


def test_the_demo_folder_never_takes_a_file_or_a_used_folder(tmp_path, capsys):
    """gonio demo NAME: a file of that name, and a folder with something in it, are passed
    over (NAME-2, NAME-3, ...), never written into; a place that cannot be made is one
    clear error before anything runs."""
    from gonio.shell.demo import _fresh_folder, demo

    (tmp_path / "run").write_text("my notes")
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "x").write_text("mine")
    (tmp_path / "run-3").mkdir()  # empty: taken
    assert _fresh_folder(tmp_path / "run") == tmp_path / "run-3"
    assert (tmp_path / "run").read_text() == "my notes"
    assert demo([str(tmp_path / "run" / "sub")]) == 1  # below a file: cannot be made
    err = capsys.readouterr().err
    assert "cannot make a folder for the demo" in err and "Traceback" not in err


def test_what_the_demo_wrote_is_listed_with_sizes(tmp_path):
    from gonio.shell.demo import written

    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "image_00001.cbf").write_bytes(b"x" * 2000)
    (tmp_path / "sim" / "truth.expt").write_bytes(b"{}")
    (tmp_path / ".gonio").mkdir()
    (tmp_path / ".gonio" / "history.sqlite").write_bytes(b"x" * 300_000)
    (tmp_path / "merged.mtz").write_bytes(b"x" * 500_000)
    assert written(tmp_path) == [
        "  merged.mtz  0.5 MB",
        "  .gonio/  the session: its history and stored tables (gonio there resumes it), 0.3 MB",
        "  sim/  2 files, the images, 2 kB"]


def _asu_dict(hkl, values, space_group):
    import gemmi

    asu, ops = gemmi.ReciprocalAsu(space_group), space_group.operations()
    return {tuple(asu.to_asu([int(i) for i in h], ops)[0]): v for h, v in zip(hkl, values)}


@pytest.mark.slow
def test_the_demo_ends_with_the_true_intensities_in_merged_mtz(tmp_path):
    """The demo runs every step; the merged data are the simulated crystal's: the point
    group of P 43 21 2 (422), the cell within 0.5 %, CC1/2 overall above 0.99, and the
    merged intensities proportional to the true |F|^2 (correlation above 0.99 overall,
    the same ratio to within 10 % from low to 2.5 A resolution)."""
    import gemmi

    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl

    folder = tmp_path / "demo"
    env = dict(os.environ, GONIO_PREPARE_KERNELS="0")  # no process outliving the test
    r = subprocess.run([sys.executable, "-m", "gonio.shell.main", "demo", str(folder)],
                       cwd=tmp_path, env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = re.findall(r"\[step \d+: (\w+),", r.stdout)
    assert ran == [s.replace("rbs", "refine_bravais_settings") for s in WORKFLOW
                   if s not in ("show", "history")]  # those two record no step
    assert "# find the Laue group and space group from the intensities" in r.stdout
    listed = r.stdout.split(f"Written in {folder}:")[1]
    assert "merged.mtz" in listed and "scaled.mtz" in listed and "sim/  " in listed

    mtz = gemmi.read_mtz_file(str(folder / "merged.mtz"))
    assert mtz.spacegroup.point_group_hm() == \
        gemmi.find_spacegroup_by_name("P 43 21 2").point_group_hm()
    true_cell = read_expt(folder / "sim" / "truth.expt")[0].crystal.unit_cell
    for found, true in zip(mtz.cell.parameters, true_cell.parameters):
        assert abs(found / true - 1) < 0.005, (mtz.cell, true_cell)
    cc_half = float(re.search(r"\bmerge .* cc_half=([\d.]+)", r.stdout).group(1))
    assert cc_half > 0.99

    truth = read_refl(folder / "sim" / "truth.refl")
    true_f2 = _asu_dict(truth["miller_index"], truth["F2"], mtz.spacegroup)
    hkl = [tuple(int(i) for i in h) for h in mtz.make_miller_array()]
    imean, d = mtz.column_with_label("IMEAN").array, mtz.make_d_array()
    both = np.array([h in true_f2 for h in hkl])
    assert both.mean() > 0.99
    f2 = np.array([true_f2[h] for h, b in zip(hkl, both) if b])
    i_obs, d = imean[both], d[both]
    assert np.corrcoef(f2, i_obs)[0, 1] > 0.99
    ratios = [np.median(i_obs[s] / f2[s]) for s in ((d >= 2.5) & (d < 3.0), (d >= 3.0) & (d < 4.0),
                                                   (d >= 4.0) & (d < 6.0), d >= 6.0)]
    assert max(ratios) / min(ratios) < 1.1, ratios
