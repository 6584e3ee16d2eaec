"""The write path of a registry: the writers' lock, one transaction per commit, and the sweep.

Every write happens inside :meth:`Transactions._writing`: take the lock (waiting for other
writers), sweep what a crashed writer left, write objects, commit by renaming a new index
into place, and on any failure remove what this transaction created.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._container import fsync_path, replace_durably, write_container
from ._exceptions import InvalidKernelError, KregError, LockTimeoutError, StoreWriteError
from ._index import Index

INDEX_FILE = "index.h5"


class Transactions:
    """Mixin of :class:`registry.Registry` holding its write path.

    It uses the registry's ``path``, ``lock_timeout``, ``_index()``, ``_object_path()`` and
    caches, and keeps ``_txn`` (the open transaction) and ``_holding_lock``.
    """

    path: Path
    lock_timeout: float
    _txn: _Txn | None
    _holding_lock: bool
    _index_cache: Any
    _kernels: Any
    _cached_bytes: int

    def _index(self, *, fresh: bool = False) -> Index:  # provided by Registry
        raise NotImplementedError

    def _object_path(self, name: str, version: int) -> Path:  # provided by Registry
        raise NotImplementedError

    @contextmanager
    def _writing(self) -> Iterator[_Txn]:
        """Hold the writers' lock around one transaction and commit its index once.

        On any failure the transaction's new files and directories are removed again, so
        the registry is left as it was; an OSError becomes a :class:`StoreWriteError`.
        """
        if self._txn is not None:  # inside batch(): join it
            yield self._txn
            return
        try:
            self._prepare_directory()
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        with self._locked():
            self._sweep()
            txn = self._txn = _Txn(self._read_index_fresh())
            marker = self.path / "tmp" / f"txn-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                marker.touch()
                yield txn
                if txn.dirty:
                    self._commit(txn.index)
            except BaseException as exc:
                txn.abort()
                self._index_cache = None
                self._kernels.clear()
                self._cached_bytes = 0
                marker.unlink(missing_ok=True)
                if isinstance(exc, OSError) and not isinstance(exc, KregError):
                    raise _write_error(self.path, exc, committed=txn.committed) from None
                raise
            finally:
                self._txn = None
            for path in txn.unlink:
                path.unlink(missing_ok=True)
            marker.unlink()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import filelock  # writers only: reads never pay for the import

        lock = filelock.FileLock(self.path / ".lock", timeout=self.lock_timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeoutError(
                f"Another kreg process has held the lock on {self.path} for over "
                f"{self.lock_timeout:g} s. Wait for it to finish, or raise lock_timeout."
            ) from None
        self._holding_lock = True
        try:
            yield
        finally:
            self._holding_lock = False
            lock.release()

    def _prepare_directory(self) -> None:
        root = self.path
        if root.exists() and not root.is_dir():
            raise InvalidKernelError(f"The registry path {root} is a file; a registry is a directory.")
        if root.is_dir() and not (root / INDEX_FILE).exists():
            stray = {p.name for p in root.iterdir()} - {"kernels", "tmp", ".lock"}
            if stray:
                raise InvalidKernelError(
                    f"{root} is not a kreg registry (no {INDEX_FILE}) and is not empty "
                    f"(found {sorted(stray)[:3]}). Pass a new or empty directory."
                )
        for sub in (root, root / "kernels", root / "tmp"):
            if not sub.is_dir():
                sub.mkdir(parents=True, exist_ok=True)
                fsync_path(sub.parent)

    def _read_index_fresh(self) -> Index:
        return self._index(fresh=True).copy()

    def _write_object(self, record: dict[str, Any], array: np.ndarray) -> None:
        assert self._txn is not None
        tmp = self.path / "tmp" / f"obj-{uuid.uuid4().hex}.h5"
        self._txn.created.append(tmp)
        write_container(tmp, "object", [(record, array)])
        target = self._object_path(record["name"], record["version"])
        self._txn.created += _makedirs_durably(target.parent)
        self._txn.created.append(target)
        replace_durably(tmp, target)

    def _commit(self, index: Index) -> None:
        assert self._txn is not None
        tmp = self.path / "tmp" / f"index-{uuid.uuid4().hex}.h5"
        self._txn.created.append(tmp)
        write_container(tmp, "index", [], blobs=index.to_blobs())
        os.replace(tmp, self.path / INDEX_FILE)
        self._txn.committed = True  # from here on the new objects are referenced: never abort them
        st = os.stat(self.path / INDEX_FILE)
        self._index_cache = ((st.st_ino, st.st_mtime_ns, st.st_size), index.copy())
        fsync_path(self.path)

    def _sweep(self) -> None:
        """Under the lock: undo what a crashed writer left (tmp files, unreferenced objects)."""
        tmp = self.path / "tmp"
        leftovers = list(tmp.iterdir()) if tmp.is_dir() else []
        if not leftovers:
            return
        if any(p.name.startswith("txn-") for p in leftovers):
            index = self._read_index_fresh()
            kernels = self.path / "kernels"
            for obj in kernels.rglob("@*.h5"):
                name = obj.parent.relative_to(kernels).as_posix()
                if index.get(name, int(obj.stem[1:])) is None:
                    obj.unlink()
        for path in leftovers:
            path.unlink(missing_ok=True)

    def _sweep_if_idle(self) -> None:
        """Readers sweep leftovers too, but only when no writer is at work."""
        tmp = self.path / "tmp"
        if self._holding_lock or not tmp.is_dir() or not any(os.scandir(tmp)):
            return
        import filelock

        lock = filelock.FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except (filelock.Timeout, OSError):
            return
        try:
            self._sweep()
        finally:
            lock.release()


class _Txn:
    """The state of one write transaction: the index being edited, files to delete after commit."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.dirty = False
        self.unlink: list[Path] = []  # objects of removed versions, deleted after the commit
        self.created: list[Path] = []  # files and directories this transaction made
        self.committed = False

    def abort(self) -> None:
        """Remove what this transaction created, newest first (best effort: the sweep is the backstop)."""
        if self.committed:
            return
        for path in reversed(self.created):
            try:
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
            except OSError:
                pass


def _makedirs_durably(path: Path) -> list[Path]:
    """Create ``path`` and missing parents, fsyncing each parent; return those created."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    created = []
    for directory in reversed(missing):
        directory.mkdir()
        created.append(directory)
        fsync_path(directory.parent)
    return created


def _write_error(path: Path, exc: OSError, *, committed: bool = False) -> StoreWriteError:
    if committed:
        return StoreWriteError(
            f"The change to the registry at {path} was committed, but flushing it to disk failed: "
            f"{exc.strerror or exc}. It may not survive a power loss; run 'kreg verify' once the disk is fixed."
        )
    return StoreWriteError(
        f"Could not write to the registry at {path}: {exc.strerror or exc}. Nothing was added or "
        "removed; free space or fix the disk, then try again."
    )
