"""The step tree drawn as ``git log --graph`` draws commits, oldest step first.

Each branch runs down its own column (a *lane*). A step is a node: ``*`` for
the current step (the head), ``o`` for the others, followed by its number, so
``*7`` reads "step 7, where you are". Where a step has several children, the
child on the way to the head (else the oldest) continues the step's lane and
every other child opens a lane to its right with a ``|\\`` fork line; side
branches are drawn before the lane they leave continues, so the branch that
leads to the head is always the leftmost, unbroken line. A ``replay`` (or any
command run from the empty start, step 0) is a branch from step 0, drawn
from a first ``o0`` row.

``all_branches=False`` draws the current branch in full (from the start to
the head, and on to the newest step after an ``undo``) and folds each side
branch into one ``+`` line: its first step, how many steps it has and the step
its newest tip ends at (``history --all`` draws them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    """What the graph needs of a step (StepInfo has these fields)."""

    id: int
    parent_id: int | None
    line: str


LINE_WIDTH = 70  # characters of a command line shown


def draw(steps: Sequence, head: int | None, describe: Callable[[object], str],
         all_branches: bool = True) -> list[str]:
    """The rows of the graph, one per step (or folded branch) plus fork lines.

    ``steps`` are StepInfo-like records (``id``, ``parent_id``, ``line``);
    ``describe(step)`` gives the text after the command line (time, key
    figures). Returns [] when there are no steps.
    """
    if not steps:
        return []
    by_id = {s.id: s for s in steps}
    children: dict[int | None, list[int]] = {}
    for s in sorted(steps, key=lambda s: s.id):
        parent = s.parent_id if s.parent_id in by_id else None
        children.setdefault(parent, []).append(s.id)
    on_path = _current_branch(by_id, children, head)
    rows: list[tuple[str, str]] = []  # (graph prefix, text)

    width = len(str(max(by_id))) + 1

    def label(step_id: int) -> str:
        node = "*" if step_id == head else "o"
        return f"{node}{step_id}".ljust(width)

    def text_of(step) -> str:
        return f"{step.line[:LINE_WIDTH]}  {describe(step)}".rstrip()

    def sides(step_id: int | None, lane: int) -> int | None:
        """Draw the side branches of ``step_id`` (in ``lane``); return the child that continues."""
        kids = children.get(step_id, [])
        if not kids:
            return None
        keeper = next((k for k in kids if k in on_path), kids[0])
        for side in (k for k in kids if k != keeper):
            # a fork line right under its step needs no words; a later one says where it is from
            note = "" if last[0] == step_id else f"   (branches from step {step_id or 0})"
            rows.append(("| " * lane + "|\\", note))
            if not all_branches and side not in on_path:
                rows.append(("| " * (lane + 1), _folded(side, by_id, children)))
            else:
                chain(side, lane + 1)
        return keeper

    def chain(step_id: int | None, lane: int) -> None:
        """Draw ``step_id`` and its line of descent in ``lane`` (recursing only at forks)."""
        while step_id is not None:
            rows.append(("| " * lane, f"{label(step_id)}  {text_of(by_id[step_id])}"))
            last[0] = step_id
            step_id = sides(step_id, lane)

    last: list[int | None] = [None]
    if len(children.get(None, [])) > 1:
        rows.append(("", "o0  (the empty start)"))
    chain(sides(None, 0), 0)
    return [prefix + text for prefix, text in rows]


def _current_branch(by_id, children, head) -> set[int]:
    """Steps from the start to the head, then on through the newest child after an undo."""
    path: set[int] = set()
    current = head
    while current is not None and current in by_id:
        path.add(current)
        current = by_id[current].parent_id
    current = head
    while children.get(current):
        current = children[current][-1]
        path.add(current)
    return path


def _folded(first: int, by_id, children) -> str:
    """One line for the side branch starting at ``first``."""
    ids, todo = [], [first]
    while todo:
        s = todo.pop()
        ids.append(s)
        todo.extend(children.get(s, []))
    tips = [s for s in ids if not children.get(s)]
    step = by_id[first]
    more = len(ids) - 1
    extent = f" (+{more} more step{'s' if more != 1 else ''}, newest {max(ids)})" if more else ""
    branches = f", {len(tips)} tips" if len(tips) > 1 else ""
    return f"+{first}  {step.line[:LINE_WIDTH]}{extent}{branches}"


def render(history, head: int | None, describe: Callable[[object], str],
           all_branches: bool = False) -> str:
    """The graph of a :class:`gonio.store.history.History` as text (empty if no step)."""
    return "\n".join(draw(history.steps(), head, describe, all_branches))
