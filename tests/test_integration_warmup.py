"""The integration kernels prepared ahead are the ones integrate uses; the paths its default
workflow may not take compile when first reached, say so once, and are cached after."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import sys
import numpy as np
from numba.core.registry import CPUDispatcher
from gonio.core.integration import box_kernels, kernels, warmup

def signatures():
    return {n: set(map(str, f.signatures)) for M in (kernels, box_kernels) for n in dir(M)
            if isinstance(f := getattr(M, n), CPUDispatcher)}

warmup.warm_up()
default = signatures()
print("LAZY", sorted(n for n in ("_process_simple", "_simple_background", "glm_constant")
                     if default.get(n)))
warmup.warm_up_simple_boxes()
before = signatures()
from gonio.core.formats.reader import InMemoryReader
from gonio.core.integration.integrate import integrate
from gonio.core.integration.params import IntegrationParams
from gonio.core.simulate.params import SimulationParams
from gonio.core.simulate.simulate import simulate

p = SimulationParams.from_preset("lysozyme", n_images=12, image_size=(256, 256))
sim = simulate(p)
reader = InMemoryReader([tuple(im) for im in sim.images])
for kw in (dict(nproc=2), dict(nproc=1, background_algorithm="simple", block_size=2)):
    _, table, res = integrate(sim.experiments, None,
                              IntegrationParams(sigma_b=0.06, sigma_m=p.sigma_m, **kw),
                              readers=[reader])
    assert res.n_prf > 0 and res.n_reference > 0
after = signatures()
new = {n: after[n] - before.get(n, set()) for n in after if after[n] - before.get(n, set())}
unused = [n for n in ("extract_frame", "process_glm", "_process_simple",
                      "accumulate_reference", "fit_profiles", "repack") if not before.get(n)]
print("NEW", new)
print("UNUSED", unused)
"""


def test_warm_up_compiles_every_kernel_integrate_uses(tmp_path):
    """After the warm-ups of integrate's units (fresh cache), integrating a simulated sweep
    with either background compiles nothing more: a prepared machine does not pause on
    its first integrate. The default units' warm-up compiles none of the paths the
    default workflow may not take."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), GONIO_PREPARE_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LAZY []" in out.stdout, out.stdout
    assert "NEW {}" in out.stdout, out.stdout
    assert "UNUSED []" in out.stdout, out.stdout


REACH = r"""
import numpy as np
from gonio.core.integration import box_kernels, warmup

warmup.warm_up_boxes()
print("DEFAULT DONE", flush=True)
for _ in range(2):
    warmup.warm_up_simple_boxes()  # the simple background, reached twice
print("SIMPLE MISSES", sum(box_kernels._process_simple.stats.cache_misses.values()))
"""


def test_a_lazily_compiled_path_announces_itself_once_and_is_cached(tmp_path):
    """The simple background's kernels are not compiled with integrate's default units:
    a step that first reaches them says once that it prepares them (with their unit's
    estimate), and a later process loads them from the cache, silently."""
    from gonio.core import jit

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), GONIO_PREPARE_KERNELS="0")

    def run():
        r = subprocess.run([sys.executable, "-c", REACH], env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout, r.stderr

    out, err = run()
    seconds = jit.UNITS["gonio.core.integration.box_kernels.simple"][1]
    line = f"preparing kernels for this machine, once: ~{seconds:.0f} s (simple)"
    assert err.count(line) == 1, err
    assert "(box_kernels)" in err  # the default unit, announced before the step reached it
    assert "SIMPLE MISSES 1" in out, out  # compiled once
    out, err = run()
    assert "preparing kernels" not in err, err
    assert "SIMPLE MISSES 0" in out, out
