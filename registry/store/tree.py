"""A directory tree reached only through descriptors opened with ``O_NOFOLLOW``.

Every file operation is relative to a directory descriptor, walked one name at a time, so a
symbolic link (or a FIFO, a device, a directory where a file belongs) planted anywhere inside
the tree is refused, and nothing outside it is ever read, written or deleted. New files are
written to a temporary name, fsynced and read back before the caller names them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._exceptions import StoreWriteError, UnsafeFileError
from .backend import ObjectMissing

#: One path segment of a key: what kernel names, versions and kreg's own files use.
_SEGMENT = re.compile(r"^[a-z0-9@][a-z0-9_.@+-]*$")

RDONLY = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Tree:
    """The directory ``path`` (named ``url`` in messages) and what lies below it, links never followed.

    ``pending_dirs`` collects the directories made with ``sync=False``, whose parents the
    owner fsyncs later (see :meth:`registry.store.local.LocalBackend.flush`).
    """

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self.pending_dirs: list[str] = []

    @contextmanager
    def root_dir(self) -> Iterator[int]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectMissing(f"No registry at {self.url}.") from None
        except NotADirectoryError:
            raise UnsafeFileError(f"The registry path {self.url} is a file; a registry is a directory.") from None
        except OSError as exc:
            raise UnsafeFileError(f"Cannot open the registry at {self.url}: {exc.strerror}.") from None
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def dir(self, parts: list[str], *, create: bool, sync: bool = True) -> Iterator[int]:
        """A descriptor of the directory ``parts`` below the root, walked without following
        links; missing directories are made (and their parents fsynced) when ``create``."""
        with self.root_dir() as root:
            fd = os.dup(root)
        try:
            for i, part in enumerate(parts):
                where = "/".join(parts[: i + 1])
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ObjectMissing(f"{self.where(where)} does not exist.") from None
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise write_error(self.url, exc) from None
                    if sync:
                        self.call(lambda: os.fsync(fd), where)
                    else:
                        self.pending_dirs.append(where.rpartition("/")[0])
                    child = self._open_dir_at(fd, part, where)
                except OSError as exc:
                    raise self.unsafe(where, exc) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _open_dir_at(self, fd: int, part: str, where: str) -> int:
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            raise self.unsafe(where, exc) from None

    @contextmanager
    def open(self, key: str) -> Iterator[int]:
        parts = split_key(key)
        with self.dir(parts[:-1], create=False) as parent:
            try:
                fd = os.open(parts[-1], RDONLY, dir_fd=parent)
            except FileNotFoundError:
                raise ObjectMissing(f"{self.where(key)} does not exist.") from None
            except OSError as exc:
                raise self.unsafe(key, exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeFileError(
                    f"{self.where(key)} is not a regular file (a FIFO, device or directory was planted "
                    "there); kreg refuses it. Run 'kreg fsck'."
                )
            yield fd
        finally:
            os.close(fd)

    def write_tmp(self, tmp: int, kind: str, data: bytes, *, sync: bool = True) -> str:
        """Write ``data`` to a new file in ``tmp/``, fsync it (unless deferred to :meth:`flush`)
        and read it back; return its name."""
        name = f"{kind}-{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=tmp)
        except OSError as exc:
            raise write_error(self.url, exc) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fsync(fd)
                # Known good before it is named: what the disk gives back is what was meant.
                if hashlib.sha256(read_exactly(fd, 0, len(data), name)).digest() != hashlib.sha256(data).digest():
                    raise OSError(errno.EIO, "the file read back differs from what was written")
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quietly(tmp, name)
            raise write_error(self.url, exc) from None
        return name

    def call(self, call, where: str, *, committed: bool = False):  # type: ignore[no-untyped-def]
        try:
            return call()
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self.unsafe(where, exc) from None
            raise write_error(self.url, exc, committed=committed) from None

    def unsafe(self, key: str, exc: OSError) -> Exception:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return UnsafeFileError(
                f"{self.where(key)} is a symbolic link or not what kreg put there; kreg never follows "
                "links inside a registry. Remove it (see 'kreg fsck')."
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return UnsafeFileError(f"{self.where(key)}: permission denied ({exc.strerror}).")
        return UnsafeFileError(f"{self.where(key)}: {exc.strerror or exc}.")

    def where(self, key: str) -> str:
        return f"{self.url}/{key}"


def split_key(key: str) -> list[str]:
    parts = key.split("/")
    if not parts or not all(_SEGMENT.match(p) and ".." not in p for p in parts):
        raise UnsafeFileError(f"Refused store key {key!r}: not a name kreg writes.")
    return parts


def walk(fd: int, prefix: str) -> Iterator[tuple[str, str]]:
    for entry in sorted(os.scandir(fd), key=lambda e: e.name):
        key = f"{prefix}/{entry.name}" if prefix else entry.name
        if entry.is_symlink():
            yield key, "link"
        elif entry.is_dir(follow_symlinks=False):
            try:
                child = os.open(entry.name, _DIR, dir_fd=fd)
            except OSError:
                yield key, "link"
                continue
            try:
                yield from walk(child, key)
            finally:
                os.close(child)
        elif entry.is_file(follow_symlinks=False):
            yield key, "file"
        else:
            yield key, "other"


def lexists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def read_exactly(fd: int, offset: int, size: int, where: str) -> bytes:
    """``size`` bytes from ``offset``: small reads as ``bytes``, large ones straight into an
    uninitialised NumPy buffer (no zero-fill, no copy; it supports the buffer protocol)."""
    if size < 1 << 20:
        data = os.pread(fd, size, offset)
        while len(data) < size:
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                raise UnsafeFileError(f"{where}: the file ended early (it shrank while being read).")
            data += more
        return data
    import numpy as np

    buffer = np.empty(size, np.uint8)
    view = memoryview(buffer)
    done = 0
    while done < size:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise UnsafeFileError(f"{where}: the file ended early (it shrank while being read).")
        done += n
    return buffer  # type: ignore[return-value]


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(url: str, exc: OSError, *, committed: bool = False) -> StoreWriteError:
    reason = exc.strerror or str(exc)
    if committed:
        return _committed(StoreWriteError(
            f"The change to the registry at {url} was committed, but flushing it to disk failed: "
            f"{reason}. It may not survive a power loss; run 'kreg fsck' once the disk is fixed."
        ))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreWriteError(
            f"Cannot write to the registry at {url}: {reason}. It is read-only for you; "
            "use a registry you own (--db PATH or KREG_DB)."
        )
    return StoreWriteError(
        f"Could not write to the registry at {url}: {reason}. Nothing was added or removed; "
        "free space or fix the disk, then try again."
    )


def _committed(error: StoreWriteError) -> StoreWriteError:
    error.committed = True  # type: ignore[attr-defined]  # the writer must not undo a swapped root
    return error
