"""Read and write DIALS reflection files (``.refl``, msgpack).

A DIALS reflection file is one msgpack array (layout of DIALS's
``reflection_table_msgpack_adapter.h``, DIALS project, BSD licence)::

    ["dials::af::reflection_table", VERSION,
     {"identifiers": {id: identifier, ...},
      "nrows": N,
      "data": {column: [type_name, [N, column bytes]], ...}}]

Each column is one msgpack ``bin`` holding the N elements as raw
little-endian bytes, e.g. ``vec3<double>`` is 24 bytes a row and
``cctbx::miller::index<>`` three int32 a row (numpy forms: see
:mod:`gonio.core.reflection_table`). A ``Shoebox<>`` column is one ``bin``
with, for each shoebox in turn: panel (uint32), bbox x0 x1 y0 y1 z0 z1
(6 x int32), a uint8 marker, and when the marker is non-zero the pixel
arrays of shape (z1-z0, y1-y0, x1-x0): data (float32), mask, background
(float32). The mask is int32 after marker 1 and uint8 after marker 2.

DIALS has long written layout version 1 (marker 1, int32 masks; all the
files in gonio's test data); its current source also knows version 2
(marker 2, uint8 masks) and reads both. gonio reads both and writes
version 1 with marker 1, which every DIALS can load. Reading a version 1
file and writing it again gives the same bytes.

``std::string`` columns are the one exception: DIALS stores the in-memory
string objects, which cannot be decoded outside the process that wrote
them, so gonio refuses such columns when reading, and writes string
columns as a msgpack array of UTF-8 strings (a file DIALS declines to load
with a "not BIN" error rather than misreading it).

>>> t = ReflectionTable({"miller_index": [(1, 2, 3)], "d": [2.5]}, {0: "abc"})
>>> refl_from_bytes(refl_to_bytes(t)) == t
True
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.io.atomic import write_atomic
from gonio.core.reflection_table import ReflectionTable, Shoeboxes

__all__ = [
    "ReflectionFileError",
    "read_refl",
    "refl_from_bytes",
    "refl_to_bytes",
    "write_refl",
]

FILE_TYPE = "dials::af::reflection_table"
WRITE_VERSION = 1
READ_VERSIONS = (1, 2)

# DIALS type name -> (little-endian numpy dtype, values per row)
_FIXED_TYPES: dict[str, tuple[str, int]] = {
    "bool": ("|b1", 1),
    "int": ("<i4", 1),
    "std::size_t": ("<u8", 1),
    "double": ("<f8", 1),
    "vec2<double>": ("<f8", 2),
    "vec3<double>": ("<f8", 3),
    "mat3<double>": ("<f8", 9),
    "int6": ("<i4", 6),
    "cctbx::miller::index<>": ("<i4", 3),
}
STRING_TYPE = "std::string"
SHOEBOX_TYPE = "Shoebox<>"
KNOWN_TYPES = (*_FIXED_TYPES, STRING_TYPE, SHOEBOX_TYPE)

# One shoebox header: panel, bbox, marker (packed, 29 bytes).
_SHOEBOX_HEADER = np.dtype([("panel", "<u4"), ("bbox", "<i4", (6,)), ("marker", "u1")])
_RESAVE_HINT = (
    "If DIALS can still open it, load it there and save it again "
    "(flex.reflection_table.from_file(path).as_file(new_path)) to get a "
    "version 1 msgpack file."
)


class ReflectionFileError(GonioError):
    """A file that is not a DIALS reflection file gonio can read, or a table it cannot write."""


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def read_refl(path: str | os.PathLike) -> ReflectionTable:
    """Read a DIALS ``.refl`` (msgpack) file into a :class:`ReflectionTable`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReflectionFileError(
            f"{path}: no such reflection file. Check the path (DIALS writes e.g. "
            "strong.refl, indexed.refl, integrated.refl)."
        ) from None
    except OSError as e:
        raise ReflectionFileError(f"{path}: cannot read it ({e.strerror or e}).") from None
    return refl_from_bytes(raw, source=str(path))


