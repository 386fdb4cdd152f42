"""`history` draws the step tree as `git log --graph` does: branch lines, the current step
marked, side branches folded unless --all."""

from __future__ import annotations

from gonio.shell.history_graph import Node, draw
from gonio.shell.session import Session


def _tree():
    # 1 - 2 - 3 - 4          (head 4)
    #      \- 5 - 6
    #          \- 7
    # 8 - 9                  (a replay: a branch from step 0)
    return [Node(1, None, "import x"), Node(2, 1, "findspots"), Node(3, 2, "index"),
            Node(4, 3, "refine"), Node(5, 2, "findspots d_min=3"), Node(6, 5, "index"),
            Node(7, 5, "index method=fft1d"), Node(8, None, "import x"), Node(9, 8, "findspots")]


def _describe(step):
    return f"[{step.id}]"


def test_all_branches_drawn_in_lanes_with_the_head_marked():
    rows = draw(_tree(), 4, _describe, all_branches=True)
    text = "\n".join(rows)
    # every step exactly once, the head with *, the others with o
    for i in range(1, 10):
        assert text.count(f"[{i}]") == 1
    assert "*4 " in text and "o4" not in text and text.count("*") == 1
    # the branch leading to the head is the leftmost lane; side branches one lane right
    lane = {int(r.split("[")[1].rstrip("]")): r.index("o" if "*" not in r else "*")
            for r in rows if "[" in r}
    assert lane[1] == lane[2] == lane[3] == lane[4] == 0
    assert lane[5] == lane[6] == 2 and lane[7] == 4  # "| o5", "| | o7"
    assert lane[8] == lane[9] == 2  # the replay branch from step 0
    assert rows[0].startswith("o0")  # two roots: the empty start is drawn
    # a fork line under the step it leaves, side branch before the continuation
    i2 = next(i for i, r in enumerate(rows) if "[2]" in r)
    assert rows[i2 + 1] == "|\\" and "[5]" in rows[i2 + 2]
    assert next(i for i, r in enumerate(rows) if "[3]" in r) > i2 + 2
    i5 = next(i for i, r in enumerate(rows) if "[5]" in r)
    assert rows[i5 + 1] == "| |\\" and rows[i5 + 2].startswith("| | o7")


def test_default_folds_side_branches_to_one_line():
    rows = draw(_tree(), 4, _describe, all_branches=False)
    text = "\n".join(rows)
    assert all(f"[{i}]" in text for i in (1, 2, 3, 4))
    assert not any(f"[{i}]" in text for i in (5, 6, 7, 8, 9))
    folded = [r for r in rows if "+" in r]
    assert folded == ["| +8  import x (+1 more step, newest 9)",
                      "| +5  findspots d_min=3 (+2 more steps, newest 7), 2 tips"]


def test_after_undo_the_current_branch_runs_on_to_its_newest_step():
    rows = draw(_tree(), 2, _describe, all_branches=False)
    text = "\n".join(rows)
    assert "*2 " in text
    # the newest child of 2 is 5, then 7 (newest of 6, 7): that line is the current branch
    assert all(f"[{i}]" in text for i in (1, 2, 5, 7))
    assert "| +3  index (+1 more step, newest 4)" in rows


def test_shell_history_draws_a_branch_after_goto(tmp_path):
    s = Session(tmp_path)
    h = s.history
    for i in range(3):
        h.commit_step("s", f"s {i}", {}, {"t": f"{i}".encode()}, "", {"i": i}, 0.1, "t")
    assert s.run_line("goto 1").ok
    h.commit_step("s", "s branch", {}, {"t": b"b"}, "", {}, 0.1, "t")  # step 4, from step 1
    assert s.run_line("goto 0").ok
    h.commit_step("s", "s replayed", {}, {"t": b"r"}, "", {}, 0.1, "t")  # step 5, from step 0
    assert s.run_line("goto 4").ok
    text = s.run_line("history").text
    assert "*4  s branch" in text and "| +2  s 1 (+1 more step, newest 3)" in text
    assert "| +5  s replayed" in text and "o1  s 0" in text
    full = s.run_line("history --all").text
    assert "| o2  s 1" in full and "| o3  s 2" in full and "| o5  s replayed" in full
    assert s.run_line("history all=True").text == full
    assert s.head == 4  # drawing changes nothing
    s.close()
