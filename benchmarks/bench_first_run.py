"""First run against second run of ``gonio demo``, with an empty kernel cache.

Runs ``gonio demo`` twice in fresh folders with a fresh, empty numba cache
(NUMBA_CACHE_DIR in a temporary folder): the first run compiles the numba
kernels (in the demo process and in the background process the shell
starts), the second loads them. Reports wall times, each step's time (from
``history``) and the difference (target: first run at most 5 s slower),
``repeats`` times (each with its own empty cache), then the median; and the CPU
seconds of each run, the first's background processes included (on Linux, where
this process adopts them when the demo ends before them), which the load of a shared
machine disturbs less than the wall times.

With ``compile``: instead, the CPU seconds (user + sys) of preparing each kernel
unit the demo needs, each in a process of its own, in a cache empty at the start
(``python -m gonio.core.jit UNIT``, numba's start-up included), which the load
of a shared machine disturbs less than wall times (but still by up to 2x: compare
only figures of one run). With ``kernels``: where that compilation goes, kernel
by kernel (numba's compile events; a kernel's time includes the kernels and
numpy functions it compiles on the way, and is also given without them), in this
process, with an empty cache.

With ``timeline [TREE]`` (Linux: reads /proc): one first run of the working tree (or
TREE), empty cache, as a timeline: when each step ends and each unit is prepared, the
kernel messages, and per second the CPU of the demo process and of the background
processes it started (their descendants), with the cores left idle: what the first run
waits for, and where a core had nothing to do.

With ``compare TREE [TREE2]``: both of these, for the working tree (or TREE2) and for
another tree alternately (interleaved, so that the load of a shared machine falls on both
alike).
TREE is a folder holding ``gonio/core``, ``gonio/shell``, ``gonio/store`` and
``gonio/session_examples`` (``git archive HEAD core shell store session_examples |
tar -x -C TREE/gonio``), imported through ``PYTHONPATH``.

    python benchmarks/bench_first_run.py [repeats=3]
    python benchmarks/bench_first_run.py compile [repeats=1]
    python benchmarks/bench_first_run.py kernels [unit...]
    python benchmarks/bench_first_run.py timeline [TREE]
    python benchmarks/bench_first_run.py compare TREE [TREE2] [repeats=4]
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The kernel units ``gonio demo`` compiles (gonio.shell.main.STEP_KERNELS of its steps), and
#: the simulator's, which trees before 2026-12-06 15:00 had (0 s where a tree has no such unit;
#: trees before 2026-12-06 18:00 had integrate's kernels in one unit, gonio.core.integration;
#: before 2026-12-06 20:30 the spot-finding unit wrote the strong table's shoebox column, and
#: the shoebox unit compiled the reading kernels too; the byte-offset decoder is a unit since
#: 2026-12-06 20:45).
DEMO_UNITS = ("gonio.core.simulate", "gonio.core.spotfinding.threshold", "gonio.core.spotfinding",
              "gonio.core.io.shoebox_kernels", "gonio.core.formats.byte_offset",
              "gonio.core.integration", "gonio.core.integration.box_kernels")


def run_demo(folder: Path, env: dict) -> tuple[float, dict, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gonio.shell.main", "demo", str(folder)], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=folder.parent)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"gonio demo failed:\n{r.stdout}\n{r.stderr}")
    steps = {}  # from the line each step ends with: [step 3: findspots, 0.47 s]
    for m in re.finditer(r"\[step \d+: (\w+), ([\d.]+) s\]", r.stdout):
        name = m.group(1)
        while name in steps:  # a step run twice (scale): "scale", "scale 2"
            name = f"{m.group(1)} {int((name.split() + ['1'])[1]) + 1}"
        steps[name] = float(m.group(2))
    return wall, steps, r.stderr


def wait_for_preparation(cache: Path) -> None:
    """Block until no background preparation holds a unit of the cache folder."""
    for lock in sorted((cache / "gonio-state").glob("*.lock")):
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX)


def tree_env(tree: str | None, **extra) -> dict:
    """The environment of a gonio process of the working tree (None) or of ``tree``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if tree:
        env["PYTHONPATH"] = tree
    return dict(env, **extra)


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux): the background
    processes of a demo that outlive it, whose CPU time then counts in this process's
    children's (:func:`children_cpu`)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def children_cpu() -> float:
    """CPU seconds (user + sys) of this process's children that ended, once the orphans
    adopted (:func:`adopt_orphans`) are reaped."""
    while True:
        try:
            if os.waitpid(-1, 0)[0] == 0:
                break
        except ChildProcessError:
            break
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


