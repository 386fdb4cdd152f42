"""Where gonio's compiled kernels are cached, and what happens to a stale or damaged cache.

Each case runs a small kernels module (declared with ``gonio.core.jit.njit``)
in a fresh Python process, the way an installed gonio runs, and looks at the
cache folder it leaves behind.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

KERNELS = textwrap.dedent('''
    import numpy as np
    from gonio.core.jit import njit

    @njit
    def weighted_sum(values, weights):
        s = 0.0
        for i in range(len(values)):
            s += values[i] * weights[i]
        return s
''')

RUN = textwrap.dedent('''
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import tiny_kernels
    v = np.arange(10, dtype=np.float64)
    print("RESULT", tiny_kernels.weighted_sum(v, v))
    print("MISSES", sum(tiny_kernels.weighted_sum.stats.cache_misses.values()))
''')


def run_kernel(src: Path, env: dict) -> tuple[float, int, str]:
    """(result, cache misses, stderr) of one process calling the kernel."""
    r = subprocess.run([sys.executable, "-c", RUN, str(src)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    return float(out["RESULT"]), int(out["MISSES"]), r.stderr


@pytest.fixture
def install(tmp_path):
    """A kernels module in its own folder, and an environment with a private home."""
    src = tmp_path / "install"
    src.mkdir()
    (src / "tiny_kernels.py").write_text(KERNELS)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               GONIO_PREPARE_KERNELS="0")
    return src, env


def cache_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.rglob(f"tiny_kernels.*{suffix}")) if folder.exists() else []


def test_read_only_install_caches_in_the_users_folder(install, tmp_path):
    src, env = install
    src.chmod(0o555)  # a read-only install location (root ignores this; see the last check)
    try:
        value, misses, err = run_kernel(src, env)
        assert value == sum(i * i for i in range(10))
        assert misses == 1
        assert "preparing kernels for this machine, once" in err
        user_cache = tmp_path / "xdg" / "gonio" / "numba"
        assert cache_files(user_cache, ".nbi") and cache_files(user_cache, ".nbc")
        # the second process loads the compiled code: no compilation, no message
        value, misses, err = run_kernel(src, env)
        assert value == 285.0 and misses == 0
        assert "preparing kernels" not in err
        # nothing was written into the install location
        assert not list(src.rglob("*.nbi")) and not list(src.rglob("*.nbc"))
    finally:
        src.chmod(0o755)


def test_numba_cache_dir_of_the_user_is_honoured(install, tmp_path):
    src, env = install
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    assert run_kernel(src, env)[:2] == (285.0, 1)
    assert cache_files(tmp_path / "mine", ".nbi")
    assert not cache_files(tmp_path / "xdg", ".nbi")
    assert run_kernel(src, env)[:2] == (285.0, 0)


def test_several_users_each_have_their_own_cache(install, tmp_path):
    src, env = install
    other = dict(env, HOME=str(tmp_path / "home2"), XDG_CACHE_HOME=str(tmp_path / "xdg2"))
    assert run_kernel(src, env)[:2] == (285.0, 1)
    assert run_kernel(src, other)[:2] == (285.0, 1)  # compiles once for this user too
    assert run_kernel(src, other)[:2] == (285.0, 0)


def test_cache_of_another_numba_version_is_ignored(install, tmp_path):
    src, env = install
    run_kernel(src, env)
    (index,) = cache_files(tmp_path / "xdg", ".nbi")
    with open(index, "rb") as f:  # as written by another numba: its version, then its data
        pickle.load(f)
        data = f.read()
    with open(index, "wb") as f:
        pickle.dump("0.1.0", f, protocol=-1)
        f.write(data[: len(data) // 2])
    value, misses, _ = run_kernel(src, env)
    assert (value, misses) == (285.0, 1)  # recompiled, and the cache rewritten
    assert run_kernel(src, env)[:2] == (285.0, 0)


INTERNAL_KERNELS = textwrap.dedent('''
    from gonio.core.jit import INTERNAL, njit

    @njit(**INTERNAL)
    def _term(values, weights, i):
        return values[i] * weights[i]

    @njit
    def weighted_sum(values, weights):
        s = 0.0
        for i in range(len(values)):
            s += _term(values, weights, i)
        return s

    def wrappers():
        """The LLVM IR of each kernel's compiled code (its functions, entry points included)."""
        return {name: kernel.inspect_llvm(kernel.signatures[0])
                for name, kernel in (("_term", _term), ("weighted_sum", weighted_sum))}
