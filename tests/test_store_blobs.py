"""BlobStore: content addressing, deduplication, compression, integrity checks, memory bound."""

import hashlib
import os

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
    assert (tmp_path / "blobs" / h[:2] / h[2:]).is_file()
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


def test_compressible_blobs_are_stored_compressed_and_others_raw(tmp_path):
    store = BlobStore(tmp_path)
    table = b"\x00\x01spots" * 1000
    noise = os.urandom(100_000)
    small = b"x" * 100
    for data, stored_max in ((table, 0.1), (noise, 1.0), (small, 1.0)):
        h = store.put(data)
        on_disk = store.path(h).read_bytes()
        assert len(on_disk) <= stored_max * len(data)
        assert (on_disk == data) == (data is not table)  # noise and small blobs: raw
        assert BlobStore(tmp_path).get(h) == data


def test_raw_blob_files_from_before_compression_stay_readable(tmp_path):
    store = BlobStore(tmp_path)
    data = b"an old table " * 1000
    h = hashlib.sha256(data).hexdigest()
    store.path(h).parent.mkdir(parents=True)
    store.path(h).write_bytes(data)  # as an earlier gonio wrote it
    assert store.get(h) == data


def test_content_that_looks_like_a_zstd_frame_round_trips(tmp_path):
    store = BlobStore(tmp_path)
    data = b"\x28\xb5\x2f\xfd" + os.urandom(50)  # zstd magic, then noise
    h = store.put(data)
    assert store.path(h).read_bytes() != data  # stored as a frame: raw and frame never mix
    assert BlobStore(tmp_path).get(h) == data


def test_damaged_compressed_blob_is_reported(tmp_path):
    store = BlobStore(tmp_path)
    h = store.put(b"shoebox pixels " * 5000)
    path = store.path(h)
    packed = bytearray(path.read_bytes())
    packed[len(packed) // 2] ^= 0xFF
    path.write_bytes(bytes(packed))
    with pytest.raises(CorruptHistoryError, match="damaged"):
        BlobStore(tmp_path).get(h)


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    """Files a user gets (MTZ, reports) are readable by others as open() would make them."""
    import os

    from gonio.core.io.atomic import write_atomic

    mask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "x.mtz", b"data")
    finally:
        os.umask(mask)
    from gonio.core.io import atomic

    expected = 0o666 & ~atomic._umask()
    assert (tmp_path / "x.mtz").stat().st_mode & 0o777 == expected
    assert (tmp_path / "x.mtz").read_bytes() == b"data"
