"""Content-addressed blob store: artifacts as files named by their SHA-256.

A blob with hash ``abcdef...`` (64 hex digits) lives at ``<folder>/ab/cdef...``.
Identical content is stored once. A blob is written to a temporary file in
the same directory, fsync'd and then renamed into place (``os.replace``), so a
blob file is either absent or complete, whatever happens to the process;
callers write blobs *before* the database transaction that references them.

Recently used blobs are kept in memory (least recently used first out,
bounded by their total size) so that going back and forth between steps does
not re-read the disk.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

from gonio.core.io.atomic import write_atomic
from gonio.store.errors import CorruptHistoryError, MissingBlobError

DEFAULT_CACHE_BYTES = 512 * 2**20
_TMP_PREFIX = ".tmp-"


class BlobStore:
    """Immutable byte strings stored under their SHA-256 hex digest in ``folder``.

    Example::

        store = BlobStore(".gonio/blobs")
        h = store.put(b"spots")      # 64 hex digits; a second put of b"spots" stores nothing
        assert store.get(h) == b"spots" and store.has(h)
    """

    def __init__(self, folder: str | os.PathLike, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.folder = Path(folder)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def path(self, blob_hash: str) -> Path:
        """File holding the blob ``blob_hash`` (whether or not it exists)."""
        if len(blob_hash) != 64 or not all(c in "0123456789abcdef" for c in blob_hash):
            raise ValueError(f"not a SHA-256 hex digest: {blob_hash!r}")
        return self.folder / blob_hash[:2] / blob_hash[2:]

    def has(self, blob_hash: str) -> bool:
        """True if the blob is stored."""
        return blob_hash in self._cache or self.path(blob_hash).is_file()

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` (durably, atomically) and return its SHA-256 hex digest."""
        data = bytes(data)
        blob_hash = hashlib.sha256(data).hexdigest()
        target = self.path(blob_hash)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, bytes(data), tmp_prefix=_TMP_PREFIX)
            _fsync_directory(target.parent)
        self._remember(blob_hash, data)
        return blob_hash

    def get(self, blob_hash: str) -> bytes:
        """The bytes stored under ``blob_hash``, checked against the hash when read from disk."""
        with self._lock:
            data = self._cache.get(blob_hash)
            if data is not None:
                self._cache.move_to_end(blob_hash)
                return data
        target = self.path(blob_hash)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise MissingBlobError(
                f"The stored artifact {blob_hash[:12]}... is missing from {self.folder} "
                "(the file was deleted or the session folder was copied incompletely). "
                "Copy the complete .gonio folder back, or go to a step whose artifacts "
                "are present and re-run the later commands."
            ) from None
        if hashlib.sha256(data).hexdigest() != blob_hash:
            raise CorruptHistoryError(
                f"The stored artifact {target} is damaged: its content no longer matches "
                "its checksum (disk or copy error). Restore the .gonio folder from a "
                "backup, or go to an earlier step and re-run the later commands."
            )
        self._remember(blob_hash, data)
        return data

    def _remember(self, blob_hash: str, data: bytes) -> None:
        if len(data) > self.cache_bytes:
            return
        with self._lock:
            if blob_hash in self._cache:
                self._cache.move_to_end(blob_hash)
                return
            self._cache[blob_hash] = data
            self._cached_bytes += len(data)
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)


def _fsync_directory(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
