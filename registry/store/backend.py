"""The storage backend interface: the few verbs a registry needs from where its bytes live.

A backend stores *immutable* objects under ``/``-separated keys and one mutable *root*
document. Everything a registry does is built from these verbs:

=====================  ==========================================================
``read_root()``        the committed root document and an opaque token for it
``read(key)``          the bytes of an object (``ObjectMissing`` when absent)
``read_range(...)``    part of an object (values read at their offset)
``put(key, data)``     create an object; ``ObjectExists`` if the key is taken
``flush()``            make puts done with ``durable=False`` durable (before a commit)
``delete(key)``        remove an object (missing is fine)
``commit(root, tok)``  replace the root if its token is still ``tok``; else ``CommitConflict``
``keys(prefix)``       every key under a prefix (for ``fsck``, never on the hot path)
=====================  ==========================================================

Two implementations fit it: a local directory (create-only by hard link, commit by an
atomic rename under a lock that waits) and an object store (create-only by
``If-None-Match: *``, commit by ``If-Match`` on the ETag, no lock at all). ``Registry``
holds a backend and never sees a path, a lock or an HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from .._exceptions import KregError


class ObjectExists(KregError, FileExistsError):
    """A create-only put found the key already taken (another writer, or an older object)."""


class ObjectMissing(KregError, FileNotFoundError):
    """An object that a committed state named is gone (a concurrent remove or a damaged store)."""


class CommitConflict(KregError, RuntimeError):
    """The root changed since it was read: read it again, redo the change, retry the commit."""


@runtime_checkable
class Backend(Protocol):
    """Where a registry's bytes live. See the module docs for the verbs' contracts."""

    #: Where the registry is, as the user would write it (a path or a URL, never secrets).
    url: str

    def exists(self) -> bool:
        """True when a registry (any format version) is here."""

    def read_root(self) -> tuple[bytes | None, object]:
        """The committed root document (``None`` when there is none yet) and its token."""

    def read(self, key: str) -> bytes:
        """The whole object at ``key``. Raises :class:`ObjectMissing`."""

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """``size`` bytes of the object at ``key`` from ``offset``. Raises :class:`ObjectMissing`."""

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Create ``key`` with ``data``, or raise :class:`ObjectExists`; never overwrite.
        With ``durable=False`` it may only be durable after :meth:`flush` (a batch's many puts)."""

    def flush(self) -> None:
        """Make every earlier ``put(..., durable=False)`` durable."""

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def commit(self, root: bytes, token: object) -> object:
        """Durably replace the root if it is still at ``token``; return the new token.

        Raises:
            CommitConflict: another writer committed first.
        """

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every object key under ``prefix`` (the root excluded)."""

    def writer(self) -> AbstractContextManager[None]:
        """Held around one write transaction: a local directory takes its lock (writers then
        never conflict); an object store returns a no-op and relies on ``commit``."""
