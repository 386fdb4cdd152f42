"""Declaring a parameter of a core step once: a dataclass field with its metadata.

Every step's parameters are a plain dataclass whose fields carry ``help`` (one
line), the full DIALS-style dotted name (``dials`` or ``phil``), ``units`` and,
where they apply, ``choices`` and further keys that the shell reads
(``expert_level``, ``min``, ``type``, ...: see gonio.shell.dataclass_params).
"""

from __future__ import annotations

from dataclasses import field


def param(default, help, dials, units="", choices=None, **extra):
    """A dataclass field for a step parameter; list and tuple defaults become a fresh list
    per instance."""
    meta = {"help": help, "dials": dials, "units": units, **extra}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)
