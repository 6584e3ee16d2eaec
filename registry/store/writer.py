"""The write path: one transaction turns adds and removes into objects, segments and one commit.

A transaction holds the backend's writer context (a local directory's lock; nothing on an
object store), reads the committed root, and records its operations. Each added kernel is
written at once as an immutable object under ``kernels/<name>/@<v>.h5`` with a create-only
put: the put *is* the allocation of the version number, so a number that any object holds
is never issued again. The commit writes the changed segments and swaps the root if no one
else committed meanwhile; on a conflict (object stores only) it re-reads the root and replays
its operations on top. Only after the commit are removed objects deleted and tombstoned (and,
on an object store, receipts put for the added versions: see :func:`receipt`). A failure before
the commit deletes what the transaction wrote: the store is as it was.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._env import default_author
from .._exceptions import KregError, StoreWriteError, UnsafeFileError
from ..format.content import content_hash
from ..format.index import Edit, Segment, View, canonical, object_key
from .backend import Backend, CommitConflict, ObjectExists, ObjectMissing

#: Create-only attempts at successive version numbers before giving up (orphans are rare).
MAX_VERSION_PROBES = 64
#: Commit attempts on an object store before giving up (each after a jittered backoff). Measured
#: against SeaweedFS: with 8 processes adding at once a writer can lose a dozen CAS
#: rounds in a row, so the backoff is capped low (a slow writer must still try often) and long.
MAX_COMMIT_ATTEMPTS = 40
MAX_BACKOFF = 0.25
TOMBSTONE = b'{"format":"kreg-tombstone","version":1}\n'
RECEIPT_FORMAT = "kreg-receipt"


def tombstone_key(name: str, version: int) -> str:
    """The marker left where a removed version's object was: its number stays taken."""
    return f"kernels/{name}/@{version}.gone"


def receipt_key(name: str, version: int) -> str:
    """Where an object store keeps the receipt of a committed ``name@version``."""
    return f"kernels/{name}/@{version}.json"


def receipt(record: dict[str, Any], offset: int | None) -> bytes:
    """The receipt of a committed version: its record and where its values start.

    On an object store a pinned ``load("name@v")`` reads it and the values, two requests,
    instead of the root, a segment and the values. It is put only after the commit that added
    the version and deleted before a commit that removes it, so a receipt is never there for a
    version that was not committed (an orphan of a crashed writer has none); one missing (a
    writer killed between its commit and the receipt) only costs the reader the index path.
    """
    return json.dumps({"format": RECEIPT_FORMAT, "version": 1, "offset": offset, "record": record},
                      separators=(",", ":"), sort_keys=True).encode("utf-8")


def new_event(op: str, ref: str, **details: Any) -> dict[str, Any]:
    """An event of the history: what (``op`` on ``ref``, with ``details``), who (``by``), when
    (``at``, UTC) and from where (``host``). It is put in the segment of the name it is about,
    by the transaction whose commit makes the change, so it commits with it or not at all."""
    import socket
    from datetime import datetime, timezone

    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"op": op, "ref": ref, "by": default_author(), "at": at, "host": socket.gethostname()[:255],
            **{k: v for k, v in details.items() if v is not None}}


def object_image(record: dict[str, Any], array: np.ndarray) -> tuple[bytes, int]:
    """The bytes of a one-kernel container and where its values start, checked before use.

    The container is built in memory, so a full disk can never leave libhdf5 half way
    through a file. Before it is used, the values found at the offset HDF5 reports must hash
    to the record's sha256 (so a load that reads them there without HDF5 reads the right bytes)
    and the record attribute must read back as written.
    """
    import h5py

    from ..format.container import dataset_path, write_container

    buffer = io.BytesIO()
    write_container(buffer, "object", [(record, array)])
    image = buffer.getvalue()
    with h5py.File(io.BytesIO(image), "r") as f:
        ds = f[dataset_path(record["name"], record["version"])]
        offset, stored = ds.id.get_offset(), ds.attrs["record"]
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8")
    dtype = np.dtype(record["dtype"]).newbyteorder("<")
    nbytes = array.size * dtype.itemsize
    if offset is None or offset + nbytes > len(image) or stored != canonical(record) or content_hash(
        np.frombuffer(image, dtype, count=array.size, offset=offset).reshape(array.shape)
    ) != record["sha256"]:
        raise StoreWriteError("kreg built an object it cannot read back; nothing was written. Please report this.")
    return image, offset


