"""The first step of ``gonio demo`` (simulate) compiles nothing: it starts at once on a
new machine while the spot-finding kernels compile in the background; integrate's kernels
are two units that compile on two cores at once."""

from __future__ import annotations

import pytest
from conftest import python_output


def test_simulating_a_sweep_imports_no_numba(tmp_path):
    out = python_output(
        "import sys\n"
        "from gonio.core.simulate.params import SimulationParams\n"
        "from gonio.core.simulate.simulate import simulate\n"
        f"r = simulate(SimulationParams(preset='lysozyme', n_images=2, image_size=(256, 256),\n"
        f"             d_min=2.5, seed=3, output={str(tmp_path)!r}))\n"
        "print(len(r.image_paths), int(r.truth['fraction.on_detector'].sum() > 0),\n"
        "      'numba' in sys.modules)\n")
    assert out == "2 1 False"


def test_the_demo_compiles_nothing_for_its_first_step():
    from gonio.shell.demo import SCRIPT
    from gonio.shell.main import STEP_KERNELS, split_commands

    first = [c for c in split_commands(SCRIPT.read_text()) if not c.startswith("#")][0].split()[0]
    assert first == "simulate" and STEP_KERNELS.get(first, ()) == ()


@pytest.mark.slow
def test_integrate_s_two_units_compile_apart(tmp_path):
    """integrate's kernels are two units that two processes compile at once: the warm-up
    of the box kernels (bounds, background, summation) compiles them with the argument
    types integrate passes, so that the other unit's warm-up, which runs integrate on a
    tiny sweep, then loads them from the cache and compiles only its own."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), GONIO_PREPARE_KERNELS="0")
    count = ("import sys\n"
             "from numba.core import event\n"
             "from gonio.core import jit\n"
             "from gonio.core.integration import warmup\n"
             "jit.notify = lambda text: None\n"
             "done = []\n"
             "class L(event.Listener):\n"
             "    def on_start(self, ev): pass\n"
             "    def on_end(self, ev):\n"
             "        done.append(ev.data['dispatcher'].py_func.__module__.rsplit('.', 1)[1])\n"
             "with event.install_listener('numba:compile', L()):\n"
             "    getattr(warmup, sys.argv[1])()\n"
             "print(done.count('box_kernels'), done.count('kernels'))\n")
    out = [subprocess.run([sys.executable, "-c", count, name], env=env, capture_output=True,
                          text=True, timeout=600) for name in ("warm_up_boxes", "warm_up")]
    assert all(r.returncode == 0 for r in out), [r.stderr[-2000:] for r in out]
    boxes, pixels = (tuple(map(int, r.stdout.split())) for r in out)
    assert boxes[0] >= 10 and boxes[1] == 0  # process, box_extent, repack and their helpers
    assert pixels[0] == 0 and pixels[1] >= 10  # none of them again, extract_frame etc.