''')


def test_a_kernel_only_kernels_call_compiles_no_python_entry_and_caches(install, tmp_path):
    """``njit(**INTERNAL)``: no Python entry point (less to compile); its caller still
    links it, also when the caller is compiled afresh and the callee comes from the cache."""
    src, env = install
    (src / "tiny_kernels.py").write_text(INTERNAL_KERNELS)
    check = RUN + textwrap.dedent('''
        ir = tiny_kernels.wrappers()
        print("TERM_ENTRY", int("_ZN7cpython" in ir["_term"]))
        print("SUM_ENTRY", int("_ZN7cpython" in ir["weighted_sum"]))
        try:
            tiny_kernels._term(v, v, 1)
        except TypeError as e:  # not a crash: there is no entry point to jump to
            print("DIRECT", "TypeError", "Python entry point" in str(e))
    ''')
    r = subprocess.run([sys.executable, "-c", check, str(src)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    assert float(out["RESULT"]) == 285.0
    assert (out["TERM_ENTRY"], out["SUM_ENTRY"]) == ("0", "1")
    assert out["DIRECT"] == "TypeError True"
    # the caller's cache entry lost, the callee's kept: the caller compiles, linking the
    # callee loaded from the cache (which has no Python entry point)
    for path in cache_files(tmp_path / "xdg", ""):
        if ".weighted_sum-" in path.name:
            path.unlink()
    assert [p for p in cache_files(tmp_path / "xdg", ".nbi") if "._term-" in p.name]
    assert run_kernel(src, env)[:2] == (285.0, 1)
    assert run_kernel(src, env)[:2] == (285.0, 0)


def test_a_kernel_declared_in_a_unit_of_its_own_announces_that_unit(install, tmp_path):
    """``njit(unit=...)``: a kernel that only some runs reach belongs to the unit it names,
    not to its module's: compiled when first called, it says so with that unit's name and
    estimate, once per process, and takes that unit's lock; a later process loads it."""
    src, env = install
    (src / "tiny_kernels.py").write_text(KERNELS + textwrap.dedent('''
        @njit(unit="tiny_kernels.rare")
        def rare_sum(values):
            return weighted_sum(values, values)
    '''))
    run = textwrap.dedent('''
        import sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from gonio.core import jit
        jit.UNITS.update({"tiny_kernels": ("tiny_kernels:nothing", 5.0),
                          "tiny_kernels.rare": ("tiny_kernels:nothing", 7.0)})
        import tiny_kernels
        v = np.arange(10, dtype=np.float64)
        print("UNIT", jit._unit(tiny_kernels.rare_sum._cache),
              jit._unit(tiny_kernels.weighted_sum._cache))
        tiny_kernels.weighted_sum(v, v)
        for _ in range(2):
            print("RESULT", tiny_kernels.rare_sum(v))
        print("MISSES", sum(tiny_kernels.rare_sum.stats.cache_misses.values()))
    ''')

    def once():
        r = subprocess.run([sys.executable, "-c", run, str(src)], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout, r.stderr

    out, err = once()
    assert "UNIT tiny_kernels.rare tiny_kernels" in out
    assert "RESULT 285.0" in out and "MISSES 1" in out
    assert err.count("preparing kernels for this machine, once: ~7 s (rare)") == 1, err
    assert err.count("~5 s (tiny_kernels)") == 1, err
    assert (Path(env["XDG_CACHE_HOME"]) / "gonio" / "numba" / "gonio-state" /
            "tiny_kernels.rare.lock").exists()
    out, err = once()
    assert "MISSES 0" in out and "preparing kernels" not in err


def test_a_kernel_only_kernels_call_makes_no_machine_code_of_its_own(install, tmp_path):
    """The callee's LLVM IR is linked into its caller, which makes the machine code: the
    callee alone gets none (numba made it, unused, before), and its caller runs right.
    Loaded from the cache it gets none either: a caller compiled later would otherwise
    call that code, made from the unoptimised module, instead of optimising its own copy
    (the threshold ran 2.5x slower so)."""
    src, env = install
    (src / "tiny_kernels.py").write_text(INTERNAL_KERNELS)
    check = RUN + textwrap.dedent('''
        def defined(kernel):  # "-": not loaded in this process
            if not kernel.signatures:
                return "-"
            cres = kernel.overloads[kernel.signatures[0]]
            return int(cres.library.get_pointer_to_function(cres.fndesc.mangled_name) != 0)
        print("MACHINE_CODE", defined(tiny_kernels._term), defined(tiny_kernels.weighted_sum))
    ''')

    def machine_code():
        r = subprocess.run([sys.executable, "-c", check, str(src)], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
        assert float(out["RESULT"]) == 285.0
        return out["MISSES"], out["MACHINE_CODE"]

    assert machine_code() == ("1", "0 1")  # compiled
    assert machine_code() == ("0", "- 1")  # the caller from the cache needs no callee
    for path in cache_files(tmp_path / "xdg", ""):
        if ".weighted_sum-" in path.name:
            path.unlink()
    assert machine_code() == ("1", "0 1")  # the caller compiled, the callee from the cache


NRT_KERNELS = KERNELS + textwrap.dedent('''
    from gonio.core.jit import INTERNAL

    @njit(**INTERNAL)
    def _doubled(values):
        out = np.empty(len(values))  # allocates: needs numba's reference counting
        for i in range(len(values)):
            out[i] = 2.0 * values[i]
        return out

    @njit
    def doubled_sum(values):
        return weighted_sum(_doubled(values), values)
