"""The progress bar: only on a terminal, only for work longer than a second, with time left."""

from __future__ import annotations

import io

from gonio.shell.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(p: Progress, times: list[float], total: int) -> None:
    """Call ``p`` after each of the first len(times) images, image i finishing at times[i] s."""
    clock = iter(times)
    p.clock = lambda: next(clock)
    for done in range(1, len(times) + 1):
        p("findspots", done, total)


def test_bar_with_images_done_and_time_left_after_one_second():
    out = Terminal()
    run(Progress(out), [0.5 * i for i in range(10)], 10)  # 0.5 s per image
    text = out.getvalue()
    assert "findspots: [" in text
    first = text.split("\r")[1]
    assert "3/10 images" in first  # not before one second of work
    assert "4 s left" in first  # 7 images at 0.5 s each
    assert "10/10 images  done in 4 s" in text and text.endswith("\n")


def test_short_work_prints_nothing():
    out = Terminal()
    run(Progress(out), [0.05 * i for i in range(10)], 10)
    assert out.getvalue() == ""


def test_nothing_when_piped_or_disabled():
    piped = io.StringIO()
    run(Progress(piped), [0.5 * i for i in range(10)], 10)
    assert piped.getvalue() == ""
    out = Terminal()
    run(Progress(out, enabled=False), [0.5 * i for i in range(10)], 10)
    assert out.getvalue() == ""


def test_reset_after_interrupt_ends_the_line_and_starts_afresh():
    out = Terminal()
    p = Progress(out)
    run(p, [0.0, 0.6, 1.2, 1.8], 10)  # 4 of 10 images, then Ctrl-C
    assert "\r" in out.getvalue()
    p.reset()
    assert out.getvalue().endswith("\n")
    out.truncate(0)
    out.seek(0)
    run(p, [10.0, 10.1, 10.2], 3)  # a new, short step: nothing drawn
    assert out.getvalue() == ""
