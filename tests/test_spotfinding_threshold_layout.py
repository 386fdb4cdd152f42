"""The threshold's per-thread work arrays start at staggered addresses (4k aliasing).

Where malloc happened to put them, the dispersion_extended threshold of the thaumatin
Pilatus 6M image ran 2.5-3x slower in some processes (benchmarks/figures.md); the arrays
are now placed at fixed, distinct offsets modulo 4096, clear of the offsets where image
rows usually start. Placing them must change no result.
"""

import threading

import numpy as np

from gonio.core.spotfinding import threshold as T


def test_work_arrays_start_at_distinct_aligned_offsets():
    image = np.random.default_rng(3).poisson(5.0, (64, 50)).astype(np.int32)
    image[20:23, 30:33] += 400

    def run():
        T.strong_pixel_indices(image, np.ones(image.shape, bool), (-1, 1e6))
        return dict(T._SCRATCH.arrays)

    arrays = {}
    worker = threading.Thread(target=lambda: arrays.update(run()))  # a fresh thread: fresh arrays
    worker.start()
    worker.join()
    offsets = {name: a.ctypes.data % 4096 for name, a in arrays.items() if name in T._SLOTS}
    assert set(offsets) >= {"col_p", "col_q", "win_p", "win_q", "maybe", "sig_ring", "tmp",
                            "core_ring", "bn", "bs"}
    assert len(set(offsets.values())) == len(offsets)  # no two at one offset
    assert all(o % 64 == 0 and 1024 <= o < 4096 for o in offsets.values())  # clear of 0-1024
    assert all(a.flags.aligned and a.flags.c_contiguous for a in arrays.values())
    # the fills the kernel relies on: ones beyond the ends of the signal rows (h = 2 for the
    # default 3 x 3 kernel), zeros padding the rows read as uint64 words
    h = 2
    assert arrays["tmp"][:h].min() == 1 and arrays["tmp"][-h:].min() == 1
    assert arrays["sig_ring"][:, :h].min() == 1 and arrays["sig_ring"][:, -h:].min() == 1
    assert arrays["maybe"][image.shape[1]:].max(initial=0) == 0


def test_placement_changes_no_strong_pixel():
    rng = np.random.default_rng(4)
    image = rng.poisson(3.0, (120, 97)).astype(np.int32)
    for y, x in rng.integers(5, 90, (12, 2)):
        image[y:y + 3, x:x + 3] += rng.integers(30, 400)
    static = np.ones(image.shape, bool)
    for algorithm in ("dispersion", "dispersion_extended"):
        first = T.strong_pixel_indices(image, static, (-1, 1e6), algorithm)
        placed = dict(T._SCRATCH.arrays)
        T._SCRATCH.arrays = {k: np.array(v) for k, v in placed.items()}  # malloc's addresses
        try:
            again = T.strong_pixel_indices(image, static, (-1, 1e6), algorithm)
        finally:
            T._SCRATCH.arrays = placed
        assert len(first) > 20
        np.testing.assert_array_equal(first, again)
