"""Reading images: gonio's reader against fabio (h5py for NeXus), ms per frame, per format.

For each format a simulated 1024 x 1024 px sweep is written (gonio's simulator, the
demo's lysozyme preset; the same files gzip- and bzip2-compressed), then, in one run,
alternating, best of ``repeats``:

- fabio: ``fabio.open(path).data`` for every image in one thread (h5py ``dset[k]`` of
  the data files for NeXus), the reference of benchmarks/bench_decode.py;
- gonio, 1 thread: ``ImageSequenceReader.read(i)`` for every image (the step's reader:
  pixels as int32 with masked pixels -1, what the threshold takes);
- gonio, 2 threads: the same images read by two threads (half each), as findspots and
  integrate read them with nproc=2: the wall time per frame, and its ratio to one thread
  (0.5 when decoding runs fully in parallel).

The pixels gonio returns are checked against fabio's (identical values, masked pixels
apart) before timing.

    python benchmarks/bench_read.py [n_images=20] [repeats=5]
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode import make_sweeps  # noqa: E402  (the same sweeps as the decode ratio)


def fabio_frames(paths: list[str]):
    """(reader of image k, number of images) with fabio, or h5py for NeXus."""
    if paths[0].endswith((".h5", ".nxs")):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)

        dsets = []
        for path in sorted(p for p in paths if "master" not in p):
            f = h5py.File(path, "r")
            f.visititems(lambda name, obj: dsets.append(obj)
                         if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
        index = [(d, k) for d in dsets for k in range(d.shape[0])]
        return (lambda i: np.asarray(index[i][0][index[i][1]])), len(index)
    import fabio

    return (lambda i: np.asarray(fabio.open(paths[i]).data)), len(paths)


def gonio_reader(paths: list[str]):
    from gonio.core.formats.reader import ImageSequenceReader
    from gonio.core.importer import import_images

    master = [p for p in paths if "master" in p]
    (experiment,) = import_images(master or paths)
    return ImageSequenceReader(experiment)


def timed(read, n: int, threads: int) -> float:
    t0 = time.perf_counter()
    if threads == 1:
        for i in range(n):
            read(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda part: [read(i) for i in part],
                          np.array_split(np.arange(n), threads)))
    return (time.perf_counter() - t0) / n


def main(n: int = 20, repeats: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sweeps = make_sweeps(Path(tmp), n)
        print(f"{n} images of 1024 x 1024 px per format; ms per frame, best of {repeats} "
              "alternating runs")
        print(f"{'format':<18}{'fabio':>8}{'gonio':>8}{'gonio/fabio':>13}{'gonio 2 thr':>13}"
              f"{'2 thr / 1':>11}")
        for label, paths in sweeps.items():
            fabio_read, n_frames = fabio_frames(paths)
            reader = gonio_reader(paths)
            for i in (0, n_frames - 1):
                ours, ref = reader.read(i)[0], fabio_read(i)
                masked = ours == -1
                assert ours.dtype == np.int32 and ours.shape == ref.shape
                assert np.array_equal(ours[~masked], ref[~masked].astype(np.int64)), label
            best = {"fabio": np.inf, 1: np.inf, 2: np.inf}
            for _ in range(repeats):
                best["fabio"] = min(best["fabio"], timed(fabio_read, n_frames, 1))
                for threads in (1, 2):
                    best[threads] = min(best[threads],
                                        timed(reader.read, n_frames, threads))
            f, g1, g2 = (1e3 * best[k] for k in ("fabio", 1, 2))
            print(f"{label:<18}{f:>8.2f}{g1:>8.2f}{g1 / f:>13.2f}{g2:>13.2f}{g2 / g1:>11.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         int(sys.argv[2]) if len(sys.argv) > 2 else 5)