#: CPU seconds of the last :func:`first_and_second`: first run with the background
#: processes it started, and second run (NaN where orphans cannot be adopted)
LAST_CPU = [float("nan"), float("nan")]


def first_and_second(tmp: Path, tree: str | None = None) -> tuple[float, float, dict, dict, str]:
    cache = tmp / "numba-cache"
    env = tree_env(tree, NUMBA_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    adopted = adopt_orphans()
    cpu0 = children_cpu()
    first, steps1, err1 = run_demo(tmp / "demo1", env)
    wait_for_preparation(cache)
    cpu1 = children_cpu()
    second, steps2, _ = run_demo(tmp / "demo2", env)
    cpu2 = children_cpu()
    LAST_CPU[:] = [cpu1 - cpu0, cpu2 - cpu1] if adopted else [float("nan")] * 2
    return first, second, steps1, steps2, err1


def demo_runs(repeats: int) -> None:
    excess = []
    for k in range(repeats):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            first, second, steps1, steps2, err1 = first_and_second(Path(tmp))
        excess.append(first - second)
        print(f"run {k + 1}: load {load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
              f"cores; empty cache {first:6.2f} s, second run {second:6.2f} s, "
              f"first - second {first - second:6.2f} s (target <= 5 s); CPU of the first "
              f"run (background processes included) {LAST_CPU[0]:.2f} s, of the second "
              f"{LAST_CPU[1]:.2f} s")
        for name in steps1:
            print(f"  {name:<24} {steps1[name]:6.2f} s  then "
                  f"{steps2.get(name, float('nan')):6.2f} s")
        notes = [line for line in err1.splitlines() if "kernels" in line]
        print("  messages of the first run:", *notes, sep="\n    ")
    print(f"median first - second over {repeats} runs: {statistics.median(excess):.2f} s, "
          f"max {max(excess):.2f} s")


def units_cpu(tree: str | None = None) -> dict:
    """CPU seconds of preparing each unit of the demo, each in a fresh process (numba's
    start-up included), in one cache folder, empty at the start: integrate's box kernels
    first, so that the unit of the other integration kernels, whose warm-up runs
    integrate, loads them instead of compiling them again."""
    cpu = {}
    order = sorted(DEMO_UNITS, key=lambda u: u != "gonio.core.integration.box_kernels")
    with tempfile.TemporaryDirectory() as tmp:
        for unit in order:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([sys.executable, "-m", "gonio.core.jit", unit], cwd=tmp,
                               env=tree_env(tree, NUMBA_CACHE_DIR=tmp), check=True,
                               capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[unit] = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                         if r.stdout.strip() else 0.0)  # no output: the tree has no such unit
    return {unit: cpu[unit] for unit in DEMO_UNITS}


def compile_cpu(repeats: int) -> None:
    """CPU seconds of preparing each unit alone, in one process, with an empty cache."""
    total = []
    for k in range(repeats):
        cpu = units_cpu()
        total.append(sum(cpu.values()))
        print(f"run {k + 1} (load {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{u.split('.', 2)[-1]} {s:.2f} s" for u, s in cpu.items())
              + f"; total {total[-1]:.2f} s of CPU")


def kernel_times(units: list[str]) -> None:
    """CPU seconds of each numba compilation while preparing ``units`` (the demo's
    when empty) one after the other in this process, with an empty cache."""
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp()
    from importlib import import_module

    from numba.core import event

    from gonio.core import jit

    class CpuTimes(event.Listener):
        """CPU seconds between the start and end of each compilation (compilations nest:
        a kernel's includes those of the kernels it calls), and without the nested ones."""

        def __init__(self):
            self.stack, self.done = [], []

        def on_start(self, ev):
            self.stack.append([time.process_time(), 0.0])

        def on_end(self, ev):
            t0, nested = self.stack.pop()
            seconds = time.process_time() - t0
            if self.stack:
                self.stack[-1][1] += seconds
            self.done.append((seconds, seconds - nested, ev.data["dispatcher"].py_func.__name__))

    jit.notify = lambda text: None
    for unit in [u for u in units or DEMO_UNITS if u in jit.UNITS]:
        module, func = jit.UNITS[unit][0].split(":")
        cpu, listener = time.process_time(), CpuTimes()
        with event.install_listener("numba:compile", listener):
            getattr(import_module(module), func)()
        cpu, done = time.process_time() - cpu, listener.done
        print(f"{unit}: {cpu:.2f} s of CPU, {len(done)} compilations (load "
              f"{os.getloadavg()[0]:.1f}); the longest, their callees included (and not):")
        for seconds, own, name in sorted(done, reverse=True)[:8]:
            print(f"  {seconds:6.2f} s ({own:5.2f} s)  {name}")


