"""The integration kernels prepared ahead are the ones integrate uses."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np
from numba.core.registry import CPUDispatcher
from gonio.core.integration import box_kernels, kernels
from gonio.core.integration.warmup import warm_up

def signatures():
    return {n: set(map(str, f.signatures)) for M in (kernels, box_kernels) for n in dir(M)
            if isinstance(f := getattr(M, n), CPUDispatcher)}

warm_up()
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
unused = [n for n in ("extract_frame", "process", "accumulate_reference", "fit_profiles",
                      "repack") if not before.get(n)]
print("NEW", new)
print("UNUSED", unused)
"""


def test_warm_up_compiles_every_kernel_integrate_uses(tmp_path):
    """After the warm-up (fresh cache), integrating a simulated sweep with either
    background compiles nothing more: a prepared machine does not pause on its first
    integrate."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), GONIO_PREPARE_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NEW {}" in out.stdout, out.stdout
    assert "UNUSED []" in out.stdout, out.stdout