class Transaction:
    """The operations of one commit (see the module docs)."""

    def __init__(self, backend: Backend, read_view: Callable[[], tuple[View, object]],
                 cache: dict[str, Segment], *, deferred: bool = False) -> None:
        self.backend = backend
        self.deferred = deferred  # a batch: make every put durable once, before the commit
        self._read_view = read_view
        self._cache = cache
        self.view, self.token = read_view()
        self.edit = Edit(self.view)
        # What this transaction did to the index, replayed on a commit conflict (each with its
        # event, so a change that commits after three conflicts still has exactly one).
        self._ops: list[Callable[[Edit], Any]] = []
        self._added: list[tuple[dict[str, Any], int | None]] = []
        self.unreceipted: list[tuple[str, int]] = []  # versions whose receipt goes before the commit
        self._placed: list[str] = []  # objects this transaction created (deleted on abort)
        self.committed = False
        self.removed: list[tuple[str, int]] = []

    # -- operations -------------------------------------------------------

    # -- reads inside a transaction ------------------------------------------
    # Without a lock (an object store), a writer that committed meanwhile may already have
    # deleted a segment the root read here names: read the root again, replay, retry.

    def _retrying(self, action: Callable[[], Any]) -> Any:
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            try:
                return action()
            except ObjectMissing:
                if attempt == MAX_COMMIT_ATTEMPTS - 1:
                    raise
                self._replay()
        raise AssertionError("unreachable")

    def versions(self, name: str) -> dict[int, tuple[list[Any], str | None]]:
        """The versions of ``name`` as this transaction sees them."""
        return self._retrying(lambda: self.edit.versions(name))

    def record(self, name: str, version: int) -> dict[str, Any]:
        """The record of ``name@version`` as this transaction sees it."""
        return self._retrying(lambda: self.edit.record(name, version))

    def apply(self, op: Callable[[Edit], Any]) -> Any:
        """Apply ``op`` (a change to the index alone: a label, a deprecation, with its event) now,
        and again on top of another writer's commit if that comes first."""
        result = self._retrying(lambda: op(self.edit))
        self._ops.append(op)
        return result

    def add(self, record: dict[str, Any], array: np.ndarray, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Place ``record`` (any version) as the next free version of its name; return the record
        stored. Its history gets an ``add`` event (``event`` adds or replaces details: a copy)."""
        name = record["name"]
        version = self._retrying(lambda: self.edit.next_version(name))
        for _ in range(MAX_VERSION_PROBES):
            stored = {**record, "version": version}
            image, offset = object_image(stored, array)
            try:
                self.backend.put(object_key(name, version), image, durable=not self.deferred)
            except ObjectExists:  # an orphan of a crashed writer, or a racing writer: that number is taken
                self._retrying(lambda: self.edit.reserve(name, version))
                version += 1
                continue
            self._placed.append(object_key(name, version))
            happened = {**new_event("add", f"{name}@{version}"), **(event or {})}

            def put(edit: Edit, stored: dict[str, Any] = stored, offset: int | None = offset) -> None:
                edit.put(stored, offset)
                edit.event(name, happened)

            self.apply(put)
            self._added.append((stored, offset))
            return stored
        raise StoreWriteError(f"{self.backend.url}: versions {version - MAX_VERSION_PROBES}..{version} of "
                              f"{name!r} are all taken by objects the index does not list. Run 'kreg fsck'.")

    def remove(self, name: str, version: int) -> None:
        happened = new_event("remove", f"{name}@{version}")

        def drop(edit: Edit) -> None:
            present = version in edit.versions(name)
            edit.drop(name, version)
            if present:  # replayed after a racing writer removed it first: its event is that writer's
                edit.event(name, happened)

        self.apply(drop)
        self.removed.append((name, version))
        self.unreceipted.append((name, version))

    # -- commit -----------------------------------------------------------

    def commit(self) -> View | None:
        """Write the segments and swap the root; returns the new committed view (or None if no change)."""
        if not self.edit.dirty:
            return None
        receipts = getattr(self.backend, "receipts", False)
        if receipts:  # before the commit: a receipt never outlives its version, nor says less than the index
            for name, version in self.unreceipted:
                try:
                    self.backend.delete(receipt_key(name, version))
                except ObjectMissing:  # some stores answer 404 for a key that is not there
                    pass
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            written: list[str] = []

            def put(key: str, data: bytes) -> None:
                self.backend.put(key, data, durable=not self.deferred)
                written.append(key)

            try:
                retire = self._delete_all if getattr(self.backend, "defers_deletes", False) else None
                root, replaced = self.edit.write(put, retire=retire)
                if self.deferred:
                    self.backend.flush()
                self.token = self.backend.commit(root, self.token)
            except CommitConflict:
                self._delete_quietly(written)
                time.sleep(min(MAX_BACKOFF, 0.01 * 2**attempt) * random.random())
                self._replay()
                continue
            except BaseException as exc:
                if getattr(exc, "committed", False):  # the root was swapped; only flushing failed
                    self.committed = True
                else:
                    self._delete_quietly(written)
                raise
            self.committed = True
            self._cache.update(self.edit.written)  # already parsed: never read back what was just written
            view = View.parse(root, self.backend.read, self._cache, where=self.backend.url)
            self._after_commit(replaced, receipts)
            return view
        raise StoreWriteError(f"{self.backend.url}: gave up after {MAX_COMMIT_ATTEMPTS} commit conflicts with "
                              "other writers; nothing was committed. Try again.")

    def abort(self) -> None:
        """Delete what this uncommitted transaction wrote (best effort: fsck finds the rest)."""
        if not self.committed:
            self._delete_quietly(self._placed)

    def _replay(self) -> None:
        built_on = self.token
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            try:
                self.view, self.token = self._read_view()
            except UnsafeFileError:  # no root, objects there: perhaps only this writer's own
                if self.backend.read_root()[0] is not None:
                    raise
                self.token = None
            if self.token is None and built_on is not None:
                # The root this change was built on is gone: the registry was deleted (or is being
                # repaired). Replaying would commit a root naming objects that may be gone too.
                raise StoreWriteError(
                    f"The index of {self.backend.url} disappeared while this change was being committed: the "
                    "registry was deleted, or is being repaired. Nothing was committed. Run the command again: "
                    "on a deleted registry it starts a new one; if kernels are still there, it says so."
                )
            self.edit = Edit(self.view)
            try:
                for op in self._ops:
                    op(self.edit)
                return
            except ObjectMissing:  # a segment of that root was replaced meanwhile (no lock): read again
                if attempt == MAX_COMMIT_ATTEMPTS - 1:
                    raise

    def _after_commit(self, replaced: list[str], receipts: bool) -> None:
        # Readers holding the old root retry when a segment or object they named is gone.
        if receipts:  # best effort: a missing receipt costs a pinned load the index path, nothing more
            for record, offset in self._added:
                if (record["name"], record["version"]) not in self.unreceipted:
                    self._put_quietly(receipt_key(record["name"], record["version"]), receipt(record, offset))
        for name, version in self.removed:
            self._put_quietly(tombstone_key(name, version), TOMBSTONE)
        self._delete_quietly([object_key(n, v) for n, v in self.removed] + replaced)

    def _put_quietly(self, key: str, data: bytes) -> None:
        try:
            self.backend.put(key, data)
        except (ObjectExists, KregError, OSError):
            pass

    def _delete_all(self, keys: list[str]) -> bool:
        """Delete ``keys``, in bulk where the backend can (one request for up to 1,000 keys);
        every key is tried, and the answer is whether all of them went."""
        many = getattr(self.backend, "delete_many", None)
        if many is not None and len(keys) > 1:
            try:
                many(keys)
            except (KregError, OSError):
                return False
            return True
        done = True
        for key in keys:
            try:
                self.backend.delete(key)
            except (KregError, OSError):
                done = False
        return done

    def _delete_quietly(self, keys: list[str]) -> None:
        """Best effort: what is left is orphans or leftovers, which fsck finds."""
        self._delete_all(keys)

