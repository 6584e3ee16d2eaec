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
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from .._env import default_author
from .._exceptions import KregError, StoreWriteError, UnsafeFileError
from ..format.content import content_hash, same_content
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


def _ref(record: dict[str, Any]) -> str:
    return f"{record['name']}@{record['version']}"


@dataclass(eq=False)
class _Put:
    """An add (or a mirror's ``placed`` record, which keeps its number) with its event."""

    record: dict[str, Any]
    offset: int | None
    event: dict[str, Any]
    placed: bool = False


@dataclass(eq=False)
class _Drop:
    """A removal with its event (its number follows an add of the same batch that was moved)."""

    name: str
    version: int
    event: dict[str, Any]

    def __call__(self, edit: Edit) -> None:
        present = self.version in edit.versions(self.name)
        edit.drop(self.name, self.version)
        if present:  # replayed after a racing writer removed it first: its event is that writer's
            edit.event(self.name, self.event)


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
        self._added: list[_Put] = []  # receipts go out for these after the commit
        self.unreceipted: list[tuple[str, int]] = []  # versions whose receipt goes before the commit
        self._placed: list[str] = []  # objects this transaction created (deleted on abort)
        self.committed = False
        self.removed: list[tuple[str, int]] = []
        self._own: set[tuple[str, int]] = set()  # numbers checked to be this transaction's (see _reissued)

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

    # -- operations -------------------------------------------------------

    def apply(self, op: Callable[[Edit], Any]) -> Any:
        """Apply ``op`` (a change to the index: a label, a deprecation, an add, with its event)
        now, and again on top of another writer's commit if that comes first."""
        result = self._retrying(lambda: op(self.edit))
        self._ops.append(op)
        return result

    def add(self, record: dict[str, Any], array: np.ndarray, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Place ``record`` (any version) as the next free version of its name; return the record
        stored (a replay may still move it, see :meth:`_reissued`: the dict is updated in place).
        Its history gets an ``add`` event (``event`` adds or replaces details)."""
        stored, offset = self._place(record, array, lambda f: self._retrying(f))
        self._apply_put(_Put(stored, offset, {**new_event("add", _ref(stored)), **(event or {})}))
        return stored

    def _apply_put(self, put: _Put) -> None:
        self.apply(lambda edit: self._put(edit, put))
        self._added.append(put)

    def _put(self, edit: Edit, put: _Put) -> None:
        """Put an add in ``edit``, first moving it off a number issued and removed meanwhile (a
        mirror's placed record is refused there instead: it keeps its number or nothing)."""
        name, version = put.record["name"], put.record["version"]
        if put.placed and version in edit.versions(name):  # another copy of the same source came first
            if not same_content(edit.record(name, version), put.record):
                raise ObjectExists(f"{_ref(put.record)} was issued there meanwhile for other content")
            if object_key(name, version) in self._placed:  # its index names our object now: never ours to delete
                self._placed.remove(object_key(name, version))
            return
        if self._reissued(name, version):
            if put.placed:
                raise ObjectExists(f"{_ref(put.record)} was issued and removed there by another writer meanwhile "
                                   "(that number stays unused there)")
            self._renumber(put)
        edit.put(put.record, put.offset)
        edit.event(put.record["name"], put.event)

    def _place(self, record: dict[str, Any], array: np.ndarray,
               step: Callable[[Callable[[], Any]], Any]) -> tuple[dict[str, Any], int]:
        """Create the object of ``record`` at the next version of its name that no object holds
        (``step`` runs each read of the edit); return the record stored and where its values start."""
        name = record["name"]
        version = step(lambda: self.edit.next_version(name))
        for _ in range(MAX_VERSION_PROBES):
            stored = {**record, "version": version}
            image, offset = object_image(stored, array)
            try:
                self.backend.put(object_key(name, version), image, durable=not self.deferred)
            except ObjectExists:  # an orphan of a crashed writer, or a racing writer: that number is taken
                step(lambda: self.edit.reserve(name, version))
                version += 1
                continue
            self._placed.append(object_key(name, version))
            return stored, offset
        raise StoreWriteError(f"{self.backend.url}: versions {version - MAX_VERSION_PROBES}..{version} of "
                              f"{name!r} are all taken by objects the index does not list. Run 'kreg fsck'.")

    def _reissued(self, name: str, version: int) -> bool:
        """Whether ``name@version``, placed on an older view, is a number the root just read had
        already issued: the view did not show it, another writer added and removed it meanwhile,
        and the removal deleted its object, so this transaction's create-only put succeeded. Only
        a number below the root's next version can be one; of those, the ones another writer
        merely skipped (our object was there) have no tombstone, a removed one has (a removal
        deletes an object only once its tombstone is written)."""
        if (name, version) in self._own:  # no writer can issue it while our object is there
            return False
        if version not in self.view.versions(name) and version >= self.view.next_version(name):
            return False
        try:
            self.backend.read(tombstone_key(name, version))
        except ObjectMissing:
            if version in self.view.versions(name):
                return True
            self._own.add((name, version))
            return False
        return True

    def _renumber(self, put: _Put) -> None:
        """Move this transaction's object of an add to the next free version (its number was
        issued and removed by another writer meanwhile: see :meth:`_reissued`). The record is
        updated in place, so the kernel its add returned names the version committed."""
        record, offset = put.record, put.offset
        name, old = record["name"], record["version"]
        image = self.backend.read(object_key(name, old))  # this machine's cache holds it: no request
        dtype = np.dtype(record["dtype"]).newbyteorder("<")
        count = int(np.prod(record["shape"], dtype=np.int64))
        array = np.frombuffer(image, dtype, count=count, offset=offset).reshape(record["shape"])
        if content_hash(array) != record["sha256"]:
            raise StoreWriteError(f"{self.backend.url}/{object_key(name, old)} does not hold the values this "
                                  "transaction wrote there; nothing was committed. Run 'kreg fsck'.")
        stored, put.offset = self._place(record, array, lambda f: f())
        self._placed.remove(object_key(name, old))
        delete_all(self.backend, [object_key(name, old)])  # ours, and no root names it
        new = record["version"] = stored["version"]
        put.event["ref"] = _ref(record)
        for drop in self._ops:  # a removal of it in the same batch follows it
            if isinstance(drop, _Drop) and (drop.name, drop.version) == (name, old):
                drop.version, drop.event["ref"] = new, _ref(record)
        for done in (self.removed, self.unreceipted):
            done[:] = [(n, new if (n, v) == (name, old) else v) for n, v in done]

    def place(self, record: dict[str, Any], array: np.ndarray, event: dict[str, Any] | None = None) -> None:
        """Put ``record`` at exactly its own version (a mirror keeps numbers; see ``store/mirror.py``).

        The caller has checked that the index neither lists that version nor has issued it.
        An object already there with these very bytes is adopted: it is this copy's own, put by
        a run that was killed before its commit (the object image is a function of the record
        and the values). Other bytes raise :class:`ObjectExists`: the number is taken."""
        key = object_key(record["name"], record["version"])
        image, offset = object_image(record, array)
        try:
            self.backend.put(key, image, durable=not self.deferred)
            self._placed.append(key)
        except ObjectExists:
            if self.backend.read(key) != image:
                raise
        self._apply_put(_Put(record, offset, {**new_event("copy", _ref(record)), **(event or {})}, placed=True))

    def reserve(self, name: str, version: int) -> None:
        """Never issue ``version`` (or below) of ``name``: a mirror keeps the source's removed numbers."""
        if self._retrying(lambda: self.edit.next_version(name)) <= version:
            self.apply(lambda edit: edit.reserve(name, version))

    def remove(self, name: str, version: int) -> None:
        self.apply(_Drop(name, version, new_event("remove", f"{name}@{version}")))
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

            root = b""
            try:
                defers = getattr(self.backend, "defers_deletes", False)
                retire = partial(delete_all, self.backend) if defers else None
                root, replaced = self.edit.write(put, retire=retire)
                if self.deferred:
                    self.backend.flush()
                self.token = self.backend.commit(root, self.token)
            except CommitConflict:
                delete_all(self.backend, written)
                time.sleep(min(MAX_BACKOFF, 0.01 * 2**attempt) * random.random())
                self._replay()
                continue
            except BaseException as exc:
                # A Ctrl-C can land after the root was swapped and before this frame learns it:
                # deleting the segments then would break the committed root. The root there says.
                if getattr(exc, "committed", False) or self._landed(root):
                    self.committed = True
                else:
                    delete_all(self.backend, written)
                raise
            self.committed = True
            self._cache.update(self.edit.written)  # already parsed: never read back what was just written
            view = View.parse(root, self.backend.read, self._cache, where=self.backend.url)
            self._after_commit(replaced, receipts)
            return view
        raise StoreWriteError(f"{self.backend.url}: gave up after {MAX_COMMIT_ATTEMPTS} commit conflicts with "
                              "other writers; nothing was committed. Try again.")

    def _landed(self, root: bytes) -> bool:
        """Whether ``root`` is the committed root now (each root is unique: its generation);
        when that cannot be read, assume it may be (what it names then stays, as orphans at worst)."""
        if not root:
            return False
        try:
            return self.backend.read_root()[0] == root
        except BaseException:  # noqa: BLE001 - unknown: keep everything
            return True

    def abort(self) -> None:
        """Delete what this uncommitted transaction wrote (best effort: fsck finds the rest)."""
        if not self.committed:
            delete_all(self.backend, self._placed)

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
            for put in self._added:
                if (put.record["name"], put.record["version"]) not in self.unreceipted:
                    put_quietly(self.backend, receipt_key(put.record["name"], put.record["version"]),
                                      receipt(put.record, put.offset))
        # A removed object goes only once its tombstone is there: then every number ever issued
        # is held by an object or a tombstone, which is what tells a writer that built on an
        # older root that the number its create-only put got is a removed one (see _reissued).
        tombstoned = [(n, v) for n, v in self.removed
                      if put_quietly(self.backend, tombstone_key(n, v), TOMBSTONE)]
        delete_all(self.backend, [object_key(n, v) for n, v in tombstoned] + replaced)


def put_quietly(backend: Backend, key: str, data: bytes) -> bool:
    """Put ``key`` if it is not there; whether it is there now (best effort: never raises)."""
    try:
        backend.put(key, data)
    except ObjectExists:
        return True
    except (KregError, OSError):
        return False
    return True


def delete_all(backend: Backend, keys: list[str]) -> bool:
    """Delete ``keys``, in bulk where the backend can (one request for up to 1,000 keys); every
    key is tried, and the answer is whether all of them went. Best effort: what is left is
    orphans or leftovers, which fsck finds."""
    many = getattr(backend, "delete_many", None)
    if many is not None and len(keys) > 1:
        try:
            many(keys)
        except (KregError, OSError):
            return False
        return True
    done = True
    for key in keys:
        try:
            backend.delete(key)
        except (KregError, OSError):
            done = False
    return done
