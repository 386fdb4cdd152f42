"""Numba kernels compiled once per machine: where they are cached, and preparing them ahead.

Every numba kernel of gonio is declared with :func:`njit` (instead of
``numba.njit(cache=True)``) in its own kernels module, imported lazily.
Compiled code is cached on disk, in this order of places:

1. ``NUMBA_CACHE_DIR`` when the user sets it (numba's own semantics);
2. a per-user folder, ``$XDG_CACHE_HOME/gonio/numba`` (``~/.cache/gonio/numba``),
   so that an install into a read-only site-packages, or one shared by
   several users, still caches (each user compiles once);
3. numba's defaults (``__pycache__`` beside the source, or numba's user-wide
   folder) when that folder cannot be written.

Inside the folder numba keeps one sub-folder per source folder (named by a
hash of its path, so that two installs do not mix) and keys each entry by
signature, CPU and numba version: a numba upgrade or another CPU compiles
afresh. A cache file that cannot be read (truncated, or written by an
incompatible numba) is ignored and overwritten instead of failing the step.

When a kernel really has to be compiled (a cold cache: new machine, new
numba, changed source), gonio says so once per unit of kernels before the
pause (:data:`notify`). The units listed in :data:`UNITS` can also be
prepared ahead, in background processes (``python -m gonio.core.jit UNIT...``,
one per core beyond the session's, each taking the units nobody prepares yet; the
first loads numba and forks the others) that the shell starts when it opens a
session and finds units never prepared with the installed numba
(:func:`prepare_in_background`); a step that needs a unit while such a
process compiles it waits for it rather than compiling it twice (a file
lock per unit in the cache folder), and meanwhile prepares in its own
process the units it will need next (:func:`prepare_meanwhile`): on two
cores one background process and the step keep both busy. Units already
prepared are loaded in a thread while the session opens
(:func:`load_in_background`).

This module imports numba only inside :func:`njit`: importing it costs
nothing at start-up.
"""

from __future__ import annotations

import os
import sys
import time

#: Units of kernels prepared ahead: unit (a package or module prefix) ->
#: (warm-up function "module:function", seconds it takes to compile on a
#: 2-core machine with an empty cache, the process's start-up included;
#: measured with ``benchmarks/bench_first_run.py compile``; 2026-12-07: a fresh process
#: 0.75 s, then the threshold 2.5-2.7 s, the box kernels 2.5-2.7 s, integrate's pixel
#: kernels 3.5-3.7 s with the box kernels cached, before NRT was left out, ~10 % less
#: after). Only their order matters much: where the second background process starts,
#: and which units a waiting step prepares meanwhile (the faster ones only). A warm-up calls the
#: unit's entry points on tiny inputs with the dtypes the steps use, so that every
#: specialisation a step needs is compiled and cached. Integrate's kernels are two
#: units (the kernels on whole shoeboxes, and the pixel kernels that cut frames into
#: shoeboxes and fit profiles), which two processes compile at once. A unit named below a
#: module (``...box_kernels.simple``: integrate's simple background models; reading a
#: shoebox column back) holds the kernels declared ``njit(unit=...)``: paths that only
#: some runs reach, compiled when first needed.
UNITS: dict[str, tuple[str, float]] = {
    "gonio.core.spotfinding.threshold": ("gonio.core.spotfinding.warmup:warm_up_threshold", 3.0),
    "gonio.core.spotfinding": ("gonio.core.spotfinding.warmup:warm_up", 2.0),
    "gonio.core.io.shoebox_kernels": ("gonio.core.io.shoebox_kernels:warm_up", 1.0),
    "gonio.core.io.shoebox_kernels.read": ("gonio.core.io.shoebox_kernels:warm_up_read", 1.0),
    "gonio.core.formats.byte_offset": ("gonio.core.formats.byte_offset:warm_up", 1.0),
    "gonio.core.integration.box_kernels": (
        "gonio.core.integration.warmup:warm_up_boxes", 3.0),
    "gonio.core.integration": ("gonio.core.integration.warmup:warm_up", 4.0),
    # last: their kernels allocate, after which a process compiles with NRT (_kernel_class)
    "gonio.core.integration.box_kernels.simple": (
        "gonio.core.integration.warmup:warm_up_simple_boxes", 3.0),
    "gonio.core.export.text_kernels": ("gonio.core.export.text_kernels:warm_up", 2.0),
}