def compare(tree: str, repeats: int, other: str | None = None) -> None:
    """The working tree (or the tree ``other``) against ``tree``, alternating: compile CPU
    of the demo's units, then the demo's first run minus its second."""
    trees = {other or "this tree": str(Path(other).absolute()) if other else None,
             tree: str(Path(tree).absolute())}
    cpu, excess, wait, extra = {}, {}, {}, {}
    for k in range(repeats):
        for name in list(trees)[::1 if k % 2 == 0 else -1]:
            units = units_cpu(trees[name])
            cpu.setdefault(name, []).append(units)
            print(f"{name}: compile CPU (load {os.getloadavg()[0]:.1f}) " + ", ".join(
                f"{u.split('.', 2)[-1]} {s:.2f} s" for u, s in units.items())
                + f"; total {sum(units.values()):.2f} s", flush=True)
    for k in range(repeats):
        for name in list(trees)[::1 if k % 2 == 0 else -1]:
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as tmp:
                first, second, steps1, steps2, _ = first_and_second(Path(tmp), trees[name])
            excess.setdefault(name, []).append(first - second)
            wait.setdefault(name, []).append(sum(steps1.get(s, 0.0) - steps2.get(s, 0.0)
                                                 for s in ("findspots", "integrate")))
            extra.setdefault(name, []).append(LAST_CPU[0] - LAST_CPU[1])
            print(f"{name}: demo (load {load:.1f}) first {first:.2f} s, second {second:.2f} s, "
                  f"first - second {first - second:.2f} s; CPU {LAST_CPU[0]:.2f} / "
                  f"{LAST_CPU[1]:.2f} s (" + ", ".join(
                      f"{s} {steps1.get(s, 0):.2f} / {steps2.get(s, 0):.2f} s"
                      for s in ("simulate", "findspots", "integrate")) + ")", flush=True)
    for name in trees:
        totals = [sum(u.values()) for u in cpu[name]]
        per_unit = {u: statistics.median(c[u] for c in cpu[name]) for u in DEMO_UNITS}
        print(f"{name}: median compile CPU {statistics.median(totals):.2f} s ("
              + ", ".join(f"{u.split('.', 2)[-1]} {s:.2f}" for u, s in per_unit.items())
              + f"); median first - second {statistics.median(excess[name]):.2f} s, of which "
              f"findspots and integrate {statistics.median(wait[name]):.2f} s; the first run's "
              f"CPU beyond the second's {statistics.median(extra[name]):.2f} s")


def _cpu_of_tree(root: int) -> tuple[float, float]:
    """CPU seconds (user + sys) so far of process ``root``, and of its descendants (those
    alive, or ended and not yet reaped, read from /proc; those it reaped, from its own
    children's time)."""
    tick = os.sysconf("SC_CLK_TCK")
    stat = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stat[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
                                (int(fields[13]) + int(fields[14])) / tick)
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _, _) in stat.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    _, own, reaped = stat.get(root, (0, 0.0, 0.0))
    return own, reaped + sum(stat[pid][1] + stat[pid][2] for pid in tree - {root})