''')

NRT_RUN = textwrap.dedent('''
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from gonio.core import jit
    import tiny_kernels as t
    v = np.arange(10, dtype=np.float64)
    def nrt(kernel):  # any call of numba's runtime (NRT_incref, NRT_adapt_ndarray_...)
        return int("NRT_" in kernel.overloads[kernel.signatures[0]].library.get_llvm_str())
    print("SUM", t.weighted_sum(v, v), nrt(t.weighted_sum), int(jit._NRT[0]))
    print("DOUBLED", t.doubled_sum(v), nrt(t.doubled_sum), int(jit._NRT[0]))
    print("AGAIN", t.weighted_sum(v, 2 * v), t.doubled_sum(2 * v))
''')


def test_kernels_compile_without_reference_counting_unless_they_need_it(install, tmp_path):
    """gonio's kernels compile without numba's reference counting of arrays (NRT: less
    to compile, the same arithmetic); a kernel that allocates (here an INTERNAL callee of
    the kernel called from Python) still compiles and runs, with NRT, and so does every
    kernel the process compiles after it; both results are right, and a later process
    loads both from the cache."""
    src, env = install
    (src / "tiny_kernels.py").write_text(NRT_KERNELS)

    def run():
        r = subprocess.run([sys.executable, "-c", NRT_RUN, str(src)], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)

    out = run()
    assert out["SUM"] == "285.0 0 0"  # no NRT: nothing to fall back from
    assert out["DOUBLED"] == "570.0 1 1"  # needed it: compiled with NRT, and the process too
    assert out["AGAIN"] == "570.0 2280.0"
    out = run()  # from the cache
    assert out["SUM"].startswith("285.0") and out["DOUBLED"].startswith("570.0")
    assert out["AGAIN"] == "570.0 2280.0"


def test_importing_spot_finding_does_not_import_numba():
    """numba (0.3-0.4 s) is imported when a kernel is first needed, not with the package
    (its parameters serve help, completion and the shell's start-up)."""
    code = ("import sys, gonio.core.spotfinding\n"
            "from gonio.core.spotfinding import SpotFinderParams, find_spots\n"
            "print('numba' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("damage", ["index", "data"])
def test_damaged_cache_files_are_recompiled_not_fatal(install, tmp_path, damage):
    src, env = install
    run_kernel(src, env)
    (path,) = cache_files(tmp_path / "xdg", ".nbi" if damage == "index" else ".nbc")
    if damage == "index":  # this numba's version, then garbage (a truncated write)
        import numba

        with open(path, "wb") as f:
            pickle.dump(numba.__version__, f, protocol=-1)
            f.write(b"\x80\x05garbage")
    else:
        path.write_bytes(path.read_bytes()[:40])
    value, misses, _ = run_kernel(src, env)
    assert (value, misses) == (285.0, 1)
    assert run_kernel(src, env)[:2] == (285.0, 0)


def test_a_step_waits_for_the_process_preparing_the_same_kernels(install, tmp_path):
    """While another process holds a unit's lock, a kernel of that unit waits for it
    (then loads what it compiled) instead of compiling it a second time."""
    src, env = install
    holder = textwrap.dedent('''
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from gonio.core import jit
        fd = jit._lock("tiny_kernels", wait=False)
        jit._held["tiny_kernels"] = (fd, None)
        print("locked", flush=True)
        time.sleep(4.0)  # the other process reaches the kernel meanwhile, and waits
        import numpy as np, tiny_kernels
        v = np.arange(10, dtype=np.float64)
        tiny_kernels.weighted_sum(v, v)
        jit._unlock(fd)
    ''')
    p = subprocess.Popen([sys.executable, "-c", holder, str(src)], env=env,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        value, misses, err = run_kernel(src, env)
    finally:
        p.wait(timeout=60)
    assert value == 285.0
    assert "waiting for another gonio process" in err
    assert misses == 0  # loaded what the other process compiled


def test_a_numba_upgrade_makes_units_unprepared(tmp_path, monkeypatch):
    """Units are prepared ahead again after numba changes (the stamp names the numba)."""
    from gonio.core import jit

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    unit = "gonio.core.spotfinding"
    assert not jit.is_prepared(unit)
    stamp = Path(jit._stamp_path(unit))
    stamp.parent.mkdir(parents=True)
    stamp.write_text(jit._numba_stamp() + "\n")  # as prepare() leaves it
    assert jit.is_prepared(unit)
    stamp.write_text("/old/site-packages/numba/__init__.py 1\n")  # written by another numba
    assert not jit.is_prepared(unit)
    monkeypatch.setenv("GONIO_PREPARE_KERNELS", "0")
    assert jit.prepare_in_background([unit]) == []  # switched off


def test_two_installations_sharing_the_cache_folder_keep_their_own_stamps(tmp_path,
                                                                         monkeypatch):
    """Another environment's gonio (its own numba) preparing the same unit in the same
    cache folder does not make this one's unit unprepared (they took turns compiling)."""
    from gonio.core import jit

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    unit = "gonio.core.integration"
    stamp = Path(jit._stamp_path(unit))
    stamp.parent.mkdir(parents=True)
    stamp.write_text(jit._numba_stamp() + "\n")
    with monkeypatch.context() as m:  # the other installation, as its prepare() leaves it
        m.setattr(jit, "__file__", "/other/venv/site-packages/gonio/core/jit.py")
        other = Path(jit._stamp_path(unit))
        other.write_text("/other/venv/site-packages/numba/__init__.py 1\n")
    assert other != stamp and jit.is_prepared(unit)


def test_a_waiting_step_prepares_the_units_it_needs_next(install, tmp_path):
    """While another process holds the lock of the unit a step needs, the step prepares
    the other units its commands need that compile faster (work sharing: two cores,
    two processes busy), then loads what the other process compiled."""
    src, env = install
    (src / "tiny_other.py").write_text(KERNELS.replace("weighted_sum", "other_sum") + textwrap.dedent('''
        def warm_up():
            v = np.ones(3)
            other_sum(v, v)
    '''))
    holder = textwrap.dedent('''
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from gonio.core import jit
        fd = jit._lock("tiny_kernels", wait=False)
        print("locked", flush=True)
        time.sleep(4.0)
        import numpy as np, tiny_kernels
        v = np.arange(10, dtype=np.float64)
        jit._held["tiny_kernels"] = (fd, None)
        tiny_kernels.weighted_sum(v, v)
        jit._unlock(fd)
    ''')
    step = textwrap.dedent('''
        import sys
        sys.path.insert(0, sys.argv[1])
        import numpy as np
        from gonio.core import jit
        jit.UNITS.update(tiny_kernels=("tiny_kernels:nothing", 2.0),
                         tiny_other=("tiny_other:warm_up", 1.0),
                         tiny_later=("tiny_other:warm_up", 9.0),
                         tiny_as_long=("tiny_other:warm_up", 2.0))
        jit.prepare_meanwhile(["tiny_kernels", "tiny_later", "tiny_as_long", "tiny_other"])
        import tiny_kernels, tiny_other
        v = np.arange(10, dtype=np.float64)
        print("RESULT", tiny_kernels.weighted_sum(v, v))
        print("MISSES", sum(tiny_kernels.weighted_sum.stats.cache_misses.values()))
        print("OTHER", sum(tiny_other.other_sum.stats.cache_misses.values()),
              jit.is_prepared("tiny_other"), jit.is_prepared("tiny_later"),
              jit.is_prepared("tiny_as_long"))
    ''')
    p = subprocess.Popen([sys.executable, "-c", holder, str(src)], env=env,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        r = subprocess.run([sys.executable, "-c", step, str(src)], env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        p.wait(timeout=60)
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert float(out["RESULT"]) == 285.0
    assert int(out["MISSES"]) == 0  # loaded what the other process compiled
    # compiled here meanwhile, and marked prepared; not the units that take as long or
    # longer to compile than the one waited for (they would delay the step)
    assert out["OTHER"] == "1 True False False"
    assert "waiting for another gonio process" in r.stderr
    assert "preparing kernels for this machine, once: ~1 s (tiny_other)" in r.stderr


@pytest.mark.parametrize("cores, expected, waited", [
    # ahead of a need: one process per core besides the session's, in the order needed;
    # when the steps wait for them: one per core, the second starting half-way
    (2, [["a", "b", "c"]], [["a", "b", "c"], ["b", "c", "a"]]),
    (4, [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]],
     [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]),
    (1, [["a", "b", "c"]], [["a", "b", "c"]]),
])
def test_one_background_process_per_spare_core(tmp_path, monkeypatch, cores, expected,
                                               waited):
    from gonio.core import jit

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GONIO_PREPARE_KERNELS", raising=False)
    for unit in "abc":
        monkeypatch.setitem(jit.UNITS, unit, (f"{unit}:warm_up", 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append(args[3:]) or kw)

    def groups(units):  # one process started, which forks one per group after the first
        return [[f"--nice={10 if units is expected else 0}",
                 *sum(([*g, "--"] for g in units), [])[:-1]]]

    assert len(jit.prepare_in_background(["a", "b", "c"])) == 1
    assert started == groups(expected)
    started.clear()  # units the next steps of a script wait for: at the normal priority
    jit.prepare_in_background(["a", "b", "c"], nice=0)
    assert started == groups(waited)


def test_the_second_process_starts_half_way_along_the_compile_time(tmp_path, monkeypatch):
    """On two cores the second process starts with the unit under the middle of the
    list's estimated compile time, not of its length: a short unit needed early (the
    shoebox column at findspots) does not delay the long one needed last."""
    from gonio.core import jit

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GONIO_PREPARE_KERNELS", raising=False)
    for unit, seconds in zip("abcde", (4.0, 2.0, 1.0, 6.0, 4.0)):
        monkeypatch.setitem(jit.UNITS, unit, (f"{unit}:warm_up", seconds))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append(args[3:]) or kw)
    jit.prepare_in_background(list("abcde"), nice=0)
    assert started == [["--nice=0", *"abcde", "--", *"deabc"]]


def test_the_demo_prepares_its_kernels_while_it_simulates(monkeypatch):
    """``gonio demo`` starts with the simulator, which has no kernels, and starts one
    background preparation, at the normal priority, of the spot-finding units in the
    order findspots needs them (the shoebox column of the strong table and the CBF
    decoder last), then of
    integrate's two units, the one that takes longer first; while a step waits for one it
    prepares the others that compile faster (at integrate: the other half of its kernels,
    on the other core). Not the simple background models, which the demo does not use."""
    from gonio.core import jit
    from gonio.shell import main
    from gonio.shell.demo import SCRIPT

    calls = []
    monkeypatch.setattr(jit, "prepare_in_background", lambda u, nice=10: calls.append((u, nice)))
    monkeypatch.setattr(jit, "load_in_background", lambda u=None: None)
    monkeypatch.setattr(jit, "_meanwhile", [])
    main.prepare_kernels(main.split_commands(SCRIPT.read_text()))
    threshold, spotfinding = "gonio.core.spotfinding.threshold", "gonio.core.spotfinding"
    shoeboxes, cbf = "gonio.core.io.shoebox_kernels", "gonio.core.formats.byte_offset"
    pixels, boxes = "gonio.core.integration", "gonio.core.integration.box_kernels"
    assert calls == [([threshold, spotfinding, shoeboxes, cbf, pixels, boxes], 0)]
    assert jit._meanwhile == [threshold, spotfinding, shoeboxes, cbf, pixels, boxes]
    assert jit.UNITS[boxes][1] < jit.UNITS[pixels][1]  # so the step helps with it
    assert main.STEP_KERNELS.get("simulate", ()) == ()  # nothing to compile first


def test_faster_flag_comparisons_give_numba_s_own_values():
    """gonio's values() of numba's compiler flags (built from the defaults once per class)
    is numba's own: the same dict, so the same hash and equality, for default flags and
    for flags with options set."""
    from numba.core.compiler import Flags
    from numba.core.targetconfig import TargetConfig

    from gonio.core import jit

    def numba_values(flags):  # numba's definition
        return {k: getattr(flags, k) for k in flags.options}

    jit._faster_flag_comparisons()
    assert getattr(TargetConfig, "_gonio_values", False)
    plain, tuned = Flags(), Flags()
    tuned.nrt, tuned.error_model, tuned.boundscheck = True, "numpy", True
    for flags in (plain, tuned):
        assert flags.values() == numba_values(flags)
    other = Flags()
    other.nrt, other.error_model, other.boundscheck = True, "numpy", True
    assert other == tuned and hash(other) == hash(tuned) and plain != tuned


BODY = textwrap.dedent("""
    def {name}(v, k, out):
        s = 0.0
        for i in range(v.shape[0]):
            j = min(k[i], 7) // max(k[i] - 2, 1)
            out[i] = min(max(v[i], 0.0), 10.0) / max(v[i], 1.0) + math.floor(v[i]) + j
            s += out[i]
        return s
""")
#: three kernels calling the same functions, the second with another error model (numba
#: compiles min's implementation once per compiler flags)
TYPING_KERNELS = "import math\nfrom gonio.core.jit import njit\n" + "".join(
    f"\n@njit{opt}{BODY.format(name=name)}" for name, opt in (
        ("first", '(error_model="numpy")'), ("second", ""), ("third", '(error_model="numpy")')))

TYPING_RUN = textwrap.dedent('''
    import hashlib, re, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from gonio.core import jit
    if sys.argv[2] == "numba":
        jit._memoised_call_typing = lambda: None
    import tiny_kernels as t
    from numba.core.types.functions import BaseFunction
    v, k = np.linspace(-2.0, 12.0, 15), np.arange(15, dtype=np.int64)
    for kernel in (t.first, t.second, t.first, t.third):
        r = kernel(v, k, np.empty(15))
        ir = kernel.overloads[kernel.signatures[0]].library.get_llvm_str()
        ir = re.sub(r"B\\d+v\\d+B", "BvB", ir)  # numba's unique version numbers in names
        ir = re.sub(r"(pickledata|picklebuf)\\.\\d+", "\\\\1", ir)  # object ids (numba 0.61)
        print(kernel.__name__, r, hashlib.sha1(ir.encode()).hexdigest())
    print("MEMO", getattr(BaseFunction.get_call_type, "_gonio", False))
