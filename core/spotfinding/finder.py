"""Find strong spots on every image of one or more image sets (dials.find_spots).

Steps, per image set (a reader shared by one or more experiments):

1. static masks per panel (panel mask, border, untrusted regions, user mask,
   d_min / d_max, ice rings): :mod:`.masks`;
2. each image is read and thresholded in parallel (``nproc`` worker
   threads, or spawned processes; blocks of consecutive images); workers
   return only the strong pixels: :mod:`.threshold`;
3. strong pixels are joined into spots across consecutive images (3D; 2D
   for stills): :mod:`.labelling`;
4. spots smaller than ``min_spot_size`` or larger than ``max_spot_size``
   pixels are dropped, centroids, intensities and shoeboxes are computed
   (:mod:`.spots`), and spots whose peak is more than ``max_separation``
   px from the centroid are dropped.

A reader is anything with ``len(reader)`` and ``reader.read(i)`` returning
a tuple of per-panel (slow, fast) arrays for its i-th image (0-based); with
``nproc > 1`` it must be picklable (open files lazily).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np

from ..models.experiment import ExperimentList
from ..reflection_table import Flags, ReflectionTable, Shoeboxes
from ..threads import TakeInTurn
from .histogram import spot_count_histogram
from .masks import static_mask
from .params import SpotFinderError, SpotFinderParams


@dataclass
class SpotFinderResult:
    """What a spot-finding run found and how long it took (all counts summed over image sets)."""

    n_extracted: int = 0
    n_too_small: int = 0
    n_too_large: int = 0
    n_centroids: int = 0
    n_after_separation: int = 0
    min_spot_size: int = 0
    max_spot_size: int = 0
    max_separation: float | None = None
    image_numbers: list = field(default_factory=list)  # per image set: image numbers searched
    strong_pixels_per_image: list = field(default_factory=list)  # per image set: array
    spots_per_image: list = field(default_factory=list)  # per image set: spots by centroid image
    histograms: list = field(default_factory=list)  # per image set: DIALS-style text
    # seconds: wall per stage ("read" and "threshold" summed over the workers), and CPU
    # ("cpu.*", time.thread_time: not what else the machine runs): read and threshold
    # summed over the workers, "cpu.parallel_span" the busiest worker's, "cpu.serial" the
    # calling thread's outside the workers; the two add up to the critical path on idle
    # cores
    timings: dict = field(default_factory=dict)
    nproc: int = 1

    @property
    def n_spots(self) -> int:
        return self.n_after_separation

    def summary_lines(self) -> list[str]:
        """The counts dials.find_spots logs after labelling."""
        lines = [
            f"Extracted {self.n_extracted} spots",
            f"Removed {self.n_too_small} spots with size < {self.min_spot_size} pixels",
            f"Removed {self.n_too_large} spots with size > {self.max_spot_size} pixels",
            f"Calculated {self.n_centroids} spot centroids",
            f"Calculated {self.n_centroids} spot intensities",
        ]
        if self.max_separation is not None:
            lines.append(f"Filtered {self.n_after_separation} of {self.n_centroids} spots "
                         "by peak-centroid distance")
        return lines


class _BlockWorker:
    """Reads and thresholds images; picklable so it can be sent to a process once."""

    def __init__(self, reader, statics, trusted, kwargs, max_fraction, image_numbers):
        self.reader = reader
        self.statics = statics
        self.trusted = trusted
        self.kwargs = kwargs
        self.max_fraction = max_fraction
        self.image_numbers = image_numbers

    def _read(self, i):
        try:
            images = self.reader.read(i)
        except (FileNotFoundError, OSError) as e:
            name = getattr(e, "filename", None) or str(e)
            raise SpotFinderError(
                f"Image {self.image_numbers[i]} could not be read ({name}): "
                f"{e.strerror or e}. The file may have been moved or deleted since the "
                "images were imported; put it back (or re-import the images from their new "
                "place) and run findspots again.") from None
        if not isinstance(images, (tuple, list)):
            images = (images,)
        if len(images) != len(self.statics):
            raise SpotFinderError(
                f"Image {self.image_numbers[i]} has {len(images)} panels but the detector "
                f"model has {len(self.statics)}.")
        return images

    def __call__(self, indices):
        from .threshold import strong_pixel_indices  # numba: imported at the first image

        out = []
        thread = (os.getpid(), threading.get_ident())
        for i in indices:
            t0, c0 = time.perf_counter(), time.thread_time()
            images = self._read(i)
            t1, c1 = time.perf_counter(), time.thread_time()
            panels, n_strong, n_pixels = [], 0, 0
            for im, static, tr in zip(images, self.statics, self.trusted):
                if im.shape != static.shape:
                    raise SpotFinderError(
                        f"Image {self.image_numbers[i]} has a panel of shape {im.shape} "
                        f"(slow, fast) but the detector model says {static.shape}.")
                flat = strong_pixel_indices(im, static, tr, **self.kwargs)
                panels.append((flat, im.reshape(-1)[flat].astype(np.float64)))  # one kernel type
                n_strong += len(flat)
                n_pixels += im.size
            if n_strong > self.max_fraction * n_pixels:
                raise SpotFinderError(
                    f"{n_strong} strong pixels on image {self.image_numbers[i]}, more than "
                    f"max_strong_pixel_fraction={self.max_fraction} of the image: the "
                    "threshold is not separating spots from background. Check the gain "
                    "(raise it for over-dispersed backgrounds), mask the direct beam and "
                    "diffuse scatter (d_max) or raise sigma_strong.")
            out.append((i, panels, n_strong, t1 - t0, time.perf_counter() - t1, c1 - c0,
                        time.thread_time() - c1, thread))
        return out


_WORKER: _BlockWorker | None = None


def _init_process(worker: _BlockWorker) -> None:
    global _WORKER
    _WORKER = worker


def _run_block(indices):
    return _WORKER(indices)


def _blocks(indices: list[int], n_blocks: int) -> list[list[int]]:
    """``indices`` cut into ``n_blocks`` runs of consecutive images (fewer if too few)."""
    n_blocks = min(len(indices), max(1, n_blocks))
    return [list(b) for b in np.array_split(np.asarray(indices), n_blocks) if len(b)]


def _thread_blocks(indices: list[int], nproc: int) -> list[list[int]]:
    """Tasks of the worker threads: two images each, the last 2 * nproc one each, so
    that the thread finishing first waits for at most one image of another's (two
    with blocks of two images throughout)."""
    n_single = min(len(indices), 2 * nproc)
    head, tail = indices[:len(indices) - n_single], indices[len(indices) - n_single:]
    return (_blocks(head, len(head) // 2) if head else []) + [[i] for i in tail]


def _threshold_in_threads(worker, indices, nproc, progress, done, total):
    """``nproc`` threads each take the next block of images (:func:`_thread_blocks`,
    :class:`gonio.core.threads.TakeInTurn`) until none is left or one of them fails;
    the calling thread only reports progress (when asked) and waits."""
    finished = queue.SimpleQueue()  # images done per block; 0 when a thread ends
    results = {}

    def run(block):
        for r in worker(block):
            results[r[0]] = r
        finished.put(len(block))

    pool = ThreadPoolExecutor(nproc)
    work = TakeInTurn(_thread_blocks(indices, nproc), run, pool, nproc,
                      on_exit=lambda: finished.put(0))
    try:
        running = nproc
        while progress and running:
            n = finished.get()
            running -= n == 0
            for _ in range(n):
                done += 1
                progress(done, total)
        work.wait()  # a worker's error, raised here
    except BaseException:  # Ctrl-C while reporting progress: no further blocks
        work.stopped.set()
        raise
    finally:
        pool.shutdown(wait=True)
    return results


def _threshold_all(worker, indices, nproc, executor, progress, total_done, total):
    results = {}
    done = total_done
    nproc = min(nproc, len(indices))  # no more workers than images (nproc=1000 on 40 images)
    if nproc == 1 or len(indices) == 1:
        for block in _blocks(indices, 1):
            for r in worker(block):
                results[r[0]] = r
                done += 1
                if progress:
                    progress(done, total)
        return results
    if executor == "thread":
        return _threshold_in_threads(worker, indices, nproc, progress, done, total)
    pool = ProcessPoolExecutor(nproc, mp_context=get_context("spawn"),
                               initializer=_init_process, initargs=(worker,))
    futures = [pool.submit(_run_block, b) for b in _blocks(indices, nproc * 4)]
    try:
        for fut in as_completed(futures):
            for r in fut.result():
                results[r[0]] = r
                done += 1
                if progress:
                    progress(done, total)
    finally:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _image_indices(scan, n_images: int, scan_range) -> tuple[list[list[int]], int]:
    """Reader indices to search, as blocks (one per scan_range), and the first image number."""
    first = scan.image_range[0] if scan is not None else 1
    last = first + n_images - 1
    if not scan_range:
        return [list(range(n_images))], first
    blocks = []
    for j0, j1 in scan_range:
        if j0 < first or j1 > last:
            raise SpotFinderError(
                f"scan_range={j0},{j1} is outside the images of this sweep ({first} to {last}).")
        blocks.append(list(range(j0 - first, j1 - first + 1)))
    return blocks, first


def _check_kernel(params: SpotFinderParams, detector) -> None:
    kx, ky = params.kernel_size
    for k, p in enumerate(detector):
        nx, ny = p.image_size
        if 2 * kx + 1 > nx or 2 * ky + 1 > ny:
            raise SpotFinderError(
                f"kernel_size={kx},{ky} gives a {2 * kx + 1} x {2 * ky + 1} px window, larger "
                f"than panel {k} ({nx} x {ny} px). Use a smaller kernel_size (default 3,3).")


def find_spots(experiments, readers, params: SpotFinderParams | None = None, progress=None,
               *, executor: str = "thread") -> tuple[ReflectionTable, SpotFinderResult]:
    """Strong spots on all images: (strong reflection table, result).

    ``readers[k]`` reads the images of ``experiments[k]``; experiments that
    share one reader object (one image set) are searched once and their
    spots given the ``id`` of the experiment whose scan covers the spot's z.
    ``progress(done, total)`` is called after each image. ``executor``
    ("thread" or "process") is how ``nproc > 1`` workers run. Threads are the
    default: the numba kernels release the GIL and so does image decoding
    for the most part, and they measured faster than spawned processes
    (nproc=2 ran 1.64-1.82x and 0.87x as fast as nproc=1 on 100 Pilatus 6M
    frames, two shared cores, benchmarks/bench_findspots.py), which pay
    interpreter start-up and pickling costs.
    """
    # the kernels' modules import numba (0.3-0.4 s): importing this package does not
    from .labelling import label_pixels
    from .spots import SpotPixels, make_shoeboxes, measure_spots

    params = params or SpotFinderParams()
    params.validate()
    if len(readers) != len(experiments):
        raise SpotFinderError(
            f"{len(experiments)} experiments but {len(readers)} image readers were given.")
    nproc = params.effective_nproc()
    t_start = time.perf_counter()

    groups: list[tuple[object, list[int]]] = []
    for k, rd in enumerate(readers):
        for g in groups:
            if g[0] is rd:
                g[1].append(k)
                break
        else:
            groups.append((rd, [k]))

    # plan every image set first so that bad input fails before any work
    plans = []
    for rd, members in groups:
        expt = experiments[members[0]]
        if expt.detector is None:
            raise SpotFinderError("The experiment has no detector model: import images first.")
        _check_kernel(params, expt.detector)
        scan = expt.scan
        twod = scan is None or scan.is_still or (
            expt.imageset is not None and expt.imageset.kind != "ImageSequence")
        if scan is not None and not twod and len(rd) != scan.num_images:
            raise SpotFinderError(
                f"The sweep has {scan.num_images} images (image_range {scan.image_range}) but "
                f"its image reader has {len(rd)}: re-import the images.")
        if params.mask is not None:
            shapes = [(p.image_size[1], p.image_size[0]) for p in expt.detector]
            if len(params.mask) != len(shapes) or any(
                    np.shape(m) != sh for m, sh in zip(params.mask, shapes)):
                raise SpotFinderError(
                    f"The mask has {len(params.mask)} panel(s) of shape(s) "
                    f"{[np.shape(m) for m in params.mask]} (slow, fast) but the detector has "
                    f"{shapes}: give one mask per panel, of the panel's size.")
        blocks, first = _image_indices(scan, len(rd), params.scan_range)
        plans.append((rd, members, expt, twod, blocks, first))

    total = sum(len(i) for p in plans for i in p[4])
    result = SpotFinderResult(max_spot_size=params.max_spot_size,
                              max_separation=params.max_separation, nproc=nproc)
    timings = {"mask": 0.0, "read": 0.0, "threshold": 0.0, "label": 0.0, "measure": 0.0,
               "cpu.read": 0.0, "cpu.threshold": 0.0, "cpu.parallel_span": 0.0}
    main_thread, c_start, c_in_main = (os.getpid(), threading.get_ident()), time.thread_time(), 0.0
    tables, done = [], 0
    for rd, members, expt, twod, blocks, first in plans:
        detector = expt.detector
        min_size = params.effective_min_spot_size([p.type for p in detector])
        result.min_spot_size = min_size
        t0 = time.perf_counter()
        user = params.mask if params.mask is not None else [None] * len(detector)
        statics = [static_mask(p, expt.beam, params, k, user[k]) for k, p in enumerate(detector)]
        timings["mask"] += time.perf_counter() - t0
        worker = _BlockWorker(
            rd, statics, [p.valid_range() for p in detector],
            dict(algorithm=params.threshold_algorithm, kernel_size=tuple(params.kernel_size),
                 gain=params.gain, sigma_background=params.sigma_background,
                 sigma_strong=params.sigma_strong, min_local=params.min_local,
                 global_threshold=params.global_threshold),
            params.max_strong_pixel_fraction, [first + i for i in range(len(rd))])
        indices = [i for b in blocks for i in b]
        res = _threshold_all(worker, indices, nproc, executor, progress, done, total)
        done += len(indices)
        timings["read"] += sum(r[3] for r in res.values())
        timings["threshold"] += sum(r[4] for r in res.values())
        per_thread = {}
        for r in res.values():
            per_thread[r[7]] = per_thread.get(r[7], 0.0) + r[5] + r[6]
            timings["cpu.read"] += r[5]
            timings["cpu.threshold"] += r[6]
        timings["cpu.parallel_span"] += max(per_thread.values(), default=0.0)
        c_in_main += per_thread.get(main_thread, 0.0)
        z0 = (first - 1) if not twod else 0

        panel_tables = []
        for k, panel in enumerate(detector):
            nx, ny = panel.image_size
            t0 = time.perf_counter()
            parts, label_offset = [], 0
            for block in blocks:
                flat = [res[i][1][k][0] for i in block]
                counts = np.array([len(f) for f in flat])
                flat = np.concatenate(flat) if flat else np.zeros(0, np.int64)
                z = np.repeat(np.array(block, np.int64) + z0, counts)
                y, x = np.divmod(flat, nx)
                value = np.concatenate([res[i][1][k][1] for i in block])
                lab = label_pixels(z, y, x, (ny, nx), twod=twod)
                lab += label_offset
                label_offset = int(lab.max()) + 1 if len(lab) else label_offset
                parts.append(SpotPixels(z, y, x, value, lab))
            pix = parts[0] if len(parts) == 1 else SpotPixels(
                *(np.concatenate([getattr(p, a) for p in parts])
                  for a in ("z", "y", "x", "value", "label")))
            timings["label"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            sizes = pix.sizes()
            result.n_extracted += len(sizes)
            result.n_too_small += int((sizes < min_size).sum())
            result.n_too_large += int((sizes > params.max_spot_size).sum())
            # every spot is measured, the rejected ones too: a spot's figures come from its
            # own pixels alone, and no pixel array is copied to leave them out
            keep = (sizes >= min_size) & (sizes <= params.max_spot_size)
            spots = measure_spots(pix)
            result.n_centroids += int(keep.sum())
            if params.max_separation is not None:
                keep &= np.linalg.norm(spots.peak - spots.xyz, axis=1) <= params.max_separation
            result.n_after_separation += int(keep.sum())
            shoeboxes = make_shoeboxes(pix, spots.bbox, k, keep)
            panel_tables.append(_table(spots, keep, k, shoeboxes))
            timings["measure"] += time.perf_counter() - t0

        table = _joined(panel_tables)
        _assign_ids(table, experiments, members, twod)
        tables.append(table)
        z = table["xyzobs.px.value"][:, 2] if len(table) else np.zeros(0)
        result.image_numbers.append(np.array([first + i for i in indices]))
        result.strong_pixels_per_image.append(np.array([res[i][2] for i in indices]))
        image_of_spot = np.floor(z).astype(np.int64) - z0 + first if not twod \
            else np.floor(z).astype(np.int64) + first
        rel = image_of_spot - first  # reader index of each spot's image
        per_index = np.bincount(rel[(rel >= 0) & (rel < len(rd))], minlength=len(rd))
        result.spots_per_image.append(per_index[np.asarray(indices, np.int64)])
        result.histograms.append(
            f"Histogram of per-image spot count for imageset {len(tables) - 1}:\n"
            + spot_count_histogram(z))

    strong = _joined(tables)
    strong.experiment_identifiers = {k: e.identifier for k, e in enumerate(experiments)
                                     if k in set(strong["id"].tolist() if len(strong) else [])}
    iset = ExperimentList(experiments).imageset_numbers()
    if len(strong) and len(set(iset)) < len(experiments):  # several lattices on one sweep
        strong["imageset_id"] = np.asarray(iset, np.int32)[strong["id"]]
    timings["total"] = time.perf_counter() - t_start
    timings["cpu.serial"] = time.thread_time() - c_start - c_in_main
    result.timings = timings
    return strong, result


def _joined(tables: list[ReflectionTable]) -> ReflectionTable:
    """The tables one after another; a single table as it is (a copy of its shoeboxes
    would cost as much as making them)."""
    if len(tables) == 1:
        return tables[0]
    return ReflectionTable.concatenate(tables) if tables else ReflectionTable()


def _table(spots, keep: np.ndarray, panel: int, sb: Shoeboxes) -> ReflectionTable:
    n = int(keep.sum())
    return ReflectionTable({
        "xyzobs.px.value": spots.xyz[keep],
        "xyzobs.px.variance": spots.xyz_variance[keep],
        "bbox": spots.bbox[keep],
        "intensity.sum.value": spots.intensity[keep],
        "intensity.sum.variance": spots.intensity[keep].copy(),
        "n_signal": spots.n_signal[keep].astype(np.int32),
        "panel": np.full(n, panel, np.uint64),
        "id": np.zeros(n, np.int32),
        "flags": np.full(n, Flags.strong, np.uint64),
        "shoebox": sb,
    })


def _assign_ids(table: ReflectionTable, experiments, members: list[int], twod: bool) -> None:
    """Experiment id of each spot: the member experiment whose scan covers its z."""
    if not len(table):
        return
    ids = np.full(len(table), members[0], np.int32)
    if not twod and len(members) > 1:
        z = table["xyzobs.px.value"][:, 2]
        ids[:] = -1
        for k in members:
            s = experiments[k].scan
            z0, z1 = s.array_range
            ids[(z >= z0) & (z < z1) & (ids < 0)] = k
        ids[ids < 0] = members[0]
    table["id"] = ids
