"""The local cache of remote registries on its own: content-addressed, hash-checked, size-capped."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from registry.store.cache import DiskCache


def test_entries_are_stored_by_content_hash_and_shared(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("s3://b/p", "kernels/a/@1.h5", b"same bytes")
    cache.put("s3://b/q", "index/x.json", b"same bytes")
    blobs = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in blobs] == [hashlib.sha256(b"same bytes").hexdigest()]
    assert cache.get("s3://b/q", "index/x.json") == b"same bytes"
    assert cache.get("s3://b/p", "index/x.json") is None  # keys belong to their registry


def test_a_damaged_entry_is_dropped_not_returned(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("s3://b/p", "k", b"good bytes")
    (blob,) = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    blob.write_bytes(b"evil bytes")
    assert cache.get("s3://b/p", "k") is None
    assert not blob.exists()


def test_the_cap_evicts_least_recently_used_first(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=3000)
    for i in range(3):
        cache.put("u", f"k{i}", bytes([i]) * 1000)
        old = time.time() - 100 + i
        for p in (tmp_path / "blobs").rglob("*"):
            if p.is_file() and p.read_bytes()[:1] == bytes([i]):
                os.utime(p, (old, old))
    assert cache.get("u", "k0") is not None  # k0 used again: now the most recent
    cache.put("u", "k3", b"\x03" * 1000)  # over the cap: down to 80%
    assert cache.get("u", "k1") is None and cache.get("u", "k2") is None
    assert cache.get("u", "k0") is not None and cache.get("u", "k3") is not None


def test_the_root_is_kept_with_its_etag_and_can_be_expired(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put_root("u", b'{"root":1}', '"abc"')
    data, etag, checked = cache.get_root("u")  # type: ignore[misc]
    assert (data, etag) == (b'{"root":1}', '"abc"') and time.time() - checked < 60
    cache.expire_root("u")
    assert cache.get_root("u")[2] == 0.0  # type: ignore[index]
    path = next((tmp_path / "roots").iterdir())
    path.write_bytes(path.read_bytes().replace(b'"root":1', b'"root":2'))
    assert cache.get_root("u") is None  # damaged: not used


def _plant_outside(where: Path) -> dict[Path, bytes]:
    """Five files outside the cache, two of them named as kreg names its blobs."""
    where.mkdir()
    names = ["notes.txt", "photo.jpg", "ab" + "0" * 62, "ab" + "1" * 62, "data.bin"]
    planted = {where / name: bytes([i]) * 4000 for i, name in enumerate(names)}
    for path, data in planted.items():
        path.write_bytes(data)
    return planted


def test_eviction_follows_no_link_and_removes_only_blob_names(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    outside = _plant_outside(tmp_path / "outside")
    (cache_dir / "blobs" / "cd").mkdir(parents=True)
    (cache_dir / "blobs" / "ab").symlink_to(tmp_path / "outside")  # a whole blob folder elsewhere
    (cache_dir / "blobs" / "cd" / ("cd" + "2" * 62)).symlink_to(tmp_path / "outside" / "data.bin")
    # Files kreg never names so, inside a real blob folder: the oldest and largest there are.
    foreign = {cache_dir / "blobs" / "cd" / "mine.txt": b"x" * 5000,
               cache_dir / "blobs" / "cd" / ("ef" + "3" * 62): b"y" * 5000,
               cache_dir / "blobs" / "cd" / ("cd" + "4" * 61): b"z" * 5000}
    for path, data in foreign.items():
        path.write_bytes(data)
        os.utime(path, (1, 1))
    cache = DiskCache(cache_dir, max_bytes=1000)
    for i in range(5):
        cache.put("u", f"k{i}", bytes([i]) * 600)  # each past the cap: eviction runs every time
    for path, data in {**outside, **foreign}.items():
        assert path.read_bytes() == data
    assert (cache_dir / "blobs" / "ab").is_symlink()
    assert cache.get("u", "k4") == b"\x04" * 600  # the cache still works around what it refused
    assert cache.get("u", "k0") is None  # and still evicts its own blobs


def test_a_link_planted_where_a_blob_belongs_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    target.write_bytes(b"keep me")
    data = b"the real bytes"
    digest = hashlib.sha256(data).hexdigest()
    blob = tmp_path / "cache" / "blobs" / digest[:2] / digest
    blob.parent.mkdir(parents=True)
    blob.symlink_to(target)
    cache = DiskCache(tmp_path / "cache")
    cache.put("u", "k", data)
    assert cache.get("u", "k") == data and not blob.is_symlink()
    assert target.read_bytes() == b"keep me"
