"""A registry in a local directory: create-only objects, an atomically renamed root, a lock that waits.

Every file operation goes through a :class:`~registry.store.tree.Tree`: relative to a directory
descriptor opened with ``O_NOFOLLOW``, so a symbolic link (or a FIFO, a device, a directory
where a file belongs) planted anywhere inside the store is refused, and nothing outside the
store is ever read, written or deleted. Writes go to ``tmp/``, are fsynced and read back, then hard-linked into place
(``link`` fails if the name is taken: create-only) or renamed over the root (the commit);
the directories they land in are fsynced too. Only writers holding the lock sweep ``tmp/``,
and only regular files whose names kreg itself writes.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._exceptions import InvalidKernelError, LockTimeoutError, UnsafeFileError
from .backend import CommitConflict, ObjectExists, ObjectMissing
from .tree import RDONLY, Tree, fsync_dir, lexists, read_exactly, split_key, unlink_quietly, walk, write_error

#: The root document: the commit point of the registry (format version 2).
ROOT = "index.json"
#: The registry's format marker, written once when the registry is created.
MARKER = "kreg-registry.json"
#: The index of a format-1 registry (read, and migrated on the first write).
LEGACY_INDEX = "index.h5"
LOCK = ".lock"
TMP = "tmp"
#: Every name kreg puts at the top of a registry directory.
_OWN_NAMES = {ROOT, MARKER, LEGACY_INDEX, LOCK, TMP, "index", "kernels", "attic"}
#: The names of the files kreg writes in ``tmp/``; the sweep removes nothing else.
_TMP_NAME = re.compile(r"^(put|root)-[0-9a-f]{32}\.tmp$")


class LocalBackend:
    """A registry directory on this machine (see the module docs for the rules it keeps).

    Args:
        path: the registry directory; it is created (with its parents) on the first write.
        lock_timeout: seconds a writer waits for another before :class:`LockTimeoutError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.url = str(self.path)
        self.lock_timeout = lock_timeout
        self._pending: list[str] = []  # puts made with durable=False, made durable by flush()
        self._tree = Tree(self.path, self.url)  # every file operation goes through it

    def __repr__(self) -> str:
        return f"LocalBackend({self.url!r})"

    # -- reading ----------------------------------------------------------

    def exists(self) -> bool:
        """True when a registry is here: a root, a format-1 index, or any kernel object."""
        try:
            with self._tree.root_dir() as fd:
                if any(lexists(fd, name) for name in (ROOT, LEGACY_INDEX)):
                    return True
        except ObjectMissing:
            return False
        return next(iter(self.scan("kernels")), None) is not None

    def read_root(self) -> tuple[bytes | None, object]:
        try:
            data = self.read(ROOT)
        except ObjectMissing:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def root_stamp(self) -> tuple[int, ...] | None:
        """A cheap fingerprint of the root file (no read): equal stamps, equal roots."""
        try:
            with self._tree.root_dir() as fd:
                st = os.stat(ROOT, dir_fd=fd, follow_symlinks=False)
        except (ObjectMissing, FileNotFoundError):
            return None
        except OSError as exc:
            raise self._tree.unsafe(ROOT, exc) from None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self, key: str) -> bytes:
        with self._tree.open(key) as fd:
            size = os.fstat(fd).st_size
            return read_exactly(fd, 0, size, key)

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        with self._tree.open(key) as fd:
            if offset < 0 or offset + size > os.fstat(fd).st_size:
                raise UnsafeFileError(
                    f"{self._tree.where(key)} is shorter than its index entry says ({offset} + {size} bytes); "
                    "it was truncated or replaced. Run 'kreg fsck'."
                )
            return read_exactly(fd, offset, size, key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for key, kind in self.scan(prefix):
            if kind == "file":
                yield key

    def scan(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """``(key, kind)`` for everything under ``prefix``: kind is ``file``, ``link`` or
        ``other`` (FIFOs, devices, sockets); directories are walked, never followed."""
        parts = split_key(prefix) if prefix else []
        try:
            with self._tree.dir(parts, create=False) as fd:
                yield from walk(fd, "/".join(parts))
        except ObjectMissing:
            return

    # -- writing ----------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[None]:
        """The writers' lock (waits for another writer); sweeps what a crashed writer left."""
        self._create_root()
        with self._tree.root_dir() as root:
            fd = self._tree.call(lambda: os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                                          | os.O_NONBLOCK, 0o644, dir_fd=root), LOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeFileError(f"{self._tree.where(LOCK)} is not a regular file; kreg refuses to use it as its lock.")
            _flock(fd, self.lock_timeout, self.url)
            try:
                self._sweep()
                yield
            finally:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        parts = split_key(key)
        with self._tree.dir([TMP], create=True) as tmp, self._tree.dir(parts[:-1], create=True, sync=durable) as parent:
            name = self._tree.write_tmp(tmp, "put", data, sync=durable)
            try:
                os.link(name, parts[-1], src_dir_fd=tmp, dst_dir_fd=parent, follow_symlinks=False)
            except FileExistsError:
                raise ObjectExists(f"{self._tree.where(key)} already exists.") from None
            except OSError as exc:
                raise write_error(self.url, exc) from None
            finally:
                unlink_quietly(tmp, name)
            if not durable:
                self._pending.append(key)
                return
            try:
                os.fsync(parent)
            except OSError as exc:  # the name is ours but not durable: take it back
                unlink_quietly(parent, parts[-1])
                raise write_error(self.url, exc) from None

    def flush(self) -> None:
        """Make every put with ``durable=False`` durable: one ``syncfs`` of the registry's
        filesystem where Linux offers it, else an fsync of each file and its directory."""
        pending, self._pending = self._pending, []
        dirs, self._tree.pending_dirs = self._tree.pending_dirs, []
        if not pending:
            return
        with self._tree.root_dir() as root:
            if self._tree.call(lambda: _syncfs(root), ROOT):
                return
        for key in pending:
            parts = split_key(key)
            with self._tree.dir(parts[:-1], create=False) as parent:
                fd = self._tree.call(lambda: os.open(parts[-1], RDONLY, dir_fd=parent), key)
                try:
                    self._tree.call(lambda: os.fsync(fd), key)
                finally:
                    os.close(fd)
                self._tree.call(lambda: os.fsync(parent), key)
        for where in dirs:
            with self._tree.dir(split_key(where) if where else [], create=False) as fd:
                self._tree.call(lambda: os.fsync(fd), where)

    def delete(self, key: str) -> None:
        parts = split_key(key)
        try:
            with self._tree.dir(parts[:-1], create=False) as parent:
                try:
                    st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if not stat.S_ISREG(st.st_mode):
                    raise UnsafeFileError(f"{self._tree.where(key)} is not a regular file; kreg does not delete it.")
                # No fsync: a delete that a crash undoes leaves an unreferenced file, which fsck lists.
                self._tree.call(lambda: os.unlink(parts[-1], dir_fd=parent), key)
        except ObjectMissing:
            return

    def commit(self, root: bytes, token: object) -> object:
        current, current_token = self.read_root()
        if current_token != token:
            raise CommitConflict(f"{self.url}: another writer committed first.")
        with self._tree.root_dir() as fd, self._tree.dir([TMP], create=True) as tmp:
            name = self._tree.write_tmp(tmp, "root", root)
            try:
                os.rename(name, ROOT, src_dir_fd=tmp, dst_dir_fd=fd)
            except OSError as exc:
                unlink_quietly(tmp, name)
                raise write_error(self.url, exc) from None
            # The rename is the commit; a failed fsync after it cannot be undone, only reported.
            self._tree.call(lambda: os.fsync(fd), ROOT, committed=True)
        return hashlib.sha256(root).hexdigest()

    def put_marker(self, data: bytes) -> None:
        """Under the lock, before the first write: the format marker, and an empty root when
        there is none. A root missing while objects exist then always means a lost index, never
        a first add that was killed before its commit."""
        with self._tree.root_dir() as fd:
            if lexists(fd, MARKER) and lexists(fd, ROOT):
                return
            has_root_or_legacy = lexists(fd, ROOT) or lexists(fd, LEGACY_INDEX)
        try:
            self.put(MARKER, data)
        except ObjectExists:
            pass
        if has_root_or_legacy or next(iter(self.scan("kernels")), None) is not None:
            return
        from ..format.index import empty_root

        segment_key, segment, root = empty_root()
        self.put(segment_key, segment)
        self.commit(root, None)

    def remove_legacy_index(self) -> None:
        """Drop a format-1 ``index.h5`` once its contents were committed as format 2."""
        self.delete(LEGACY_INDEX)

    def legacy_index(self) -> bytes | None:
        """The bytes of a format-1 ``index.h5``, or ``None``."""
        try:
            return self.read(LEGACY_INDEX)
        except ObjectMissing:
            return None

    # -- internals --------------------------------------------------------

    def _create_root(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise UnsafeFileError(f"The registry path {path} is a file; a registry is a directory.")
        if path.is_dir():
            stray = sorted({p.name for p in path.iterdir()} - _OWN_NAMES)
            if stray and not self.exists():
                raise InvalidKernelError(
                    f"{path} is not a kreg registry and is not empty (found {stray[:3]}). "
                    "Pass a new or empty directory."
                )
        else:
            try:
                path.mkdir(parents=True)
                fsync_dir(path.parent)
            except FileExistsError:
                pass
            except OSError as exc:
                raise write_error(self.url, exc) from None

    def _sweep(self) -> None:
        """Remove what crashed writers left in ``tmp/``: regular files with kreg's names only."""
        try:
            with self._tree.dir([TMP], create=False) as tmp:
                for entry in os.scandir(tmp):
                    if _TMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                        unlink_quietly(tmp, entry.name)
        except ObjectMissing:
            pass



def _flock(fd: int, timeout: float, url: str) -> None:
    """Take an exclusive flock, polling with a short jittered backoff (flock itself cannot time out)."""
    import fcntl
    import random

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"Another kreg process has held the lock on {url} for over {timeout:g} s. "
                    "Wait for it to finish, or raise lock_timeout."
                ) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.002)


def _syncfs(fd: int) -> bool:
    """``syncfs(2)`` on the filesystem of ``fd``; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.syncfs(fd)
    except (OSError, AttributeError):
        return False
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