''')


def test_memoised_call_typing_compiles_numba_s_own_code(install, tmp_path):
    """Each call's typing is kept per argument types and compiler flags: kernels of two
    error models calling the same functions (min's implementation is compiled once per
    flags) get the same LLVM IR and results as with numba's own typing of every call."""
    src, env = install
    (src / "tiny_kernels.py").write_text(TYPING_KERNELS)

    def run(mode, cache):
        r = subprocess.run([sys.executable, "-c", TYPING_RUN, str(src), mode],
                           env=dict(env, NUMBA_CACHE_DIR=str(tmp_path / cache)),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    import numba as numba_module

    from gonio.core.jit import _numba_version

    gonio, numba = run("gonio", "a"), run("numba", "b")
    on = _numba_version(numba_module.__version__) >= (0, 61)  # the versions compared
    assert gonio[-1] == f"MEMO {on}" and numba[-1] == "MEMO False"
    assert gonio[:-1] == numba[:-1] and len(gonio) == 5


def test_one_process_loads_numba_once_and_forks_the_others(tmp_path, monkeypatch):
    """``python -m gonio.core.jit A -- B``: this process prepares A and a process forked
    once numba is loaded prepares B, at the same time (each would otherwise spend ~0.55 s
    of CPU loading numba); both units are then prepared."""
    from gonio.core import jit

    if not hasattr(os, "fork"):
        pytest.skip("no fork: one process per group")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "tiny_units.py").write_text(textwrap.dedent('''
        import os, sys, time
        def warm(name):
            open(os.path.join(os.environ["NUMBA_CACHE_DIR"], name), "w").write(
                f"{os.getpid()} {time.monotonic()} {'numba' in sys.modules}")
            time.sleep(0.5)
            open(os.path.join(os.environ["NUMBA_CACHE_DIR"], name), "a").write(
                f" {time.monotonic()}")
        def warm_a():
            warm("a")
        def warm_b():
            warm("b")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    for unit in "ab":
        monkeypatch.setitem(jit.UNITS, unit, (f"tiny_units:warm_{unit}", 1.0))
    assert jit.main(["--nice=0", "a", "--", "b"]) == 0
    (pid_a, start_a, numba_a, end_a), (pid_b, start_b, numba_b, end_b) = (
        (tmp_path / "cache" / unit).read_text().split() for unit in "ab")
    assert int(pid_a) == os.getpid() and int(pid_b) != os.getpid()
    assert numba_b == "True"  # loaded before the fork
    assert float(start_b) < float(end_a) and float(start_a) < float(end_b)  # at once
    assert jit.is_prepared("a") and jit.is_prepared("b")