#: Called with one line of text when compilation really happens (the shell
#: may replace it); prints to standard error by default.
notify = None

_ENV_OFF = "GONIO_PREPARE_KERNELS"  # "0": no background preparation or loading
_LOCK_WAIT = 300.0  # s: the longest a step waits for another process compiling its kernels
_told: set[str] = set()  # units already announced in this process
_held: dict[str, tuple[int, object]] = {}  # unit -> (lock fd, cache that took it)
_meanwhile: list[str] = []  # units this process needs later (prepare_meanwhile)
_helping: list[bool] = [False]  # preparing them now (no nested helping)


def cache_dir() -> str:
    """The folder gonio's compiled kernels are cached in (see the module docstring)."""
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        return user
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gonio", "numba")


def use_cache_dir() -> None:
    """Make every numba kernel of this process (gonio's or not) cache in :func:`cache_dir`.

    For the ``gonio`` program only (a library must not change the
    environment): sets ``NUMBA_CACHE_DIR`` unless the user did, and only
    when the folder can be written.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = cache_dir()
    if _writable(path):
        os.environ["NUMBA_CACHE_DIR"] = path
        if "numba" in sys.modules:  # too late for numba's own reading of the variable
            sys.modules["numba"].config.CACHE_DIR = path


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def unit_of(module: str) -> str | None:
    """The unit of :data:`UNITS` a module's kernels belong to (longest prefix), if any."""
    best = None
    for unit in UNITS:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best or ""):
            best = unit
    return best


def _say(text: str) -> None:
    if notify is not None:
        notify(text)
    else:
        print(text, file=sys.stderr, flush=True)


# -- cache locks and stamps ----------------------------------------------------------------
def _state_dir() -> str:
    return os.path.join(cache_dir(), "gonio-state")


def _lock(unit: str, wait: bool) -> int | None:
    """An exclusive lock on ``unit`` in the cache folder: the fd, or None (held elsewhere
    and not ``wait``; or locks unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no advisory locks (Windows): no coordination
        return None
    path = os.path.join(_state_dir(), unit + ".lock")
    try:
        os.makedirs(_state_dir(), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    t_end = time.monotonic() + (_LOCK_WAIT if wait else 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() >= t_end:
                os.close(fd)
                return None
            time.sleep(0.05)


def _unlock(fd: int) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _stamp_path(unit: str) -> str:
    """The file saying ``unit`` is prepared, one per gonio installation: numba caches each
    installation's kernels apart (by their source folder), and with one file two
    environments sharing the cache folder took turns to prepare their units again."""
    import hashlib

    here = hashlib.sha1(os.path.dirname(os.path.abspath(__file__)).encode()).hexdigest()[:12]
    return os.path.join(_state_dir(), f"{unit}.{here}.prepared")


def _numba_stamp() -> str:
    """Which numba is installed, without importing it: its __init__.py's path and time."""
    from importlib.util import find_spec

    try:
        origin = find_spec("numba").origin
        return f"{origin} {os.stat(origin).st_mtime_ns}"
    except (AttributeError, OSError, ValueError):
        return ""


def is_prepared(unit: str) -> bool:
    """Has this cache folder been prepared for ``unit`` with the numba installed now
    (cheap: numba is not imported)?"""
    try:
        with open(_stamp_path(unit)) as f:
            return f.read().strip() == _numba_stamp()
    except OSError:
        return False


# -- the cache numba uses for gonio's kernels ---------------------------------------------
def _unit(cache) -> str:
    module = getattr(cache._py_func, "_gonio_unit", None) or cache._py_func.__module__
    return unit_of(module) or module


def _wait_or_lock(cache) -> bool:
    """A kernel of ``cache`` is about to be compiled: take its unit's lock, waiting
    first if another process holds it (it is preparing the unit). Returns whether it
    waited (the kernel may be in the cache now)."""
    unit = _unit(cache)
    if unit in _held:
        return False
    fd = _lock(unit, wait=False)
    waited = False
    if fd is None and os.path.exists(os.path.join(_state_dir(), unit + ".lock")):
        _say(f"waiting for another gonio process preparing the kernels of "
             f"{unit.rsplit('.', 1)[-1]} for this machine (once)")
        fd = _help_while_waiting(unit)
        if fd is None:
            fd = _lock(unit, wait=True)
        waited = True
    if fd is not None:
        _held[unit] = (fd, cache)
    return waited


