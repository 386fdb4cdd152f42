"""Old-style (Python pickle) DIALS reflection files, read without cctbx.

DIALS before version 2 wrote ``.refl`` files as a protocol-2 pickle of a
``dials_array_family_flex_ext.reflection_table`` whose state is
``(version, identifiers, nrows, ncols, {column: flex array})``; each flex
array pickles as ``(grid accessor, base-256 byte string)`` (scitbx
``boost_python/flex_pickle_single_buffered.h``). This module maps those
classes to small stand-ins with a restricted unpickler (nothing else can be
constructed) and decodes the byte strings with numba kernels into the same
numpy columns as :mod:`gonio.core.io.dials_refl`.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from gonio.core.io.dials_refl import ReflectionFileError
from gonio.core.reflection_table import ReflectionTable

# flex class -> (values per element, "int" | "uint" | "float" | "bool", numpy dtype)
_FLEX = {
    "int": (1, "int", np.int32),
    "size_t": (1, "uint", np.uint64),
    "double": (1, "float", np.float64),
    "bool": (1, "bool", bool),
    "vec3_double": (3, "float", np.float64),
    "vec2_double": (2, "float", np.float64),
    "mat3_double": (9, "float", np.float64),
    "miller_index": (3, "int", np.int32),
    "int6": (6, "int", np.int32),
}


class PickleReflectionError(ReflectionFileError):
    pass


class _Grid:
    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _Flex:
    kind = ""

    def __init__(self, *args):
        self.payload = b""

    def __setstate__(self, state):
        self.payload = state[-1].encode("latin1") if isinstance(state[-1], str) else state[-1]


class _Table:
    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "dials_array_family_flex_ext" and name == "reflection_table":
            return _Table
        if name == "grid" and module.endswith("_flex_ext"):
            return _Grid
        if module.endswith("_flex_ext") and name in _FLEX:
            return type(f"flex_{name}", (_Flex,), {"kind": name})
        raise PickleReflectionError(
            f"the pickled reflection table holds a {module}.{name} column, which gonio cannot "
            "decode. Load the file in DIALS and save it again as msgpack "
            "(flex.reflection_table.from_file(path).as_file(new_path))."
        )


def _decode(flex: _Flex, nrows: int, name: str, source: str) -> np.ndarray:
    from gonio.core.io.flex_pickle_kernels import decode_floats, decode_ints

    per, kind, dtype = _FLEX[flex.kind]
    buf = np.frombuffer(flex.payload, dtype=np.uint8)
    count = np.zeros(1, np.int64)
    pos = decode_ints(buf, 0, 1, count)
    if pos < 0 or count[0] != nrows:
        raise PickleReflectionError(f"{source}: column {name!r} has {int(count[0])} values for "
                                    f"{nrows} rows; the file is corrupt.")
    n = nrows * per
    if kind == "bool":
        vals = buf[pos:pos + n] == ord("1")
        end = pos + n if pos + n <= buf.size else -1
    elif kind == "float":
        vals = np.empty(n, np.float64)
        end = decode_floats(buf, pos, n, vals)
    else:
        vals = np.empty(n, np.int64)
        end = decode_ints(buf, pos, n, vals)
    if end < 0:
        raise PickleReflectionError(f"{source}: column {name!r} is truncated; the file is corrupt.")
    vals = vals.astype(dtype)
    return vals.reshape(nrows, per) if per > 1 else vals


def refl_from_pickle(b: bytes, source: str = "the data") -> ReflectionTable:
    """A ReflectionTable from the bytes of a pickled (DIALS 1.x) reflection file."""
    try:
        obj = _Unpickler(io.BytesIO(b), encoding="latin1").load()
    except PickleReflectionError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise PickleReflectionError(f"{source} is a Python pickle but not a readable DIALS reflection "
                                    f"table ({type(e).__name__}: {e}); the file may be truncated.") from None
    if not isinstance(obj, _Table) or not isinstance(obj.state, tuple) or len(obj.state) != 5:
        raise PickleReflectionError(f"{source} is a Python pickle but not a DIALS reflection table.")
    _version, identifiers, nrows, _ncols, columns = obj.state
    cols = {name: _decode(col, nrows, name, source) for name, col in columns.items()}
    return ReflectionTable(cols, {int(k): str(v) for k, v in (identifiers or {}).items()})
