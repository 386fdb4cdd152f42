"""A word without "=" where a command takes none is an error, not silently dropped."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("line, words", [
    ("save /data/proc/run1", ["save does not take '/data/proc/run1'",
                              "did you mean output.prefix=/data/proc/run1?"]),
    ("findspots 2", ["findspots does not take '2'", "help findspots"]),
    ("undo 3", ["undo does not take '3'", "goto N moves to step N"]),
    ("show beam", ["show does not take 'beam'"]),
    ("history --al", ["history does not take '--al'", "--all"]),
])
def test_a_stray_word_is_refused_and_changes_nothing(session, line, words):
    """``save /path`` once wrote ./PREFIX.expt and ignored the path; ``findspots 2`` ran
    with every core."""
    before = session.head
    r = session.run_line(line)
    assert not r.ok
    for w in words:
        assert w in r.text
    assert session.head == before


def test_commands_that_take_words_still_do(session):
    assert session.run_line("help findspots").ok
    assert session.run_line("history --all").ok
    r = session.run_line("goto 5")
    assert not r.ok and "There is no step 5" in r.text  # the word reached goto
