"""The first step of ``gonio demo`` (simulate) compiles nothing: it starts at once on a
new machine while the spot-finding kernels compile in the background."""

from __future__ import annotations

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
