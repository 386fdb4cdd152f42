"""Threads that each take the next task from one shared list (dynamic scheduling).

Image work (findspots' threshold, integrate's sections) runs in a few threads that
release the GIL in numba kernels. One future per task wakes the calling thread for
every task (0.03-0.06 ms of its CPU each, on the critical path); instead each thread
runs one loop that takes the next task under a lock until none is left, so a thread
that finishes early simply takes more. The first error stops the other threads taking
further tasks (those running finish) and is raised in the calling thread, as is
Ctrl-C there, after the running tasks have ended.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

_END = object()

#: Threads per core beyond which a step does not go, whatever ``nproc`` asks: more only
#: add overhead (and a mistyped nproc=1000000000 would try to start that many).
MAX_THREADS_PER_CORE = 4


def usable_threads(nproc: int) -> int:
    """``nproc`` (at least 1), but no more than :data:`MAX_THREADS_PER_CORE` per core."""
    return max(1, min(int(nproc), MAX_THREADS_PER_CORE * (os.cpu_count() or 1)))


class TakeInTurn:
    """``n`` loops submitted to ``executor``, each calling ``fn(task)`` on the next task
    of ``tasks`` until none is left or a task fails; ``on_exit()`` (if given) is called
    by each loop as it ends, however it ends. :meth:`wait` returns when every loop has
    ended and raises the first error."""

    def __init__(self, tasks: Iterable, fn: Callable, executor: Executor, n: int,
                 on_exit: Callable[[], object] | None = None):
        self._todo = iter(tasks)
        self._fn, self._on_exit = fn, on_exit
        self._take = threading.Lock()
        self.stopped = threading.Event()
        self.futures = [executor.submit(self._loop) for _ in range(n)]

    def _loop(self) -> None:
        try:
            while not self.stopped.is_set():
                with self._take:
                    task = next(self._todo, _END)
                if task is _END:
                    return
                try:
                    self._fn(task)
                except BaseException:
                    self.stopped.set()  # the other loops stop after their current task
                    raise
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def wait(self) -> None:
        """Wait for every loop; raise the first loop's error. Interrupted (Ctrl-C) or
        failing, no further task starts and the running ones are waited for."""
        try:
            for f in self.futures:
                f.result()
        finally:
            self.stopped.set()
            for f in self.futures:
                f.exception()  # waits for the loop to end, without raising
