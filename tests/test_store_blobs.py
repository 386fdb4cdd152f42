"""BlobStore: content addressing, deduplication, integrity checks, memory bound."""

import hashlib

import pytest

from gonio.store.blobs import BlobStore
from gonio.store.errors import CorruptHistoryError, MissingBlobError


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_put_get_layout_and_dedup(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = b"\x00\x01spots" * 1000
    h = store.put(data)
    assert h == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "blobs" / h[:2] / h[2:]).read_bytes() == data
    assert store.put(bytearray(data)) == h  # same content, any bytes-like: stored once
    assert store.put(memoryview(data)) == h
    other = store.put(b"other")
    assert other != h
    assert _files(tmp_path / "blobs") == sorted([store.path(h), store.path(other)])
    assert store.get(h) == data and store.has(h) and store.has(other)
    assert not store.has("0" * 64)
    # a fresh store (no memory cache) reads the same bytes back from disk
    assert BlobStore(tmp_path / "blobs").get(other) == b"other"
    assert store.get(store.put(b"")) == b""


def test_no_temporary_files_left(tmp_path):
    store = BlobStore(tmp_path)
    for i in range(20):
        store.put(bytes([i]) * 100)
    names = [p.name for p in _files(tmp_path)]
    assert len(names) == 20 and not any(n.startswith(".tmp-") for n in names)


def test_missing_and_damaged_blobs_raise_clear_errors(tmp_path):
    h = BlobStore(tmp_path).put(b"reflections")
    fresh = BlobStore(tmp_path)
    fresh.path(h).write_bytes(b"reflectionZ")
    with pytest.raises(CorruptHistoryError, match="damaged"):
        fresh.get(h)
    fresh.path(h).unlink()
    with pytest.raises(MissingBlobError, match="missing"):
        fresh.get(h)
    with pytest.raises(ValueError, match="SHA-256"):
        fresh.get("../../etc/passwd")


def test_memory_cache_is_bounded_by_total_bytes(tmp_path):
    store = BlobStore(tmp_path, cache_bytes=2500)
    hashes = [store.put(bytes([i]) * 1000) for i in range(5)]
    assert store._cached_bytes == 2000 and list(store._cache) == hashes[3:]
    assert store.get(hashes[0]) == bytes([0]) * 1000  # evicted: read from disk, cached again
    assert list(store._cache) == [hashes[4], hashes[0]]
    store.get(hashes[4])  # a hit moves to the most recent end
    assert list(store._cache) == [hashes[0], hashes[4]]
    big = store.put(b"x" * 3000)  # larger than the whole cache: not cached, still stored
    assert big not in store._cache and store.get(big) == b"x" * 3000
    assert store._cached_bytes == 2000