def prepare_meanwhile(units) -> None:
    """Declare the units this process will need (in the order it needs them): when a
    step has to wait for another process preparing one unit, it prepares those of
    these that nobody prepared or is preparing, instead of idling (work sharing);
    only units estimated to compile faster than the one it waits for (:data:`UNITS`;
    not as long), so that the step is not delayed by a unit needed much later."""
    _meanwhile[:] = [u for u in units if u in UNITS]


def _help_while_waiting(busy: str) -> int | None:
    """Prepare units of :data:`_meanwhile` while another process holds ``busy``;
    returns the lock of ``busy`` when it was freed meanwhile (else None)."""
    if _helping[0]:
        return None
    _helping[0] = True
    try:
        for unit in _meanwhile:
            fd = _lock(busy, wait=False)
            if fd is not None:
                return fd
            # only faster units: one as long could still be compiling here when busy is
            # ready (findspots waiting for the threshold then took integrate's box
            # kernels, 2 s: benchmarks/figures.md)
            if (unit != busy and unit not in _held and UNITS[unit][1] < UNITS[busy][1]
                    and not is_prepared(unit)):
                try:
                    prepare(unit, wait=False)
                except Exception:  # that unit's own step meets and reports any problem
                    pass
        return None
    finally:
        _helping[0] = False


def _announce(cache) -> None:
    """Say once per unit and process that compilation really happens."""
    unit = _unit(cache)
    if unit in _told:
        return
    _told.add(unit)
    seconds = UNITS.get(unit, (None, 2.0))[1]
    _say(f"preparing kernels for this machine, once: ~{seconds:.0f} s "
         f"({unit.rsplit('.', 1)[-1]})")


def _release(cache) -> None:
    for unit, (fd, owner) in list(_held.items()):
        if owner is cache:
            del _held[unit]
            _unlock(fd)


