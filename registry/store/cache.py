"""The local read-through cache of remote registries: content-addressed, hash-checked, size-capped.

Only what never changes is cached by key: kernel objects and index segments (a key is
written once and never rewritten; a removed version's number is never reissued). Bytes are
stored once under the SHA-256 of their content (``blobs/AB/ABCD...``); a key maps to that
digest (``keys/URLHASH/KEYHASH``). Every hit is re-hashed before it is returned, so a damaged
or altered entry is dropped and fetched again, never used. The last root seen per registry
is kept too (``roots/URLHASH``) with its ETag and when the server last confirmed it, so a
pinned ``name@v`` resolves offline and ``name`` costs one conditional request (or none
within the freshness window). Writes are a temporary file renamed into place, so racing
processes and a kill at any instant leave either no entry or a whole one. When the cache
grows past its cap, the least recently used blobs go first. Like the local store, the cache
follows no symbolic link (every file is reached through ``O_NOFOLLOW`` descriptors) and
removes only files named as it names them, whatever else is planted there.

Where: ``$KREG_CACHE_DIR``, else the platform's user cache directory; the cap is
``$KREG_CACHE_BYTES`` (default 2 GiB; ``0`` disables the cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .._env import env_number, env_text
from .._exceptions import RemoteError
from ..format.container import parse_json
from .tree import Tree, split_key, unlink_quietly

CACHE_DIR_ENV = "KREG_CACHE_DIR"
CACHE_BYTES_ENV = "KREG_CACHE_BYTES"
DEFAULT_BYTES = 2 * 2**30
_DIGEST = re.compile(r"[0-9a-f]{64}")
_FOLDER = re.compile(r"[0-9a-f]{2}")


class DiskCache:
    """A cache directory (see the module docs).

    Args:
        path: the directory (created on first use).
        max_bytes: the size cap of the blobs; past it the least recently used are deleted.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._tree = Tree(self.path, str(self.path))
        self._size: int | None = None  # bytes of blobs, measured once per process, then kept up to date

    def __repr__(self) -> str:
        return f"DiskCache({str(self.path)!r}, max_bytes={self.max_bytes})"

    def used_bytes(self) -> int:
        """The bytes the cached objects take now (what the cap counts)."""
        return sum(size for _, size, _ in self._blobs())

    # -- immutable objects ------------------------------------------------

    def get(self, url: str, key: str) -> bytes | None:
        """The bytes cached for ``key`` of the registry ``url``, checked against their digest; else None."""
        ref = self._ref(url, key)
        try:
            digest = self._read(ref, 128).decode("ascii").strip()
            blob = self._blob(digest)
            with self._tree.open(blob) as fd:
                with open(fd, "rb", closefd=False) as f:
                    data = f.read()
                with contextlib.suppress(OSError):
                    os.utime(fd)  # recently used: evicted last
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            # Damaged on disk (or altered): never used; the caller fetches it again.
            self._unlink(blob)
            self._unlink(ref)
            return None
        return data

    def put(self, url: str, key: str, data: bytes) -> None:
        """Keep ``data`` as the bytes of ``key``; a cache that cannot be written is simply skipped."""
        digest = hashlib.sha256(data).hexdigest()
        blob = self._blob(digest)
        try:
            if not self._exists(blob):
                self._write(blob, data)
                self._grow(len(data))
            self._write(self._ref(url, key), digest.encode("ascii"))
        except (OSError, ValueError):
            pass

    def forget(self, url: str, key: str) -> None:
        """Drop the key's mapping (its blob stays until evicted: another key may share it)."""
        self._unlink(self._ref(url, key))

    # -- the last root seen -----------------------------------------------

    def get_root(self, url: str) -> tuple[bytes, str, float] | None:
        """``(root bytes, ETag, time the server confirmed it)`` last seen for ``url``, or None."""
        try:
            head, _, body = self._read(self._root_path(url)).partition(b"\n")
            meta = parse_json(head)
            if hashlib.sha256(body).hexdigest() != meta["sha256"]:
                return None
            return body, str(meta["etag"]), float(meta["checked"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put_root(self, url: str, data: bytes, etag: str, *, checked: float | None = None) -> None:
        meta = {"etag": etag, "checked": time.time() if checked is None else checked,
                "sha256": hashlib.sha256(data).hexdigest()}
        try:
            self._write(self._root_path(url), json.dumps(meta).encode() + b"\n" + data)
        except (OSError, ValueError):
            pass

    def forget_root(self, url: str) -> None:
        """Drop the root held for ``url`` (the server said it is gone)."""
        self._unlink(self._root_path(url))

    def expire_root(self, url: str) -> None:
        """Keep the root but mark it unconfirmed: the next unpinned read asks the server."""
        held = self.get_root(url)
        if held is not None:
            self.put_root(url, held[0], held[1], checked=0.0)

    # -- internals --------------------------------------------------------

    def _space(self, url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]

    # Keys below the cache directory, every one a name kreg writes; the files are reached through
    # a ``Tree`` (descriptors walked with O_NOFOLLOW), so a link or FIFO planted in the cache is
    # refused, and nothing outside it is read, written or deleted.

    def _ref(self, url: str, key: str) -> str:
        return f"keys/{self._space(url)}/{hashlib.sha256(key.encode('utf-8')).hexdigest()}"

    def _root_path(self, url: str) -> str:
        return f"roots/{self._space(url)}"

    def _blob(self, digest: str) -> str:
        if not _DIGEST.fullmatch(digest):
            raise ValueError("not a sha256 digest")
        return f"blobs/{digest[:2]}/{digest}"

    def _read(self, key: str, limit: int = -1) -> bytes:
        with self._tree.open(key) as fd, open(fd, "rb", closefd=False) as f:
            return f.read(limit)

    def _exists(self, key: str) -> bool:
        """A regular file is there (anything else planted in its place is renamed over)."""
        *parts, name = split_key(key)
        try:
            with self._tree.dir(parts, create=False) as fd:
                return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except (OSError, ValueError):
            return False

    def _write(self, key: str, data: bytes) -> None:
        """A temporary file renamed over ``key``: racing processes see no entry or a whole one."""
        *parts, name = split_key(key)
        self.path.mkdir(parents=True, exist_ok=True)
        with self._tree.dir(parts, create=True) as parent:
            tmp = f".{name}.{uuid.uuid4().hex}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=parent)
                with open(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError:
                unlink_quietly(parent, tmp)
                raise

    def _unlink(self, key: str) -> None:
        *parts, name = split_key(key)
        try:
            with self._tree.dir(parts, create=False) as fd:
                unlink_quietly(fd, name)
        except (OSError, ValueError):
            pass

    def _grow(self, size: int) -> None:
        if self._size is None:
            self._size = sum(size for _, size, _ in self._blobs())
        else:
            self._size += size
        if self._size > self.max_bytes:
            self._evict()

    def _blobs(self) -> list[tuple[float, int, str]]:
        """``(mtime, size, digest)`` of every blob: only names kreg gives blobs, in real folders."""
        try:
            with self._tree.dir(["blobs"], create=False) as fd:
                folders = [e.name for e in os.scandir(fd) if _FOLDER.fullmatch(e.name) and not e.is_symlink()]
        except (OSError, ValueError):
            return []
        found = []
        for folder in folders:
            try:
                with self._tree.dir(["blobs", folder], create=False) as fd:
                    for entry in os.scandir(fd):
                        named = entry.name[:2] == folder and _DIGEST.fullmatch(entry.name)
                        if named and entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            found.append((st.st_mtime, st.st_size, entry.name))
            except (OSError, ValueError):
                continue  # a link or a FIFO planted where a folder belongs: not the cache's
        return found

    def _evict(self) -> None:
        """Delete least recently used blobs until the cache is under 80% of its cap."""
        entries = sorted(self._blobs())
        total = sum(size for _, size, _ in entries)
        for _, size, digest in entries:
            if total <= self.max_bytes * 0.8:
                break
            self._unlink(self._blob(digest))
            total -= size
        self._size = total


def open_cache() -> DiskCache | None:
    """The cache named by the environment, or the platform's; None when ``KREG_CACHE_BYTES=0``."""
    cap = int(env_number(CACHE_BYTES_ENV, DEFAULT_BYTES, integer=True,
                         what="a number of bytes (0 turns the cache off)"))
    if cap == 0:
        return None
    where = env_text(CACHE_DIR_ENV)
    if not where:
        import platformdirs

        where = str(platformdirs.user_cache_path("kreg", appauthor=False) / "remote")
    return DiskCache(where, max_bytes=cap)


__all__ = ["DiskCache", "open_cache"]


class HeldRoot:
    """The root this machine holds for one registry: in memory, and in the disk cache (``None``:
    memory only), with when the server last confirmed it.

    Args:
        cache: the disk cache, or ``None``.
        space: the cache's name for the registry (its URL and server).
        gcs: the store is GCS, whose commits need the generation in the token.
    """

    def __init__(self, cache: DiskCache | None, space: str, *, gcs: bool = False) -> None:
        self.cache, self.space, self.gcs = cache, space, gcs
        self.value: tuple[bytes, str, float] | None = None  # bytes, token, when the server last confirmed it

    def in_memory_only(self) -> HeldRoot:
        """A copy holding the same root that never reads or writes the disk cache."""
        twin = HeldRoot(None, self.space, gcs=self.gcs)
        twin.value = self.value
        return twin

    def remember(self, data: bytes, token: str) -> None:
        """The server confirmed ``data`` (with ``token``) just now."""
        self.value = (data, token, time.time())
        if self.cache is not None:
            self.cache.put_root(self.space, data, token)

    def last(self) -> tuple[bytes, str, float] | None:
        """The last root seen, in memory or on disk, whatever its age."""
        if self.value is None and self.cache is not None:
            self.value = self.cache.get_root(self.space)
        return self.value

    def for_pins(self, first_look: bool, freshness: float,
                 read_root: Callable[[], tuple[bytes | None, object]]) -> bytes | None:
        """The root a pinned ``name@v`` resolves through.

        On a backend's first look, the last root this machine saw, with no request: a committed
        version never changes, so a process that loads its pinned kernels at start costs nothing
        and works offline. After that, like any read, the root is checked with the server
        (``read_root``) once it is older than ``freshness``, so a long-lived Registry sees another
        machine's removal on its next call; if the server cannot be reached, the last root seen.
        """
        held = self.last()
        if held is None or first_look or time.time() - held[2] < freshness:
            return held[0] if held is not None else None
        try:
            return read_root()[0]
        except RemoteError:  # offline: pinned versions still load from what this machine holds
            return held[0]

    def for_commit(self) -> tuple[bytes, str, float] | None:
        """The root held, if its token can serve a commit. On gs:// a token without the generation
        (a cache written before tokens carried it) cannot: a commit on it is refused by the client,
        and a 304 on its ETag would keep it forever; a full read mends it."""
        held = self.last()
        if held is not None and self.gcs and "\t" not in held[1]:
            return None
        return held

    def stale(self) -> None:
        """Forget when the root was last confirmed: the next read asks the server."""
        if self.value is not None:
            self.value = (self.value[0], self.value[1], 0.0)
        if self.cache is not None:
            self.cache.expire_root(self.space)

    def forget(self) -> None:
        """The server no longer has a root: neither does this machine."""
        self.value = None
        if self.cache is not None:
            self.cache.forget_root(self.space)
