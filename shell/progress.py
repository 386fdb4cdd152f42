"""A text progress bar for steps that read images (on a terminal only)."""

from __future__ import annotations

import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


class Progress:
    """Callable ``(what, done, total)``: a bar with the images done/total and the time left.

    Drawn on ``stream`` only when it is a terminal (and ``enabled``), and only
    once the work has taken more than ``delay`` seconds: short steps print
    nothing. Redrawn at most every ``interval`` seconds; the last call
    (done == total) ends the line.
    """

    def __init__(self, stream, width: int = 30, enabled: bool = True, delay: float = 1.0,
                 interval: float = 0.1, clock=time.perf_counter):
        self.stream = stream
        self.clock = clock
        self.width = width
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.delay = delay
        self.interval = interval
        self._start: dict[str, tuple[float, int]] = {}  # what -> (time, done) of the first call
        self._drawn: dict[str, float] = {}  # what -> time of the last drawing

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.tty or total <= 0:
            return
        now = self.clock()
        t0, done0 = self._start.setdefault(what, (now, done))
        if done >= total:
            if what in self._drawn:
                self._draw(what, total, total, "done in " + _duration(now - t0))
                self.stream.write("\n")
                self.stream.flush()
            self.reset(what)
            return
        if now - t0 < self.delay or now - self._drawn.get(what, -1e9) < self.interval:
            return
        rate = (done - done0) / (now - t0) if now > t0 else 0.0
        left = f"{_duration((total - done) / rate)} left" if rate > 0 else ""
        self._draw(what, done, total, left)
        self._drawn[what] = now

    def _draw(self, what: str, done: int, total: int, note: str) -> None:
        bar = "#" * int(min(1.0, done / total) * self.width)
        self.stream.write(f"\r{what}: [{bar:<{self.width}}] {done}/{total} images  {note}\033[K")
        self.stream.flush()

    def reset(self, what: str | None = None) -> None:
        """Forget the work ``what`` (all when None), e.g. after Ctrl-C; ends a drawn line."""
        names = [what] if what is not None else list(self._start)
        if any(n in self._drawn for n in names):
            self.stream.write("\n")
            self.stream.flush()
        for n in names:
            self._start.pop(n, None)
            self._drawn.pop(n, None)
