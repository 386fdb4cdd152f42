"""Atomic file writes: a crash never leaves a half-written file in place."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from .file_kinds import HEAD_BYTES, check_replaceable, kind_of


@functools.cache
def _umask() -> int:
    """The process umask, read once (reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes, tmp_prefix: str | None = None,
                 replace_any: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it
    (0666 less the umask), not the private 0600 of a temporary file. An existing
    file of another kind than ``data`` is not replaced (:class:`OverwriteError`,
    :mod:`.file_kinds`) unless ``replace_any`` (the session store's own files).
    """
    path = Path(path)
    if not replace_any:
        check_replaceable(path, kind_of(data[:HEAD_BYTES]))
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
