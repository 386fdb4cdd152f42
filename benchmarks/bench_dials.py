"""gonio against DIALS on one machine, in one run: the same simulated sweep, processed
end to end by ``gonio process`` and by the DIALS programs, alternately.

DIALS's figures in the README (161 s end to end) were measured elsewhere; this script
measures the ratio here, when DIALS is installed (Debian: ``apt-get install dials``,
3.12 in bookworm). The sweep is 120 images of a Pilatus 1M (981 x 1043 px, 0.172 mm,
real module gaps: DIALS's Pilatus format requires the module layout), lysozyme preset,
miniCBF, made by gonio's simulator once in a temporary folder.

DIALS pipeline, with both cores: dials.import, dials.find_spots nproc=2, dials.index,
dials.refine (scan-varying, its default), dials.integrate nproc=2, dials.symmetry,
dials.scale, dials.merge, dials.export. ``gonio process`` does the same plus rbs (the
Bravais lattice choice, which the DIALS list leaves to dials.symmetry). Each program is
timed as a whole process (start-up included). Reported: every program's wall time,
the totals, their ratio, and the load average (the ratio is the figure to compare).

Usage: python benchmarks/bench_dials.py [n_images=120] [repeats=1] [folder]
(with a folder, the images, DIALS's logs and gonio's sessions are kept there.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIALS_STEPS = (
    ("import", ["dials.import", "{images}"]),
    ("find_spots", ["dials.find_spots", "imported.expt", "nproc=2"]),
    ("index", ["dials.index", "imported.expt", "strong.refl"]),
    ("refine", ["dials.refine", "indexed.expt", "indexed.refl"]),
    ("integrate", ["dials.integrate", "refined.expt", "refined.refl", "nproc=2"]),
    ("symmetry", ["dials.symmetry", "integrated.expt", "integrated.refl"]),
    ("scale", ["dials.scale", "symmetrized.expt", "symmetrized.refl"]),
    ("merge", ["dials.merge", "scaled.expt", "scaled.refl"]),
    ("export", ["dials.export", "scaled.expt", "scaled.refl"]),
)


def make_sweep(folder: Path, n: int) -> list[str]:
    from gonio.core.simulate import simulate
    from gonio.core.simulate.params import SimulationParams

    p = SimulationParams.from_preset("lysozyme", n_images=n, image_size=(981, 1043),
                                     output=str(folder), d_min=1.6, distance=160.0)
    simulate(p)
    return sorted(str(f) for f in folder.glob("image_*.cbf"))


def run_dials(images: list[str], folder: Path) -> dict:
    times = {}
    for name, cmd in DIALS_STEPS:
        argv = [a for c in cmd for a in (images if c == "{images}" else [c])]
        t0 = time.perf_counter()
        r = subprocess.run(argv, cwd=folder, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        times[name] = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(f"{argv[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return times


def run_gonio(template: str, folder: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gonio.shell.main", "process", template, "-q"],
                       cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode:
        raise SystemExit(f"gonio process failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(n: int = 120, repeats: int = 1, keep: str | None = None) -> None:
    if shutil.which("dials.import") is None:
        raise SystemExit("DIALS is not installed (Debian: apt-get install dials): nothing to "
                         "compare against.")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        images = make_sweep(Path(tmp) / "images", n)
        template = str(Path(tmp) / "images" / "image_#####.cbf")
        run_gonio(template, Path(tempfile.mkdtemp(dir=tmp)))  # kernels compiled and cached
        print(f"{n} images of 981 x 1043 px (Pilatus 1M), {os.cpu_count()} cores")
        for k in range(repeats):
            g0 = run_gonio(template, Path(tempfile.mkdtemp(dir=tmp)))
            load0 = os.getloadavg()[0]
            d = run_dials(images, Path(tempfile.mkdtemp(dir=tmp)))
            load1 = os.getloadavg()[0]
            g1 = run_gonio(template, Path(tempfile.mkdtemp(dir=tmp)))
            total = sum(d.values())
            print(f"run {k + 1}: gonio process {g0:.1f} s and {g1:.1f} s; DIALS {total:.1f} s "
                  f"(load {load0:.1f} -> {load1:.1f})")
            print("  DIALS: " + ", ".join(f"{s} {t:.1f}" for s, t in d.items()))
            print(f"  DIALS / gonio: {total / ((g0 + g1) / 2):.1f}x")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(int(a) for a in args[:2]), *args[2:3])
