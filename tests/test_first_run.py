"""The first step of ``gonio demo`` (simulate) compiles nothing: it starts at once on a
new machine while the spot-finding kernels compile in the background; integrate's kernels
are two units that compile on two cores at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import python_output


def _run_fresh(code: str, tmp_path, *args) -> subprocess.CompletedProcess:
    """``code`` run in a new Python with an empty kernel cache of its own and no kernels
    prepared in the background."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), GONIO_PREPARE_KERNELS="0")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=600)


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
    out = [_run_fresh(count, tmp_path, name) for name in ("warm_up_boxes", "warm_up")]
    assert all(r.returncode == 0 for r in out), [r.stderr[-2000:] for r in out]
    boxes, pixels = (tuple(map(int, r.stdout.split())) for r in out)
    assert boxes[0] >= 10 and boxes[1] == 0  # process, box_extent, repack and their helpers
    assert pixels[0] == 0 and pixels[1] >= 10  # none of them again, extract_frame etc.


@pytest.mark.slow
def test_the_demo_s_kernels_compile_without_reference_counting(tmp_path):
    """Every kernel of the units ``gonio demo`` prepares compiles without numba's reference
    counting (NRT; ~20 % of the LLVM work on them, gonio.core.jit._kernel_class): none
    allocates or returns a new array, which would make its process compile the rest with
    NRT. Their Python entry points then call nothing of numba's runtime."""
    check = ("import gc\n"
             "from importlib import import_module\n"
             "from numba.core.registry import CPUDispatcher\n"
             "from gonio.core import jit\n"
             "from gonio.shell.demo import SCRIPT\n"
             "from gonio.shell.main import STEP_KERNELS, split_commands\n"
             "jit.notify = lambda text: None\n"
             "steps = [c.split()[0] for c in split_commands(SCRIPT.read_text())]\n"
             "units = dict.fromkeys(u for s in steps for u in STEP_KERNELS.get(s, ()))\n"
             "for unit in units:\n"
             "    module, func = jit.UNITS[unit][0].split(':')\n"
             "    getattr(import_module(module), func)()\n"
             "kernels = [o for o in gc.get_objects() if isinstance(o, CPUDispatcher)\n"
             "           and o.py_func.__module__.startswith('gonio') and o.signatures]\n"
             "nrt = [k.py_func.__name__ for k in kernels for s in k.signatures\n"
             "       if 'NRT_' in k.overloads[s].library.get_llvm_str()]\n"
             "print(len(units), len(kernels), jit._NRT[0], nrt)\n")
    r = _run_fresh(check, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    n_units, n_kernels, switched, nrt = r.stdout.split(" ", 3)
    assert int(n_units) >= 6 and int(n_kernels) >= 20
    assert (switched, nrt.strip()) == ("False", "[]")
