"""core.threads.TakeInTurn: every task once, the first error stops the others."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gonio.core.threads import TakeInTurn


def test_every_task_runs_once_and_threads_share_them():
    seen, who = [], set()
    lock = threading.Lock()

    def fn(task):
        time.sleep(0.002 * (task % 3))
        with lock:
            seen.append(task)
            who.add(threading.get_ident())

    exits = []
    with ThreadPoolExecutor(3) as pool:
        TakeInTurn(range(40), fn, pool, 3, on_exit=lambda: exits.append(1)).wait()
    assert sorted(seen) == list(range(40))
    assert len(who) == 3 and len(exits) == 3


def test_first_error_stops_the_other_threads_and_is_raised():
    started = []

    def fn(task):
        started.append(task)
        if task == 5:
            raise ValueError("image 5 is unreadable")
        time.sleep(0.005)

    exits = []
    with ThreadPoolExecutor(2) as pool:
        work = TakeInTurn(range(100), fn, pool, 2, on_exit=lambda: exits.append(1))
        with pytest.raises(ValueError, match="image 5"):
            work.wait()
    assert work.stopped.is_set()
    assert len(started) < 10  # the others stopped after their current task
    assert len(exits) == 2


def test_more_threads_than_tasks():
    out = []
    with ThreadPoolExecutor(4) as pool:
        TakeInTurn([1, 2], out.append, pool, 4).wait()
    assert sorted(out) == [1, 2]


def test_ctrl_c_while_findspots_reports_progress_stops_its_threads():
    """Ctrl-C arrives in the calling thread, which reports progress: the threads finish
    the blocks they hold and take no more."""
    from gonio.core.spotfinding.finder import _threshold_in_threads

    read = []

    def worker(block):
        for i in block:
            time.sleep(0.003)
            read.append(i)
            yield (i, None)

    def progress(done, total):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _threshold_in_threads(worker, list(range(200)), 2, progress, 0, 200)
    assert 4 <= len(read) < 100  # without the stop all 200 are read
