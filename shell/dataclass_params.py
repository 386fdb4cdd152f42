"""Shell parameters from a core parameter dataclass, declared once.

Core algorithms take plain dataclasses whose fields carry metadata:
``phil`` (the full DIALS-style dotted name), ``help``, ``units`` and
optionally ``choices``, ``expert_level``, ``min``, ``max``, ``length``,
``primary``, ``type`` (a :class:`Param` type overriding the one inferred
from the annotation) and ``shell=False`` for fields not set from the
command line (arrays, callables). This module turns such a dataclass into
:class:`Param` definitions and the parsed values back into the dataclass.
"""

from __future__ import annotations

import dataclasses
import re

from gonio.shell.params import Param

_PASS = ("choices", "expert_level", "min", "max", "min_exclusive", "max_exclusive", "length",
         "primary", "allow_auto", "multiple")


def _infer_type(annotation: str, default, meta: dict) -> str | None:
    if "type" in meta:
        return meta["type"]
    a = annotation.replace(" ", "")
    if meta.get("choices"):
        return "choice"
    base = re.sub(r"\|None$|^None\|", "", a)
    if base == "bool":
        return "bool"
    if base == "int":
        return "int"
    if base in ("float", "int|float", "float|int"):
        return "float"
    if base == "str":
        return "str"
    if re.fullmatch(r"tuple\[int(,int)*\]|tuple\[int,\.\.\.\]", base):
        return "ints"
    if re.fullmatch(r"tuple\[(float|int)(,(float|int))*\]|tuple\[float,\.\.\.\]", base):
        return "floats"
    return None


def _full_name(meta) -> str | None:
    return meta.get("phil") or meta.get("dials")


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def params_from_dataclass(cls, prefix: str | None = None, overrides: dict | None = None) -> list[Param]:
    """Param definitions for the fields of ``cls`` that the shell can set.

    Nested parameter dataclasses are included with their own names.
    ``overrides`` maps a full name to extra metadata (e.g. choices, primary).
    """
    out = []
    overrides = overrides or {}
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        default = _default(f)
        if dataclasses.is_dataclass(default):
            out.extend(params_from_dataclass(type(default), prefix, overrides))
            continue
        if meta.get("shell") is False or not _full_name(meta):
            continue
        meta.update(overrides.get(_full_name(meta), {}))
        if isinstance(default, list):
            default = tuple(default) if default else None
            meta.setdefault("allow_none", True)
            if meta.get("choices"):
                meta["multiple"] = True
        ptype = _infer_type(str(f.type), default, meta)
        if ptype is None:
            continue
        if ptype in ("ints", "floats") and isinstance(default, tuple) and "length" not in meta \
                and "..." not in str(f.type):
            meta["length"] = len(default)
        kw = {k: meta[k] for k in _PASS if k in meta}
        if "allow_none" in meta:
            kw["allow_none"] = meta["allow_none"]
        elif default is None or "None" in str(f.type):
            kw["allow_none"] = True
        name = _full_name(meta) if prefix is None else f"{prefix}.{_full_name(meta)}"
        out.append(Param(name, ptype, default, meta.get("help", ""), units=meta.get("units", ""), **kw))
    return out


def dataclass_from_values(cls, values: dict, prefix: str | None = None, **extra):
    """An instance of ``cls`` from parsed values (keyed by full name) plus ``extra`` fields."""
    kw = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = _default(f)
        if dataclasses.is_dataclass(default):
            kw[f.name] = dataclass_from_values(type(default), values, prefix)
            continue
        if not _full_name(meta):
            continue
        name = _full_name(meta) if prefix is None else f"{prefix}.{_full_name(meta)}"
        if name in values:
            v = values[name]
            if isinstance(default, list):
                v = list(v) if v else []
            elif isinstance(v, list):
                v = tuple(v)
            kw[f.name] = v
    kw.update(extra)
    return cls(**kw)
