"""Integrate's set-up side by side: the profile-model estimate's parts in threads, and the
scan-varying prediction from the static crossings that meet a panel, give exactly what
the one-thread, whole-table code gives (and what DIALS gives, where it is known)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gonio.core.integration.profile_model import ProfileModelError, estimate_profile_model
from tests.conftest import data_path

# DIALS's sigma_b and sigma_m for x4_xds (tests/test_integration_profile_model.py)
X4_SIGMA_B = 0.049955
X4_SIGMA_M = 0.227358239


def _x4():
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl

    expt = read_expt(data_path("x4_xds", "indexed.expt"))[0]
    return expt, read_refl(data_path("x4_xds", "indexed.refl"))


def test_estimate_in_threads_is_the_one_thread_estimate():
    """sigma_b and the two starts of the resolution term's fit in threads of their own:
    the same model to the bit, the helpers' CPU reported, and still DIALS's sigma_b."""
    expt, indexed = _x4()
    one = estimate_profile_model(expt, indexed, sigma_m_model="auto")
    cpu: list[float] = []
    three = estimate_profile_model(expt, indexed, sigma_m_model="auto", threads=3,
                                   helper_cpu=cpu)
    assert three.to_dict() == one.to_dict()
    assert three.n_used == one.n_used == 439
    assert len(cpu) == 2 and all(c >= 0 for c in cpu)  # sigma_b, the second start
    assert abs(three.sigma_b_deg / X4_SIGMA_B - 1) < 0.03, three
    assert 0.8 < three.sigma_m_deg / X4_SIGMA_M < 1.0, three


def test_estimate_in_threads_raises_the_first_error_of_one_thread():
    """Spots without counts: sigma_m fails first when done one after the other (sigma_b
    too, in its thread); with threads the error is still sigma_m's."""
    expt, indexed = _x4()
    empty = indexed.copy()
    sb = empty["shoebox"]
    sb.data[:] = 0.0
    messages = []
    for threads in (1, 2):
        with pytest.raises(ProfileModelError, match="sigma_m cannot be estimated") as err:
            estimate_profile_model(expt, empty, threads=threads)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_scan_varying_prediction_from_the_candidates_that_meet_a_panel():
    """The scan-varying prediction takes as candidates the static crossings (widened by
    the window) whose rays meet a panel, without building their whole table: the same
    table as from the static prediction's own rows (x4_xds with a drifting crystal)."""
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.models.rotation import axis_angle_matrix
    from gonio.core.prediction.rotation import predict_rotation
    from gonio.core.prediction.scan_varying import scan_varying_crossings

    expt = read_expt(data_path("x4_xds", "indexed.expt"))[0]
    n = expt.scan.num_images
    A_sp = axis_angle_matrix([0.0, 1.0, 1.0], np.deg2rad(0.05) * np.arange(n + 1)) \
        @ expt.crystal.A
    expt = expt.replace(crystal=expt.crystal.replace(A_at_scan_points=A_sp))
    window = 5
    new = predict_rotation(expt, d_min=1.5)
    static = predict_rotation(expt, d_min=1.5, scan_varying=False,
                              margin_deg=window * abs(expt.scan.oscillation[1]))
    old = scan_varying_crossings(expt, static["miller_index"], static["xyzcal.px"][:, 2],
                                 1.5, None, window)
    assert len(new) == len(old) > 800
    assert set(new.keys()) == set(old.keys())
    for name in new.keys():
        assert np.array_equal(new[name], old[name]), name


WARM = r"""
import numpy as np
from gonio.core.integration import warmup
from gonio.core.prediction import kernels

warmup.warm_up()
before = set(map(str, kernels.boundary_points.signatures))
from gonio.core.io.dials_expt import read_expt
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.prediction.rotation import predict_rotation

expt = read_expt(PATH)[0]
n = expt.scan.num_images
A_sp = axis_angle_matrix([0.0, 1.0, 1.0], np.deg2rad(0.05) * np.arange(n + 1)) @ expt.crystal.A
expt = expt.replace(crystal=expt.crystal.replace(A_at_scan_points=A_sp))
assert len(predict_rotation(expt, d_min=1.5, nproc=1)) > 800
print("BEFORE", len(before), "NEW", set(map(str, kernels.boundary_points.signatures)) - before)
"""


def test_integrate_warm_up_compiles_the_scan_varying_prediction_kernel():
    """The scan-varying prediction's kernel is in integrate's unit: its warm-up compiles
    the one specialisation a real prediction uses (nothing new compiled afterwards)."""
    path = data_path("x4_xds", "indexed.expt")
    out = subprocess.run([sys.executable, "-c", WARM.replace("PATH", repr(str(path)))],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, GONIO_PREPARE_KERNELS="0"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BEFORE 1 NEW set()" in out.stdout, out.stdout
