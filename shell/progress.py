"""A text progress bar for steps that read images (on a terminal only)."""

from __future__ import annotations

import time


class Progress:
    """Callable ``(what, done, total)``; draws on ``stream`` when it is a terminal."""

    def __init__(self, stream, width: int = 30):
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._t0 = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.tty or total <= 0:
            return
        t0 = self._t0.setdefault(what, time.perf_counter())
        frac = min(1.0, done / total)
        bar = "#" * int(frac * self.width)
        rate = done / max(time.perf_counter() - t0, 1e-9)
        self.stream.write(f"\r{what}: [{bar:<{self.width}}] {done}/{total} ({rate:.1f}/s)")
        if done >= total:
            self.stream.write("\n")
            self._t0.pop(what, None)
        self.stream.flush()
