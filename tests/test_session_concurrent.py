"""Two gonio processes on one folder: every step under the step it was computed from, readers
never blocked by a writer, and a one-line notice when the head moved meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from gonio.shell.command import Command, Outcome
from gonio.shell.session import Session
from gonio.store.history import History

WRITER = textwrap.dedent(
    """
    import json, os, random, sys, time
    from gonio.store.history import History

    folder, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(tag)
    h = History.open(folder)
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.001)
    branched = 0
    for i in range(rounds):
        head = h.head                                  # the state this round computes from
        parent = json.loads(h.load(head, "value")) if head else {"n": 0}
        time.sleep(rng.uniform(0, 0.01))               # "computing": the other may commit now
        value = {"from": head, "n": parent["n"] + 1, "tag": tag, "i": i}
        commit = h.record_step(
            "count", f"count {tag} {i}", {"tag": tag, "i": i},
            {"value": json.dumps(value).encode(), f"mine/{tag}": os.urandom(2000)},
            "log", {"n": value["n"]}, 0.01, "test", parent=head,
        )
        branched += commit.branched
    print(branched, flush=True)
    """
)


def test_two_writers_many_rounds_record_every_step_under_its_true_parent(tmp_path):
    rounds = 30
    children = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag, str(rounds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    (tmp_path / "go").touch()
    outputs = [c.communicate(timeout=120) for c in children]
    for child, (_, err) in zip(children, outputs):
        assert child.returncode == 0, err
    branched = sum(int(out) for out, _ in outputs)
    with History.open(tmp_path, create=False) as h:
        steps = h.steps()
        assert len(steps) == 2 * rounds
        by_id = {s.id: s for s in steps}
        for s in steps:
            value = json.loads(h.load(s.id, "value"))
            # the recorded parent is the step whose state the value was computed from
            assert s.parent_id == value["from"]
            parent_n = json.loads(h.load(s.parent_id, "value"))["n"] if s.parent_id else 0
            assert value["n"] == parent_n + 1 == len(h.path(s.id))
            # the manifest is the parent's plus exactly this step's two artifacts
            inherited = dict(by_id[s.parent_id].manifest) if s.parent_id else {}
            inherited.pop("value", None)
            inherited.pop(f"mine/{value['tag']}", None)
            mine = {k: v for k, v in s.manifest.items() if k not in ("value", f"mine/{value['tag']}")}
            assert mine == inherited
        # collisions happened (otherwise the test proved nothing) and made branches
        assert branched > 0
        assert any(len(h.children(s.id)) > 1 for s in steps) or len(h.children(0)) > 1


SHELL = textwrap.dedent(
    """
    import json, os, random, sys, time
    import gonio.shell.session as session_module
    from gonio.shell.command import Command, Outcome
    from gonio.shell.session import Session

    folder, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(tag)

    class Count(Command):
        def __init__(self):
            super().__init__("count", "add one", "unused:unused", [], takes_words=True)

        def function(self):
            def run(ctx, parsed):
                n = ctx.state.data.get("n", 0)
                time.sleep(rng.uniform(0, 0.02))
                return Outcome(state=ctx.state.evolve(data={"n": n + 1, tag: n}), text=tag)
            return run

    session_module.lookup = lambda name: Count()
    s = Session(folder)
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.001)
    for i in range(rounds):
        r = s.run_line(f"count {tag}{i}")
        assert r.ok, r.text
        print(json.dumps({"step": r.step, "text": r.text}), flush=True)
    """
)


def test_two_gonio_shells_say_when_a_step_became_a_branch(tmp_path):
    rounds = 15
    children = [
        subprocess.Popen([sys.executable, "-c", SHELL, str(tmp_path), tag, str(rounds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    (tmp_path / "go").touch()
    outputs = [c.communicate(timeout=180) for c in children]
    for child, (_, err) in zip(children, outputs):
        assert child.returncode == 0, err
    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert len(results) == 2 * rounds
    with History.open(tmp_path, create=False) as h:
        notices = 0
        for r in results:
            step = h.step(r["step"])
            n = json.loads(h.load(step.id, "data/n"))
            parent_n = json.loads(h.load(step.parent_id, "data/n")) if step.parent_id else 0
            assert n == parent_n + 1  # computed from the step it is recorded under
            if "is recorded as a branch from step" in r["text"]:
                notices += 1
                assert f"branch from step {step.parent_id or 0}." in r["text"]
        assert notices > 0


READER_BLOCKER = textwrap.dedent(
    """
    import os, sys, time
    from gonio.store.history import History

    h = History.open(sys.argv[1])

    def hold(stage):
        if stage == "before_commit":
            print("holding", flush=True)
            time.sleep(3)

    h._fault_hook = hold
    h.commit_step("slow", "slow", {}, {"table": os.urandom(1000)}, "", {}, 0.1, "t")
    print("committed", flush=True)
    """
)


def test_reading_works_while_another_process_holds_the_write_lock(tmp_path):
    with History.open(tmp_path) as h:
        for i in range(3):
            h.commit_step("s", f"s {i}", {}, {"table": f"t{i}".encode()}, "", {"i": i}, 0.1, "t")
    child = subprocess.Popen([sys.executable, "-c", READER_BLOCKER, str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "holding"
    session = Session(tmp_path)
    assert session.head == 3  # the uncommitted step is not visible
    r = session.run_line("history")
    assert r.ok and "s 2" in r.text and "slow" not in r.text
    assert session.history.load(3, "table") == b"t2"
    assert session.run_line("diff 1 3").ok
    assert child.poll() is None  # all of it happened while the writer held the lock
    out, err = child.communicate(timeout=30)
    assert "committed" in out, err
    assert session.head == 4
    session.close()


class _Step(Command):
    """A command that adds 1 to a counter, and lets the test act while it 'computes'."""

    def __init__(self, during=None):
        super().__init__("count", "count", "unused:unused", [])
        self.during = during

    def function(self):
        def run(ctx, parsed):
            n = ctx.state.data.get("n", 0)
            if self.during:
                self.during()
            return Outcome(state=ctx.state.evolve(data={"n": n + 1}), text=f"n={n + 1}")

        return run


def _use(monkeypatch, command):
    monkeypatch.setattr("gonio.shell.session.lookup", lambda name: command)


def test_a_step_computed_while_another_process_moved_the_head_is_a_branch(tmp_path, monkeypatch):
    a = Session(tmp_path)
    _use(monkeypatch, _Step())
    assert a.run_line("count").step == 1

    def other_process_commits():
        with History.open(tmp_path) as other:
            other.commit_step("other", "other", {}, {"data/n": b"100"}, "", {}, 0.1, "t")

    _use(monkeypatch, _Step(during=other_process_commits))
    r = a.run_line("count")
    assert r.ok, r.text
    assert ("another gonio process moved the session to step 2; this step is recorded as a "
            "branch from step 1") in r.text
    assert r.step == 3 and a.history.step(3).parent_id == 1 and a.history.step(2).parent_id == 1
    assert a.head == 3 and a.state.data["n"] == 2  # computed from step 1 (n=1), not step 2
    # the next command in this process continues from its own step, with no notice
    _use(monkeypatch, _Step())
    r = a.run_line("count")
    assert r.ok and "Note" not in r.text and a.history.step(r.step).parent_id == 3
    a.close()


def test_head_moved_between_commands_is_announced(tmp_path, monkeypatch):
    a = Session(tmp_path)
    _use(monkeypatch, _Step())
    assert a.run_line("count").ok and a.run_line("count").ok
    with History.open(tmp_path) as other:
        other.goto(1)
    r = a.run_line("count")
    assert "another gonio process moved the session to step 1 since your last command" in r.text
    assert a.history.step(r.step).parent_id == 1 and a.state.data["n"] == 2
    a.history.goto(2)  # moved by this process itself: nothing to announce
    r = a.run_line("count")
    assert r.ok and "Note" not in r.text and a.history.step(r.step).parent_id == 2
    a.close()


def test_a_step_whose_parent_was_forgotten_meanwhile_is_not_recorded(tmp_path, monkeypatch):
    a = Session(tmp_path)
    _use(monkeypatch, _Step())
    assert a.run_line("count").ok and a.run_line("count").ok  # steps 1, 2

    def other_process_forgets():
        with History.open(tmp_path) as other:
            other.goto(1)
            other.forget(2)

    _use(monkeypatch, _Step(during=other_process_forgets))
    r = a.run_line("count")
    assert not r.ok and "Step 2, which this count was computed from, is no longer" in r.text
    assert [s.id for s in a.history.steps()] == [1] and a.head == 1
    a.close()
