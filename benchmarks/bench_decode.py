"""Parallel image decoding in findspots: the step with 2 threads against one-thread decoding.

For each format a simulated 1024 x 1024 px sweep (gonio's simulator, the demo's
lysozyme preset) is written: miniCBF (.cbf), the same files gzip- and
bzip2-compressed (.cbf.gz, .cbf.bz2), SMV (.img) and NeXus (bitshuffle/LZ4
HDF5). Reported per format, as ratios measured in this run:

- decode: reading every image once in one thread with fabio (h5py for NeXus),
  the reference;
- findspots nproc=1 and nproc=2 (threads): import the images, then read,
  threshold, label and measure them (gonio.core.spotfinding.find_spots with the
  step's reader), best of ``repeats`` alternating runs;
- ratio findspots(nproc=2) / decode (target <= 0.8) and the nproc speed-up;
- the same ratio from CPU times, which do not depend on what else the machine runs:
  findspots' critical path on two idle cores (the calling thread's CPU outside the
  workers plus the busiest worker's, ``timings["cpu.serial"]`` and
  ``["cpu.parallel_span"]``) over the decode's thread CPU; and findspots' CPU per
  frame (read, threshold, the rest) with nproc=1.

    python benchmarks/bench_decode.py [n_images=40] [repeats=3] [formats=all]

``formats``: a comma-separated subset of cbf, smv, nexus, gz, bz2.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_sweeps(root: Path, n: int) -> dict[str, list[str]]:
    """Image files of each format: {label: [paths]}."""
    from gonio.core.simulate.params import SimulationParams
    from gonio.core.simulate.simulate import simulate

    out = {}
    for fmt in ("cbf", "smv", "nexus"):
        folder = root / fmt
        simulate(SimulationParams(preset="lysozyme", n_images=n, image_size=(1024, 1024),
                                  d_min=2.5, seed=1, format=fmt, output=str(folder)))
        files = sorted(str(p) for p in folder.iterdir()
                       if p.suffix in (".cbf", ".img", ".h5", ".nxs") and "truth" not in p.name)
        out[{"cbf": ".cbf", "smv": "SMV .img", "nexus": "NeXus bitshuffle"}[fmt]] = files
    for label, opener, ext in ((".cbf.gz", gzip.open, ".gz"), (".cbf.bz2", bz2.open, ".bz2")):
        folder = root / ext.strip(".")
        folder.mkdir()
        paths = []
        for p in out[".cbf"]:
            target = folder / (Path(p).name + ext)
            with open(p, "rb") as f, opener(target, "wb") as g:
                shutil.copyfileobj(f, g)
            paths.append(str(target))
        out[label] = paths
    return out


def fabio_decode(paths: list[str]) -> tuple[float, float]:
    """Seconds (wall, thread CPU) to decode every image once, one thread (fabio; h5py
    for NeXus)."""
    import fabio

    t0, c0 = time.perf_counter(), time.thread_time()
    if paths[0].endswith((".h5", ".nxs")):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)

        for path in (p for p in paths if "master" not in p):  # the data files
            with h5py.File(path, "r") as f:
                names = []
                f.visititems(lambda name, obj, out=names: out.append(name)
                             if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
                for d in (f[name] for name in names):
                    for k in range(d.shape[0]):
                        np.asarray(d[k])
    else:
        for p in paths:
            np.asarray(fabio.open(p).data)
    return time.perf_counter() - t0, time.thread_time() - c0


def findspots(paths: list[str], nproc: int) -> tuple[float, int, dict]:
    """(wall seconds, strong spots, find_spots' timings)."""
    from gonio.core.formats.reader import ImageSequenceReader
    from gonio.core.importer import import_images
    from gonio.core.spotfinding import SpotFinderParams, find_spots

    master = [p for p in paths if "master" in p]
    experiments = import_images(master or paths)
    t0 = time.perf_counter()
    readers = [ImageSequenceReader(e) for e in experiments]
    strong, result = find_spots(experiments, readers, SpotFinderParams(nproc=nproc))
    return time.perf_counter() - t0, len(strong), result.timings


FORMATS = {"cbf": ".cbf", "smv": "SMV .img", "nexus": "NeXus bitshuffle", "gz": ".cbf.gz",
           "bz2": ".cbf.bz2"}


def main(n: int = 40, repeats: int = 3, formats: str = "all") -> None:
    wanted = set(FORMATS.values()) if formats == "all" else {FORMATS[f] for f in
                                                            formats.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        sweeps = {k: v for k, v in make_sweeps(Path(tmp), n).items() if k in wanted}
        first = next(iter(sweeps.values()))  # kernels compiled or loaded outside the timings
        findspots(first if any("master" in p for p in first) else first[:2], 1)
        counts = ", ".join(f"{label} {len(paths)}" for label, paths in sweeps.items())
        print(f"1024 x 1024 px images; files per format (the simulator decides how many "
              f"images n={n} asks for): {counts}; best of {repeats} alternating runs")
        print(f"{'format':<18}{'decode 1 thread':>16}{'find nproc=1':>14}{'find nproc=2':>14}"
              f"{'find2/decode':>14}{'speed-up':>10}{'CPU: decode':>13}{'find2 path':>12}"
              f"{'path/decode':>13}   find nproc=1 CPU ms/frame: read, threshold, rest")
        for label, paths in sweeps.items():
            best = {k: np.inf for k in ("decode", 1, 2, "decode_cpu", "path", "read",
                                        "threshold", "rest")}
            spots = set()
            for _ in range(repeats):
                wall, cpu = fabio_decode(paths)
                best["decode"] = min(best["decode"], wall)
                best["decode_cpu"] = min(best["decode_cpu"], cpu)
                for nproc in (1, 2):
                    dt, n_spots, tm = findspots(paths, nproc)
                    best[nproc] = min(best[nproc], dt)
                    spots.add(n_spots)
                    if nproc == 2:
                        best["path"] = min(best["path"],
                                           tm["cpu.serial"] + tm["cpu.parallel_span"])
                    else:
                        for k in ("read", "threshold"):
                            best[k] = min(best[k], tm["cpu." + k])
                        best["rest"] = min(best["rest"], tm["cpu.serial"])
            assert len(spots) == 1, f"{label}: spot counts differ between runs: {spots}"
            per_frame = "  ".join(f"{best[k] / n_frames(paths) * 1e3:5.2f}"
                                  for k in ("read", "threshold", "rest"))
            print(f"{label:<18}{best['decode']:>14.2f} s{best[1]:>12.2f} s{best[2]:>12.2f} s"
                  f"{best[2] / best['decode']:>14.2f}{best[1] / best[2]:>9.2f}x"
                  f"{best['decode_cpu']:>11.2f} s{best['path']:>10.2f} s"
                  f"{best['path'] / best['decode_cpu']:>13.2f}   {per_frame}")


def n_frames(paths: list[str]) -> int:
    """Images in a sweep's files (NeXus: the frames of its data files)."""
    from gonio.core.formats.reader import ImageSequenceReader
    from gonio.core.importer import import_images

    master = [p for p in paths if "master" in p]
    return sum(len(ImageSequenceReader(e)) for e in import_images(master or paths))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3,
         sys.argv[3] if len(sys.argv) > 3 else "all")