def test_background_processes_stay_in_the_session_and_survive_ctrl_c_and_hangup(tmp_path):
    """The process preparing kernels runs in the shell's session (so that the scheduler
    shares the cores between it and the steps, and nice 10 yields to them: not a session
    of its own, which Linux's autogroup scheduling gives half the machine whatever its
    nice value) but in a process group of its own, and it finishes its work through a
    Ctrl-C and a hangup."""
    import signal

    from gonio.core import jit

    if os.name != "posix":
        pytest.skip("process groups and signals of POSIX")
    script = textwrap.dedent('''
        import sys, time
        from gonio.core import jit
        def warm():
            print("ready", flush=True)
            time.sleep(1.0)
            open(sys.argv[1], "w").write("prepared")
        sys.modules["tiny_unit"] = type(sys)("tiny_unit")
        sys.modules["tiny_unit"].warm = warm
        jit.UNITS["tiny"] = ("tiny_unit:warm", 1.0)
        sys.exit(jit.main(["--nice=0", "tiny"]))
    ''')
    done = tmp_path / "done"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-c", script, str(done)], env=env,
                            stdout=subprocess.PIPE, text=True, **jit._detached())
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert os.getsid(proc.pid) == os.getsid(0)
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGHUP)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done.read_text() == "prepared"