def timeline(tree: str | None = None) -> None:
    """One first run (empty cache) as a timeline; see the module docstring."""
    import threading

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "numba-cache"
        env = tree_env(tree, NUMBA_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
        adopt_orphans()  # background processes outliving the demo stay descendants of this one
        children_cpu()
        base = _cpu_of_tree(os.getpid())[1]
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "gonio.shell.main", "demo",
                                 str(tmp / "demo")], env=env, cwd=tmp, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        events, seen, samples, holding, asleep = [], set(), [], set(), []

        def read():
            for line in proc.stdout:
                if line.startswith("[step") or "kernels" in line:
                    events.append((time.perf_counter() - t0, line.strip()))

        reader = threading.Thread(target=read)
        reader.start()
        demo = (0.0, 0.0)
        while True:
            now = time.perf_counter() - t0
            if proc.poll() is None:
                demo = _cpu_of_tree(proc.pid)
                samples.append((now, *demo, _machine_cpu()))
                asleep.append((now, _asleep(proc.pid)))
            else:  # the demo ended: what is left runs as this process's descendants
                samples.append((now, demo[0], _cpu_of_tree(os.getpid())[1] - base - demo[0],
                                _machine_cpu()))
            held = _locks_held(cache / "gonio-state")
            for pid, unit in sorted(held - holding):
                events.append((now, f"pid {pid} takes the lock of {unit}"))
            for pid, unit in sorted(holding - held):
                events.append((now, f"pid {pid} releases the lock of {unit}"))
            holding = held
            for stamp in sorted((cache / "gonio-state").glob("*.prepared")):
                unit = stamp.name.rsplit(".", 2)[0]
                if unit not in seen:
                    seen.add(unit)
                    events.append((now, f"prepared {unit}"))
            if proc.poll() is not None and not [
                    pid for pid in os.listdir("/proc") if pid.isdigit()
                    and _parent(int(pid)) == os.getpid() and not _zombie(int(pid))]:
                break
            time.sleep(0.1)
        reader.join()
        children_cpu()  # reap
    for t, text in sorted(events):
        print(f"{t:6.2f} s  {text}")
    print(f"CPU seconds per second ({cores} cores): the demo process, its background "
          "processes, other programs, idle")
    last, idle, others = samples[0][:3] + (samples[0][3],), 0.0, 0.0
    for k in range(1, int(samples[-1][0]) + 2):
        cur = max((s for s in samples if s[0] <= k), key=lambda s: s[0])
        own, bg = cur[1] - last[1], max(cur[2] - last[2], 0.0)
        other = max(cur[3] - last[3] - own - bg, 0.0)
        free = max(cores - own - bg - other, 0.0)
        idle, others = idle + free, others + other
        print(f"  {k - 1:3d}-{k:3d} s  {own:4.2f}  {bg:4.2f}  {other:4.2f}  {free:4.2f}")
        last = cur
    print(f"total: demo {samples[-1][1]:.2f} s, background {samples[-1][2]:.2f} s of CPU; "
          f"other programs {others:.1f} s; {idle:.1f} core-seconds idle (load "
          f"{os.getloadavg()[0]:.1f})")
    slept = sum(b[0] - a[0] for a, b in zip(asleep, asleep[1:]) if a[1])
    print(f"the demo process had no thread running or ready to run for {slept:.1f} s of its "
          f"{asleep[-1][0]:.1f} s (sampled every 0.1 s: waiting for kernels, files, the "
          "terminal; other programs' load does not count here)")


def _asleep(pid: int) -> bool:
    """Is no thread of process ``pid`` running or ready to run (Linux: /proc)?"""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "R":
                    return False
        except OSError:
            continue
    return True


def _machine_cpu() -> float:
    """CPU seconds all the cores have been busy since boot (Linux: /proc/stat; not idle,
    not waiting for I/O)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # guest in user


def _locks_held(state: Path) -> set:
    """(pid, lock name) of the file locks held now on the lock files of ``state`` (Linux:
    /proc/locks): which process compiles which unit (or kernel), sampled."""
    names = {}
    for lock in state.glob("**/*.lock"):
        try:
            names[lock.stat().st_ino] = str(lock.relative_to(state))[:-len(".lock")]
        except OSError:
            continue
    held = set()
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].count(":") == 2:
                    inode = int(fields[5].rsplit(":", 1)[1])
                    if inode in names:
                        held.add((int(fields[4]), names[inode]))
    except OSError:
        pass
    return held


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def main(argv: list[str]) -> None:
    if argv and argv[0] == "compare":
        other = argv.pop(2) if len(argv) > 2 and os.path.isdir(argv[2]) else None
        compare(argv[1], int(argv[2]) if len(argv) > 2 else 4, other)
    elif argv and argv[0] == "compile":
        compile_cpu(int(argv[1]) if len(argv) > 1 else 1)
    elif argv and argv[0] == "kernels":
        kernel_times(argv[1:])
    elif argv and argv[0] == "timeline":
        timeline(argv[1] if len(argv) > 1 else None)
    else:
        demo_runs(int(argv[0]) if argv else 3)


if __name__ == "__main__":
    main(sys.argv[1:])
