"""Content-addressed blob store: artifacts as files named by their SHA-256.

A blob with hash ``abcdef...`` (64 hex digits, the SHA-256 of its *content*)
lives at ``<folder>/ab/cdef...``. Identical content is stored once. A blob is
written to a temporary file (``.tmp-*``) in the same directory, fsync'd and
then renamed into place (``os.replace``), so a blob file is either absent or
complete, whatever happens to the process; callers write blobs *before* the
database transaction that references them.

Compression: a blob of at least :data:`COMPRESS_MIN_BYTES` is stored as one
Zstandard frame (level :data:`ZSTD_LEVEL`) when that saves at least a tenth
of its size (reflection tables with shoeboxes shrink to 15-30 %, tables
without to 60-80 %; zstd level 1 compresses at ~250 MB/s and decompresses at
~600 MB/s, several times faster than zlib at a smaller size; measured in
docs/sessions.md). Any other blob is stored as its raw bytes. A stored file
is read as a zstd frame when it starts with the zstd magic number and
decompresses to the hash, and as raw bytes otherwise, so blobs written
before compression existed stay readable; content that itself starts with
the zstd magic is always stored compressed, which keeps the two forms apart.

Recently used blobs are kept in memory (least recently used first out,
bounded by their total size) so that going back and forth between steps does
not re-read the disk.

Nothing read from a blob is ever executed or unpickled here: a blob is bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from gonio.core.io.atomic import write_atomic
from gonio.store.errors import CorruptHistoryError, MissingBlobError

DEFAULT_CACHE_BYTES = 512 * 2**20
TMP_PREFIX = ".tmp-"
#: Blobs smaller than this are stored raw (compression would save nothing worth a frame).
COMPRESS_MIN_BYTES = 4096
#: Zstandard level: 1 is the fast end (see the module docstring for measurements).
ZSTD_LEVEL = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HEX = frozenset("0123456789abcdef")


def is_blob_hash(text: str) -> bool:
    """True for a lower-case SHA-256 hex digest (the only names the store uses)."""
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


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
        if not is_blob_hash(blob_hash):
            raise ValueError(f"not a SHA-256 hex digest: {blob_hash!r}")
        return self.folder / blob_hash[:2] / blob_hash[2:]

    def has(self, blob_hash: str) -> bool:
        """True if the blob is stored."""
        return blob_hash in self._cache or self.path(blob_hash).is_file()

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` (durably, atomically) and return its SHA-256 hex digest.

        Raises :class:`OSError` when the file cannot be written (disk full, file
        size limit, read-only folder); nothing is left behind then.
        """
        data = bytes(data)
        blob_hash = hashlib.sha256(data).hexdigest()
        self.write(blob_hash, data)
        self._remember(blob_hash, data)
        return blob_hash

    def write(self, blob_hash: str, data: bytes) -> None:
        """Make sure the file of ``blob_hash`` (the hash of ``data``) exists on disk.

        An existing file has its modification time renewed, so that a clean-up
        running at the same time sees it as in use.
        """
        target = self.path(blob_hash)
        if target.is_file():
            try:
                os.utime(target)
            except OSError:
                pass  # read-only or foreign file: it is there, which is what counts
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, _encode(data), tmp_prefix=TMP_PREFIX, replace_any=True)
        _fsync_directory(target.parent)

    def get(self, blob_hash: str) -> bytes:
        """The bytes stored under ``blob_hash``, checked against the hash when read from disk."""
        with self._lock:
            data = self._cache.get(blob_hash)
            if data is not None:
                self._cache.move_to_end(blob_hash)
                return data
        data = self.read_verified(blob_hash)
        self._remember(blob_hash, data)
        return data

    def read_verified(self, blob_hash: str) -> bytes:
        """The content of ``blob_hash`` read from disk (never the cache), hash-checked."""
        target = self.path(blob_hash)
        try:
            stored = target.read_bytes()
        except FileNotFoundError:
            raise MissingBlobError(
                f"The stored artifact {blob_hash[:12]}... is missing from {self.folder} "
                "(the file was deleted or the session folder was copied incompletely). "
                "Copy the complete .gonio folder back, or go to a step whose artifacts "
                "are present and re-run the later commands; `gonio check` lists every "
                "step affected."
            ) from None
        data = _decode(stored, blob_hash)
        if data is None:
            raise CorruptHistoryError(
                f"The stored artifact {target} is damaged: its content no longer matches "
                "its checksum (disk or copy error). Restore the .gonio folder from a "
                "backup, or go to an earlier step and re-run the later commands; "
                "`gonio check` lists every step affected and `gonio repair` marks them."
            )
        return data

    def stored_size(self, blob_hash: str) -> int:
        """Bytes the blob takes on disk (0 when missing)."""
        try:
            return self.path(blob_hash).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def hashes(self) -> Iterator[str]:
        """Every blob hash with a file in the store (in no particular order)."""
        if not self.folder.is_dir():
            return
        for sub in os.scandir(self.folder):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                name = sub.name + entry.name
                if is_blob_hash(name) and entry.is_file():
                    yield name

    def temporary_files(self, older_than_s: float = 0.0) -> list[Path]:
        """Half-written files left by a process that died while writing a blob.

        Only files not modified for ``older_than_s`` seconds (a live process may
        be writing a younger one).
        """
        if not self.folder.is_dir():
            return []
        now = time.time()
        out = []
        for sub in os.scandir(self.folder):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                if entry.name.startswith(TMP_PREFIX) and entry.is_file():
                    if now - entry.stat().st_mtime >= older_than_s:
                        out.append(Path(entry.path))
        return sorted(out)

    def forget_cached(self, blob_hash: str) -> None:
        """Drop a blob from the memory cache (after its file was removed or moved)."""
        with self._lock:
            data = self._cache.pop(blob_hash, None)
            if data is not None:
                self._cached_bytes -= len(data)

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


def _encode(data: bytes) -> bytes:
    """The file content for ``data``: a zstd frame when it pays (or is needed), else raw."""
    must = data[:4] == ZSTD_MAGIC
    if len(data) < COMPRESS_MIN_BYTES and not must:
        return data
    import zstandard

    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    return packed if must or len(packed) <= 0.9 * len(data) else data


def _decode(stored: bytes, blob_hash: str) -> bytes | None:
    """The content of a stored file, or None when it does not match ``blob_hash``."""
    if stored[:4] == ZSTD_MAGIC:
        import zstandard

        try:
            data = zstandard.ZstdDecompressor().decompress(stored)
        except zstandard.ZstdError:
            data = None
        if data is not None and hashlib.sha256(data).hexdigest() == blob_hash:
            return data
    return stored if hashlib.sha256(stored).hexdigest() == blob_hash else None


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