def refl_from_bytes(b: bytes, source: str = "the data") -> ReflectionTable:
    """Decode the bytes of a DIALS reflection file (``source`` names it in errors)."""
    b = bytes(b)
    if b[:1] == b"\x80" and b[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        from gonio.core.io.dials_refl_pickle import refl_from_pickle  # DIALS 1.x files

        return refl_from_pickle(b, source)
    try:
        obj = msgpack.unpackb(b, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as e:
        what = "truncated or corrupt" if b[:1] == b"\x93" else "not msgpack"
        raise ReflectionFileError(
            f"{source} is not a DIALS reflection file: it is {what} ({e}). "
            "A DIALS .refl file is msgpack written by DIALS; check that "
            "the file is complete (a copy may have been cut short) and is a .refl file."
        ) from None
    header = _check_envelope(obj, source)
    nrows = _header_int(header, "nrows", source)
    identifiers = header.get("identifiers", {})
    if not isinstance(identifiers, dict) or not all(
        isinstance(k, int) and k >= 0 and isinstance(v, str) for k, v in identifiers.items()
    ):
        raise ReflectionFileError(
            f"{source}: the experiment identifiers are not a map of integer ids to "
            f"strings; the file is corrupt. {_RESAVE_HINT}"
        )
    data = header.get("data")
    if not isinstance(data, dict):
        raise ReflectionFileError(
            f"{source}: the table has no column data; the file is corrupt. {_RESAVE_HINT}"
        )
    columns = {name: _decode_column(name, col, nrows, source) for name, col in data.items()}
    table = ReflectionTable(columns, identifiers)
    if not columns:
        table._nrows = nrows  # a table with rows but no columns keeps its row count
    return table


def _check_envelope(obj, source: str) -> dict:
    if not (isinstance(obj, list) and len(obj) == 3 and obj[0] == FILE_TYPE):
        first = obj[0] if isinstance(obj, list) and obj else obj
        shown = repr(first)[:60]
        raise ReflectionFileError(
            f"{source} is msgpack but not a DIALS reflection file: it should be a "
            f'3-element array starting with "{FILE_TYPE}", and it starts with {shown}. '
            "Pass a .refl file written by DIALS or gonio."
        )
    version = obj[1]
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise ReflectionFileError(
            f"{source} is a DIALS reflection file of layout version {version!r}; gonio "
            f"reads versions {' and '.join(map(str, READ_VERSIONS))}. It was probably "
            "written by a DIALS newer than this gonio: save it again with a DIALS that "
            "writes layout version 1, or tell the gonio developers which DIALS version "
            "wrote it."
        )
    header = obj[2]
    if not isinstance(header, dict):
        raise ReflectionFileError(
            f"{source}: the table header is not a map; the file is corrupt. {_RESAVE_HINT}"
        )
    unknown = sorted(str(k) for k in header if k not in ("identifiers", "nrows", "data"))
    if unknown:
        raise ReflectionFileError(
            f"{source}: unknown entries {', '.join(unknown)} in the table header (DIALS "
            "knows identifiers, nrows and data); the file is corrupt or from an unknown "
            f"DIALS version. {_RESAVE_HINT}"
        )
    return header


def _header_int(header: dict, key: str, source: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReflectionFileError(
            f"{source}: the table header has no valid '{key}' (got {value!r}); the "
            f"file is corrupt. {_RESAVE_HINT}"
        )
    return value


def _decode_column(name: str, col, nrows: int, source: str):
    ok = (
        isinstance(col, list) and len(col) == 2 and isinstance(col[0], str)
        and isinstance(col[1], list) and len(col[1]) == 2
    )
    if not ok:
        raise ReflectionFileError(
            f"{source}: column {name!r} is not stored as [type, [rows, bytes]]; the "
            f"file is corrupt. {_RESAVE_HINT}"
        )
    type_name, (n, payload) = col
    if type_name not in KNOWN_TYPES:
        raise ReflectionFileError(
            f"{source}: column {name!r} has type {type_name!r}, which gonio does not "
            f"read (it reads {', '.join(KNOWN_TYPES)}). Delete that column in DIALS "
            "(del table[name]) and save the table again, then load it here."
        )
    if n != nrows:
        raise ReflectionFileError(
            f"{source}: column {name!r} has {n!r} rows but the table has {nrows}; the "
            f"file is corrupt. {_RESAVE_HINT}"
        )
    if type_name == STRING_TYPE:
        return _decode_strings(name, payload, nrows, source)
    if not isinstance(payload, bytes):
        raise ReflectionFileError(
            f"{source}: column {name!r} ({type_name}) is not stored as binary data; "
            f"the file is corrupt. {_RESAVE_HINT}"
        )
    if type_name == SHOEBOX_TYPE:
        return _decode_shoeboxes(name, payload, nrows, source)
    dtype, width = _FIXED_TYPES[type_name]
    expected = nrows * width * np.dtype(dtype).itemsize
    if len(payload) != expected:
        raise ReflectionFileError(
            f"{source}: column {name!r} ({type_name}) holds {len(payload)} bytes, "
            f"{expected} expected for {nrows} rows; the file is corrupt or cut short. "
            f"{_RESAVE_HINT}"
        )
    arr = np.frombuffer(payload, dtype=dtype).astype(np.dtype(dtype).newbyteorder("="))
    return arr.reshape(nrows, width) if width > 1 else arr


def _decode_strings(name: str, payload, nrows: int, source: str) -> np.ndarray:
    if isinstance(payload, list) and len(payload) == nrows and all(
        isinstance(s, str) for s in payload
    ):
        arr = np.empty(nrows, dtype=object)
        arr[:] = payload
        return arr
    raise ReflectionFileError(
        f"{source}: column {name!r} is a DIALS std::string column. DIALS stores "
        "string columns as raw in-memory objects that only the process that wrote "
        "them can decode, so no program can read them back. Delete the column in "
        "DIALS (del table[name]) and save the table again."
    )


def _decode_shoeboxes(name: str, payload: bytes, nrows: int, source: str) -> Shoeboxes:
    from gonio.core.io import shoebox_kernels as kernels

    buf = np.frombuffer(payload, dtype=np.uint8)
    panel = np.empty(nrows, np.uint64)
    bbox = np.empty((nrows, 6), np.int32)
    marker = np.empty(nrows, np.uint8)
    npix = np.empty(nrows, np.int64)
    status, row, end = kernels._scan_shoeboxes(buf, nrows, panel, bbox, marker, npix)
    if status or end != len(payload):
        if status == 0:
            problem = f"{len(payload) - end} bytes are left over after the last shoebox"
        elif status == 1:
            problem = f"the data end inside shoebox {row}"
        elif status == 2:
            problem = f"shoebox {row} has a bounding box with x1 < x0, y1 < y0 or z1 < z0"
        else:
            problem = f"shoebox {row} has data marker {marker[row]} (0, 1 or 2 expected)"
        raise ReflectionFileError(
            f"{source}: the shoebox column {name!r} is corrupt: {problem}. {_RESAVE_HINT}"
        )
    offset = np.zeros(nrows + 1, np.int64)
    np.cumsum(npix, out=offset[1:])
    total = int(offset[-1])
    data = np.empty(total, np.float32)
    background = np.empty(total, np.float32)
    mask = np.empty(total, np.int32)
    kernels._copy_shoebox_pixels(
        buf, marker, npix, offset, data.view(np.uint8), mask, mask.view(np.uint8),
        background.view(np.uint8),
    )
    return Shoeboxes(panel, bbox, data, background, mask, offset, marker != 0)


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
def write_refl(t: ReflectionTable, path: str | os.PathLike) -> None:
    """Write ``t`` as a DIALS ``.refl`` file, atomically (temp file, then rename)."""
    write_atomic(path, refl_to_bytes(t))


def refl_to_bytes(t: ReflectionTable) -> bytes:
    """Encode ``t`` as DIALS reflection-file bytes (layout version 1, column order kept)."""
    nrows = len(t)
    data = {}
    for name, col in t.items():
        type_name, payload = _encode_column(name, col)
        data[name] = [type_name, [nrows, payload]]
    identifiers = {int(k): str(v) for k, v in t.experiment_identifiers.items()}
    obj = [FILE_TYPE, WRITE_VERSION, {"identifiers": identifiers, "nrows": nrows, "data": data}]
    return msgpack.packb(obj, use_bin_type=True)


def _encode_column(name: str, col) -> tuple[str, bytes | list]:
    if isinstance(col, Shoeboxes):
        return SHOEBOX_TYPE, _encode_shoeboxes(name, col)
    arr = np.asarray(col)
    type_name = _dials_type(name, arr)
    if type_name == STRING_TYPE:
        strings = arr.tolist()
        if not all(isinstance(s, str) for s in strings):
            raise ReflectionFileError(
                f"column {name!r} holds Python objects that are not all strings; "
                "a reflection file can store strings but not other objects."
            )
        return type_name, strings
    dtype, width = _FIXED_TYPES[type_name]
    if arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(np.dtype(dtype))
        if arr.min() < info.min or arr.max() > info.max:
            raise ReflectionFileError(
                f"column {name!r} has values outside the range of the DIALS type "
                f"{type_name} ({info.min}..{info.max}); convert it before writing."
            )
    return type_name, np.ascontiguousarray(arr, dtype=dtype).reshape(-1).tobytes()


def _dials_type(name: str, arr: np.ndarray) -> str:
    """The DIALS column type for a numpy column (see gonio.core.reflection_table)."""
    kind, shape = arr.dtype.kind, arr.shape[1:]
    if kind in "UO" and shape == ():
        return STRING_TYPE
    if kind == "b" and shape == ():
        return "bool"
    if kind == "i" and shape == ():
        return "int"
    if kind == "u" and shape == ():
        return "std::size_t"
    if kind == "f":
        by_shape = {(): "double", (2,): "vec2<double>", (3,): "vec3<double>",
                    (9,): "mat3<double>", (3, 3): "mat3<double>"}
        if shape in by_shape:
            return by_shape[shape]
    if kind in "iu" and shape == (6,):
        return "int6"
    if kind in "iu" and shape == (3,):
        return "cctbx::miller::index<>"
    raise ReflectionFileError(
        f"column {name!r} (numpy {arr.dtype}, row shape {shape}) has no DIALS column "
        "type: DIALS stores bool, int32, uint64, float64, 2-, 3- and 3x3-vectors of "
        "float64, 6 or 3 int32, strings and shoeboxes. Convert or delete the column "
        "before writing."
    )


def _encode_shoeboxes(name: str, sb: Shoeboxes) -> bytes:
    from gonio.core.io import shoebox_kernels as kernels

    n = len(sb)
    sizes = sb.sizes().astype(np.int64)
    if n and (sizes < 0).any():
        row = int(np.flatnonzero((sizes < 0).any(axis=1))[0])
        raise ReflectionFileError(
            f"shoebox column {name!r}: shoebox {row} has a bounding box "
            f"{sb.bbox[row].tolist()} with x1 < x0, y1 < y0 or z1 < z0; DIALS cannot "
            "load such a file. Fix or remove that shoebox before writing."
        )
    volume = sizes.prod(axis=1) if n else np.zeros(0, np.int64)
    stored = sb.offset[1:] - sb.offset[:-1]
    bad = sb.allocated & (stored != volume)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ReflectionFileError(
            f"shoebox column {name!r}: shoebox {row} holds {int(stored[row])} pixels "
            f"but its bounding box has {int(volume[row])}; the column is inconsistent."
        )
    # DIALS writes pixel arrays only for shoeboxes that have some (marker 1).
    present = sb.allocated & (volume > 0)
    header = np.zeros(n, dtype=_SHOEBOX_HEADER)
    header["panel"] = sb.panel
    header["bbox"] = sb.bbox
    header["marker"] = present
    npix = np.where(present, volume, 0)
    out = np.empty(29 * n + 12 * int(npix.sum()), np.uint8)
    kernels._pack_shoeboxes(
        header.view(np.uint8).reshape(n, 29), npix, sb.offset,
        np.ascontiguousarray(sb.data, "<f4").view(np.uint8),
        np.ascontiguousarray(sb.mask, "<i4").view(np.uint8),
        np.ascontiguousarray(sb.background, "<f4").view(np.uint8),
        out,
    )
    return out.tobytes()