def _kernel_cache_class():
    from numba.core import caching, config

    # ``_UserProvidedCacheLocator`` in older numba (0.61)
    user_locator = getattr(caching, "UserProvidedCacheLocator", None) or \
        caching._UserProvidedCacheLocator

    class GonioLocator(user_locator):
        """The per-user gonio folder; steps aside for a user's NUMBA_CACHE_DIR."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(cache_dir(), self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if config.CACHE_DIR:
                return None
            return super(user_locator, cls).from_function(py_func, py_file)

    class Impl(caching.CompileResultCacheImpl):
        _locator_classes = [GonioLocator, *caching.CompileResultCacheImpl._locator_classes]
        ir_only = False  # an INTERNAL kernel's: its library is loaded as IR only

        def rebuild(self, target_context, payload):
            if not self.ir_only:
                return super().rebuild(target_context, payload)
            codegen = target_context.codegen()  # numba holds its compiler lock here
            codegen.unserialize_library = lambda state: _unserialize_ir_only(codegen, state)
            try:
                return super().rebuild(target_context, payload)
            finally:
                del codegen.unserialize_library

    class KernelCache(caching.FunctionCache):
        """numba's function cache, robust to unreadable files and coordinated between
        processes (see the module docstring)."""

        _impl_class = Impl

        def load_overload(self, sig, target_context):
            data = self._load(sig, target_context)
            if data is None and _wait_or_lock(self):
                data = self._load(sig, target_context)
            if data is None:
                _announce(self)
            else:
                _release(self)
            return data

        def _load(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception:  # unreadable (truncated, foreign): compile and overwrite it
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception:  # an unreadable index: start it afresh
                try:
                    os.unlink(self._cache_file._index_path)
                    super().save_overload(sig, data)
                except Exception:  # not cached this time; the compiled kernel still runs
                    pass
            finally:
                _release(self)

    return KernelCache


_CACHE_CLASS = None

#: ``njit`` options for a kernel that only other kernels call (``@njit(**INTERNAL)``):
#: numba then compiles no Python entry point for it (its argument unboxing is often as
#: much code as the kernel), and no machine code of its own (:func:`_internal_compiler`);
#: its callers link its LLVM IR as usual. Calling such a kernel from Python
#: raises TypeError.
INTERNAL = {"no_cpython_wrapper": True}
_INTERNAL_CLASS = None
_KERNEL_CLASS = None  # numba's dispatcher class, without NRT unless a kernel needs it
_INTERNAL_COMPILER = []  # [numba compiler class for INTERNAL kernels, or None]


def _internal_compiler():
    """numba's compiler for kernels of :data:`INTERNAL`, whose code library makes no
    machine code (None when numba's internals differ: then numba's own compiler).

    numba optimises each function of a kernel, then the kernel's whole LLVM module,
    then generates its machine code (its "Finalize object" step); a caller links that
    module into its own, optimises the whole again and generates machine code again,
    for all of it. A kernel that only other kernels call never runs its own machine
    code, and its caller optimises its code anyway: both steps are skipped for it
    (-6 % of the compile CPU of the demo's kernels; identical results at the same
    speed, benchmarks/figures.md). Its cache entry keeps its module (LLVM bitcode),
    which a caller compiled later in another process links; loaded from the cache it
    again makes no machine code (:func:`_unserialize_ir_only`).
    """
    if _INTERNAL_COMPILER:
        return _INTERNAL_COMPILER[0]
    try:
        from numba.core import compiler

        class InternalCompiler(compiler.Compiler):
            def compile_extra(self, func):
                if self.state.library is None:
                    library = self.state.targetctx.codegen().create_library(func.__qualname__)
                    library.__class__ = _ir_only_class(type(library))
                    self.state.library = library
                return super().compile_extra(func)

        _INTERNAL_COMPILER.append(InternalCompiler)
    except Exception:  # numba's internals changed: its own compiler
        _INTERNAL_COMPILER.append(None)
    return _INTERNAL_COMPILER[0]


_IR_ONLY_NEEDS = ("_optimize_final_module", "_finalize_final_module",
                  "_finalize_dynamic_globals", "_verify_declare_only_symbols",
                  "serialize_using_object_code", "serialize_using_bitcode")
_IR_ONLY_CLASSES: dict = {}


def _ir_only_class(base):
    """``base`` (numba's code library class) making no machine code of its own, or
    ``base`` itself when it lacks the methods this relies on (another numba)."""
    if not all(hasattr(base, name) for name in _IR_ONLY_NEEDS):
        return base
    if base not in _IR_ONLY_CLASSES:
        import llvmlite.binding as ll

        class IROnlyLibrary(base):
            def _optimize_final_module(self):
                pass  # the caller optimises the module it links this one into

            def _finalize_final_module(self):
                self._finalize_dynamic_globals()
                self._verify_declare_only_symbols()
                # only the environment pointers that numba fills in after compiling
                # (data, no code) go to the execution engine
                envs = [gv.name for gv in self._final_module.global_variables
                        if gv.name.startswith("_ZN08NumbaEnv")]
                module = ll.parse_assembly(
                    "".join(f'@"{name}" = common global i8* null\n' for name in envs))
                module.triple = self._final_module.triple
                module.data_layout = self._final_module.data_layout
                self._codegen._engine.add_module(module)
                self._codegen._engine.finalize_object()
                self._finalized = True

            def serialize_using_object_code(self):
                return self.serialize_using_bitcode()

        _IR_ONLY_CLASSES[base] = IROnlyLibrary
    return _IR_ONLY_CLASSES[base]


def _unserialize_ir_only(codegen, state):
    """An :data:`INTERNAL` kernel's library from its cache entry, as IR only.

    numba's own loading would give the unoptimised module machine code in the process's
    execution engine, and a caller compiled later would then call that code (its symbol
    already defined) instead of the copy it links and optimises: such calls ran 2-3x
    slower (the threshold kernel at 7.3-7.7 instead of 2.8-2.9 ns/px)."""
    import llvmlite.binding as ll

    name, kind, data = state
    library = codegen.create_library(name)
    cls = _ir_only_class(type(library))
    if kind != "bitcode" or cls is type(library):
        return type(library)._unserialize(codegen, state)
    library.__class__ = cls
    library._final_module = ll.parse_bitcode(data)
    library._finalize_final_module()
    return library


def _faster_flag_comparisons() -> None:
    """Let numba compare its compiler flags without building every option's value twice.

    numba keys the typing of every call to an ``@overload`` function (each array index,
    ``max``, ``np.empty``, ...) by the compiler flags, whose hash and equality build a
    dict of all ~20 option values through their properties: ~140,000 times while
    integrate's kernels compile, ~8 % of their compile CPU. The dict of the defaults is
    built once per flags class and the values set on top of it: the same dict (numba's
    setters store only declared options). Skipped if numba's internals differ."""
    try:
        from numba.core.targetconfig import TargetConfig
    except ImportError:  # pragma: no cover - another numba
        return
    if getattr(TargetConfig, "_gonio_values", False) or not hasattr(TargetConfig, "options"):
        return

    def values(self):
        cls = type(self)
        defaults = cls.__dict__.get("_gonio_defaults")
        if defaults is None:
            defaults = {name: option.default for name, option in cls.options.items()}
            cls._gonio_defaults = defaults
        return {**defaults, **self._values}

    numba_values = TargetConfig.values
    try:  # numba's own answer on flags with an option set, or numba's definition stays
        from numba.core.compiler import Flags

        probe = Flags()
        probe.nrt = True
        same = values(probe) == numba_values(probe) and \
            values(Flags()) == numba_values(Flags())
    except Exception:  # pragma: no cover - another numba
        same = False
    if same:
        TargetConfig.values = values
        TargetConfig._gonio_values = True


def _numba_version(text: str) -> tuple[int, int]:
    """(major, minor) of a numba version string ("0.68.1", "0.69.0rc1")."""
    import re

    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _memoised_call_typing() -> None:
    """Let numba type each call of a numba function once per argument types and flags.

    numba types every call site of a built-in or ``@overload`` function (``min``,
    ``math.floor``, array indexing, ``np.empty``, ...) by trying that function's
    templates in turn, formatting an error message for each one that does not match
    (``types.BaseFunction.get_call_type``): ~10,000 times while the demo's kernels
    compile, for ~800 distinct functions, argument types and flags. The answer depends
    only on the typing context, the target, the compiler flags of the kernel being
    compiled and the argument types: it is kept, with the implementation key the call's
    lowering looks up (the one piece of state numba's typing leaves), and the next call
    site of the same types gets both back. The kernels' LLVM IR is the same (all 64
    specialisations of gonio's units, compared), with 18 % fewer Python calls and
    10-18 % less CPU while compiling (benchmarks/figures.md). Failures are not kept
    (numba raises as before). Only on numba versions where the IR was compared (0.61 on
    a test's kernels, `test_memoised_call_typing_compiles_numba_s_own_code`; 0.68 on all
    of gonio's): older ones type every call as numba does. Skipped too if numba's
    internals differ."""
    import numba

    if _numba_version(numba.__version__) < (0, 61):
        return
    try:
        from numba.core import targetconfig
        from numba.core.target_extension import get_local_target
        from numba.core.types.functions import BaseFunction
    except ImportError:  # pragma: no cover - another numba
        return
    numba_get_call_type = getattr(BaseFunction, "get_call_type", None)
    looks_up = getattr(getattr(BaseFunction, "get_impl_key", None), "__code__", None)
    if (numba_get_call_type is None or getattr(numba_get_call_type, "_gonio", False)
            or not hasattr(targetconfig.ConfigStack, "top_or_none")
            or "_impl_keys" not in getattr(looks_up, "co_names", ())):
        return  # pragma: no cover - another numba (or done already)

    def get_call_type(self, context, args, kws):
        try:
            key = (context, get_local_target(context), targetconfig.ConfigStack.top_or_none(),
                   tuple(args), tuple(sorted(kws.items())))
            known = self.__dict__.setdefault("_gonio_call_types", {}).get(key)
        except TypeError:  # an unhashable argument type: numba's own way
            return numba_get_call_type(self, context, args, kws)
        if known is not None:
            sig, impl_key = known
            self._impl_keys[sig.args] = impl_key
            return sig
        sig = numba_get_call_type(self, context, args, kws)
        if sig is not None:
            self._gonio_call_types[key] = (sig, self._impl_keys[sig.args])
        return sig

    get_call_type._gonio = True
    BaseFunction.get_call_type = get_call_type


def _kernel_class(base):
    """``base`` (numba's dispatcher class) compiling without numba's reference counting
    (NRT) unless a kernel needs it.

    gonio's kernels take their arrays from Python and allocate none (docs/developing.md),
    so the reference counts numba's runtime keeps for every array and view they pass
    around only cost compile time: their increments and decrements, emitted at each
    assignment and removed again by an LLVM pass, were 23 % of the IR the demo's
    kernels hand to LLVM (benchmarks/figures.md). Without NRT an array argument is
    borrowed from Python, which holds it for the call, as numba does for any array when
    NRT is off; the arithmetic is the same. A kernel that does need NRT (it allocates, or
    returns an array it did not receive) fails numba's typing without it: then every
    kernel of the process compiles with NRT from there on (:func:`_use_nrt`), and the
    compilation that failed is made again; the outermost one succeeds (numba remembers
    the failed typing of its callees under the callers' flags, which only the kernel
    called from Python escapes)."""

    class KernelDispatcher(base):
        def compile(self, sig):
            without = not getattr(self, "targetoptions", {}).get("_nrt", True)
            try:
                return super().compile(sig)
            except Exception as error:
                from numba.core.errors import TypingError

                if not (without and isinstance(error, TypingError)):
                    raise
            _use_nrt()
            misses = getattr(self, "_cache_misses", None)
            if misses is not None and misses.get(sig):  # that attempt compiled nothing
                misses[sig] -= 1
            return super().compile(sig)

    return KernelDispatcher


_KERNELS = None  # weakref.WeakSet of gonio's dispatchers (njit)
_NRT = [False]  # [every kernel compiles with NRT from now on]


def _use_nrt() -> None:
    """From now on every gonio kernel of this process compiles with NRT (see
    :func:`_kernel_class`); the failures numba keeps for them are forgotten."""
    _NRT[0] = True
    for dispatcher in list(_KERNELS or ()):
        # targetoptions: the dict the dispatcher's compiler reads its flags from
        getattr(dispatcher, "targetoptions", {})["_nrt"] = True
        getattr(getattr(dispatcher, "_compiler", None), "_failed_cache", {}).clear()


def _nrt_option() -> dict:
    """``{"_nrt": False}`` (see :func:`_kernel_class`) where numba has that option and no
    kernel of this process needed NRT; else nothing (numba's default, NRT)."""
    if _NRT[0]:
        return {}
    try:
        from numba.core.cpu import CPUTargetOptions

        known = hasattr(CPUTargetOptions, "_nrt")
    except ImportError:  # pragma: no cover - another numba
        known = False
    return {"_nrt": False} if known else {}


def _internal_class(base):
    """``base`` (numba's dispatcher class) refusing calls from Python, which would jump to
    the missing entry point."""

    class InternalDispatcher(base):
        def __call__(self, *args, **kwargs):
            raise TypeError(f"{self.py_func.__name__} is a kernel that only other kernels "
                            "call (njit(**INTERNAL)): it has no Python entry point.")

    return InternalDispatcher


def njit(fn=None, **options):
    """``numba.njit`` for gonio kernels: ``nogil=True``, cached as described above.

    Use as ``@njit`` or ``@njit(inline="always")``, in a kernels module that
    the code using it imports lazily (at the first call, not at start-up).
    No C entry point (``no_cfunc_wrapper``: gonio never passes kernels as
    first-class functions or C callbacks; each one is code less to compile), and
    no reference counting of arrays unless the kernel needs it (:func:`_kernel_class`).
    ``unit="..."`` (gonio's own option) puts the kernel in that unit of :data:`UNITS`
    instead of its module's: for a path that only some runs reach (e.g.
    ``gonio.core.integration.box_kernels.rare``), which then compiles when first
    reached, announced with its own estimate, instead of with the kernels every run
    needs.
    """
    global _CACHE_CLASS
    unit = options.pop("unit", None)

    def wrap(f):
        import numba

        global _CACHE_CLASS
        if unit:
            f._gonio_unit = unit
        internal = options.get("no_cpython_wrapper") and _internal_compiler()
        extra = {"pipeline_class": internal} if internal else {}
        dispatcher = numba.njit(**{"nogil": True, "no_cfunc_wrapper": True, **_nrt_option(),
                                   **extra, **options})(f)
        global _KERNEL_CLASS, _INTERNAL_CLASS, _KERNELS
        if _KERNEL_CLASS is None:
            import weakref

            _KERNEL_CLASS = _kernel_class(type(dispatcher))
            _KERNELS = weakref.WeakSet()
        _KERNELS.add(dispatcher)
        if _INTERNAL_CLASS is None:
            _INTERNAL_CLASS = _internal_class(_KERNEL_CLASS)
        dispatcher.__class__ = _INTERNAL_CLASS if options.get("no_cpython_wrapper") \
            else _KERNEL_CLASS
        try:
            if _CACHE_CLASS is None:
                _faster_flag_comparisons()
                _memoised_call_typing()
                _CACHE_CLASS = _kernel_cache_class()
            dispatcher._cache = _CACHE_CLASS(f)
            dispatcher._cache._impl.ir_only = bool(internal)
        except Exception:  # numba's caching internals changed: its own cache still works
            dispatcher.enable_caching()
        return dispatcher

    return wrap(fn) if fn is not None else wrap


# -- preparing units ahead ------------------------------------------------------------------
def prepare(unit: str, wait: bool = True) -> float | None:
    """Compile (or load) the kernels of ``unit`` now, holding its lock; returns seconds
    (None, without waiting, when another process holds the lock and not ``wait``)."""
    t0 = time.perf_counter()
    fd = _lock(unit, wait=wait)
    if fd is None and not wait and os.path.exists(os.path.join(_state_dir(), unit + ".lock")):
        return None
    if fd is not None:
        _held[unit] = (fd, None)  # this process's own misses in the unit then wait for nothing
    try:
        module, func = UNITS[unit][0].split(":")
        from importlib import import_module

        getattr(import_module(module), func)()
    finally:
        if fd is not None:
            del _held[unit]
            _unlock(fd)
    try:
        with open(_stamp_path(unit), "w") as f:
            f.write(_numba_stamp() + "\n")
    except OSError:
        pass
    return time.perf_counter() - t0


def load_in_background(units=None):
    """Load the cached kernels of the prepared ``units`` (all when None) in a thread.

    Loading numba and a unit's cached kernels takes about a second (numba's
    own start-up, mostly), which a thread overlaps with the work a process
    does first (opening the session, reading headers and images, which
    release the GIL while they wait or decompress). Units never prepared are
    left alone: compiling them belongs to :func:`prepare_in_background`.
    """
    if os.environ.get(_ENV_OFF, "1") == "0":
        return None
    ready = [u for u in (units or UNITS) if u in UNITS and is_prepared(u)]
    if not ready:
        return None
    import threading

    def load():
        from importlib import import_module

        for unit in ready:
            module, func = UNITS[unit][0].split(":")
            try:
                getattr(import_module(module), func)()
            except Exception:  # the step itself meets and reports any problem
                pass

    thread = threading.Thread(target=load, name="gonio-kernels", daemon=True)
    thread.start()
    return thread


def prepare_in_background(units=None, nice: int = 10) -> list:
    """Start ``python -m gonio.core.jit UNIT...`` to prepare the ``units`` (in that
    order) never prepared in this cache folder: one process per core beyond the one
    the session uses when they prepare ahead of a need (``nice`` 10: they take only
    the CPU the session's steps leave, :func:`_detached`), one per core when the steps
    about to run wait for them (``nice`` 0: the first run of a script, such as ``gonio demo``,
    whose integrate then found its kernels 4-5 s sooner, median first-run excess
    12.3 against 13.5 s in interleaved runs on two cores). Process k starts with the
    unit k/n of the way along the list's compile time (:data:`UNITS`' estimates: the
    first with the unit needed first, the second on two cores with the second half,
    integrate's pixel kernels) and goes on with the others that nobody is preparing.
    One process is started, with each process's units after ``--``: it forks the others
    once numba is loaded (:func:`main`). Returns the processes started (none when all
    are prepared, the folder cannot be written, or ``GONIO_PREPARE_KERNELS=0``). They
    outlive the shell if need be: the work is done once per machine and user.
    """
    if os.environ.get(_ENV_OFF, "1") == "0":
        return []
    todo = [u for u in (units or UNITS) if u in UNITS and not is_prepared(u)]
    if not todo or not _writable(_state_dir()):
        return []
    n = max(1, min(len(todo), (os.cpu_count() or 2) - (1 if nice else 0)))
    seconds = [UNITS[u][1] for u in todo]
    orders = []
    for k in range(n):
        # the unit under the point k/n of the way along the list's compile time
        point, first = k * sum(seconds) / n, 0
        while first + 1 < len(todo) and sum(seconds[:first + 1]) <= point:
            first += 1
        orders += ["--", *todo[first:], *todo[:first]]
    proc = _start([f"--nice={int(nice)}", *orders[1:]])
    return [proc] if proc is not None else []


def _start(args: list[str]):
    """``python -m gonio.core.jit ARGS...`` in the background (:func:`_detached`), silent;
    None if it cannot start."""
    import subprocess

    try:
        return subprocess.Popen(
            [sys.executable, "-m", "gonio.core.jit", *args],
            env=dict(os.environ, NUMBA_CACHE_DIR=cache_dir()), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_detached())
    except OSError:
        return None


def _detached() -> dict:
    """Popen options for a background process that outlives the shell: a process group of
    its own, which Ctrl-C in the terminal does not reach, in the shell's session (it
    ignores the hangup when the terminal closes, :func:`main`).

    Not a session of its own: Linux's autogroup scheduling (on by default on desktops and
    on many servers) shares the CPU equally between sessions first, whatever their nice
    values, so a background session got half the machine against a step of the shell,
    and its two compiling processes shared one core. In the shell's session the processes
    share the cores thread by thread, and nice 10 yields to the steps: the first run of
    ``gonio demo`` went from 5.21-6.18 s (median 5.53) to 4.52-4.78 s (median 4.56) longer
    than its second, in interleaved pairs on two cores (benchmarks/figures.md)."""
    if os.name != "posix":  # pragma: no cover - Windows
        return {}
    return {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


def _load_numba() -> None:
    """Import numba and build its typing and target contexts (what a process's first
    compilation does first: ~0.55 s of CPU, scipy.linalg's import included), so that
    processes forked after share it."""
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


def main(argv: list[str]) -> int:
    """Prepare the units of ``argv`` (all of :data:`UNITS` when empty) in turn, skipping
    those that another process is preparing or has prepared. At a lower priority
    (``--nice=N`` first, 10 by default): the step running meanwhile keeps its core, and
    the preparation takes the cores it leaves idle. ``UNIT... -- UNIT... [-- ...]``: one
    process per group, in parallel; this one loads numba once and forks the others
    (each would spend ~0.55 s of CPU loading it; another process each where there is no
    fork)."""
    nice = 10
    if argv and argv[0].startswith("--nice="):
        nice, argv = int(argv[0].split("=", 1)[1]), argv[1:]
    groups = [[]]
    for arg in argv:
        if arg == "--":
            groups.append([])
        else:
            groups[-1].append(arg)
    try:
        if nice:
            os.nice(nice)
    except (AttributeError, OSError):  # pragma: no cover - no nice (Windows)
        pass
    import signal

    for name in ("SIGHUP", "SIGINT"):  # the terminal closing, Ctrl-C: the work goes on
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    units, children = groups[0], []
    if len(groups) > 1:
        if hasattr(os, "fork"):
            _load_numba()
        for group in groups[1:]:
            try:
                pid = os.fork() if hasattr(os, "fork") else None
            except OSError:  # pragma: no cover - no process left to fork
                pid = None
            if pid == 0:  # the child: its own units, then out without the parent's exit work
                code = 1
                try:
                    code = _prepare_units(group)
                finally:
                    os._exit(code)
            if pid is None:  # pragma: no cover - no fork (Windows): at this one's priority
                _start(["--nice=0", *group])
            else:
                children.append(pid)
    try:
        return _prepare_units(units)
    finally:
        for pid in children:
            os.waitpid(pid, 0)


def _prepare_units(units: list[str]) -> int:
    for unit in units or list(UNITS):
        if unit in UNITS and not is_prepared(unit):
            seconds = prepare(unit, wait=False)
            print(f"{unit}: " + (f"{seconds:.1f} s" if seconds is not None else "busy"),
                  flush=True)
    return 0


if __name__ == "__main__":  # run as the module gonio.core.jit, whose state the kernels share
    from gonio.core.jit import main as _main

    sys.exit(_main(sys.argv[1:]))
