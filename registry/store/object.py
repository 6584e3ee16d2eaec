"""A registry on object storage (S3-compatible, GCS, Azure): create-only puts and compare-and-swap commits.

No lock and no server of kreg's own: every kernel object and index segment is written once
with ``If-None-Match: *`` (a taken key answers 412 and the writer moves on), and the root
``index.json`` is replaced with ``If-Match: <ETag it read>`` (412 means another writer
committed first: re-read, replay, retry). The client is `obstore` (the Rust ``object_store``
crate), which speaks both conditions on S3, GCS and Azure and reads each cloud's standard
environment; it is an optional extra (``pip install 'kreg[s3]'``) imported only here.

Immutable keys (``kernels/**``, ``index/**``) are read through a local cache
(:mod:`registry.store.cache`); the root is re-validated with a conditional GET (a 304 carries
no body), or not at all within the user's freshness window. Credentials come from the
environment and never appear in a message: errors name the registry's URL only.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

from .._env import env_seconds
from .._exceptions import KregError, RemoteError, StoreWriteError, UnsafeFileError
from .backend import CommitConflict, ObjectExists, ObjectMissing
from .cache import DiskCache, HeldRoot, open_cache
from .clients import (MAX_BACKOFF, cache_space, etag_matches, etag_of, make_store, token_of, update_mode,
                      wait_limits)
from .cloud_errors import _LEASED, _check_plain, _panic, _refused, _translate, not_a_store, translated

#: The root document (the commit point), as in a local registry.
ROOT = "index.json"
#: URL schemes this backend serves.
SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss")
#: Keys whose bytes never change once written: cached locally forever (by content).
_IMMUTABLE = ("kernels/", "index/")
#: A writer builds on a root confirmed this recently without re-reading it (the CAS checks it).
OPTIMISTIC_SECONDS = 300.0
#: Environment variable: seconds a validated root is trusted without asking the server.
FRESHNESS_ENV = "KREG_FRESHNESS"
#: A commit whose answer was lost: the root is read back (and the PUT sent again while the root
#: is unchanged) this many times, for at most this many seconds, before the outcome is unknown.
#: Well under ``index.RETIRE_AFTER`` (60 s): a root built on ours still names our segments.
SETTLE_ATTEMPTS = 5
SETTLE_SECONDS = 20.0


class ObjectBackend:
    """A registry under ``scheme://bucket/prefix`` (see the module docs for the protocol).

    Args:
        url: ``s3://bucket/prefix`` (also ``gs://``, ``az://``).
        freshness: seconds a root checked with the server is used again without asking
            (default: ``$KREG_FRESHNESS``, else 0: every unpinned read asks once).
        cache: the local read-through cache; ``None`` uses the platform cache directory,
            ``False`` disables it.
        retries: attempts on 5xx, throttling (429/503 SlowDown) and dropped connections.
        timeout: seconds for one request, from connecting to the last byte of its answer
            (default: ``$KREG_REQUEST_TIMEOUT``, else 10).
        operation_timeout: seconds for one request with all its retries (default:
            ``$KREG_OPERATION_TIMEOUT``, else 25).
    """

    def __init__(self, url: str, *, freshness: float | None = None, cache: DiskCache | bool | None = None,
                 retries: int = 4, timeout: float | None = None, operation_timeout: float | None = None) -> None:
        scheme, bucket, prefix = split_url(url, UnsafeFileError)
        self.url = f"{scheme}://{bucket}/{prefix}".rstrip("/")
        from .._lazy import require

        require("obstore", feature=f"The registry at {self.url}")  # names the extra: pip install 'kreg[s3]'
        self._scheme, self._bucket, self._prefix = scheme, bucket, prefix
        self.freshness = float(freshness if freshness is not None else env_seconds(FRESHNESS_ENV, 0.0))
        self.cache: DiskCache | None = open_cache() if cache is None or cache is True else (cache or None)
        self._space = cache_space(scheme, self.url)  # the cache's name for this registry
        self.stats: Counter[str] = Counter()  # requests by verb, bytes_in, bytes_out (the benchmark reads it)
        self._retries, self._limits = retries, wait_limits(timeout, operation_timeout)
        self._store: Any = None
        self._held = HeldRoot(self.cache, self._space, gcs=scheme == "gs")
        self._root_checked_now = False  # put_marker just read the root: the writer's read may reuse it
        self._first_look = True  # no root read here yet: a pinned load may use the machine's last one

    #: A committed version gets a receipt (see ``writer.receipt``): a pinned load costs two requests.
    receipts = True
    #: Replaced segments are listed in the root and deleted in bulk later, not one request each.
    defers_deletes = True

    def __repr__(self) -> str:
        return f"ObjectBackend({self.url!r})"

    def uncached(self) -> ObjectBackend:
        """This backend reading the bucket itself, never the local cache (what ``verify`` and
        ``fsck`` check is the store, not this machine's copies); its requests count here too."""
        twin = copy.copy(self)
        twin.cache = None
        twin._held = self._held.in_memory_only()
        return twin

    # -- the client -------------------------------------------------------

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = make_store(self._scheme, self._bucket, self._prefix, self._retries, self._limits, self.url)
        return self._store

    def _request(self, verb: str, call: Any, key: str, *, writing: bool = False, committing: bool = False) -> Any:
        """One HTTP request, counted; the client's errors become kreg's (never with secrets)."""
        self.stats[verb] += 1
        return translated(call, self.url, key, writing=writing, committing=committing, limits=self._limits)

    def _get(self, key: str, options: dict[str, Any] | None = None) -> tuple[bytes, dict[str, Any]]:
        """One GET: the body and the object's metadata. The body is read inside the request, so a
        connection cut while it streams is the same one-line error as any other failure."""
        import obstore as obs

        def fetch() -> tuple[bytes, dict[str, Any]]:
            result = obs.get(self.store, key, options=options)
            return bytes(result.bytes()), result.meta

        data, meta = self._request("get", fetch, key)
        if data[:64].lstrip().lower().startswith((b"<!doctype html", b"<html")):
            # No object kreg writes is a web page: a web server answering every path with its
            # page is no storage service (never "the index is damaged", whose repair would write there).
            raise not_a_store(self.url, "200 OK with a web page")
        return data, meta

    # -- reading ----------------------------------------------------------

    def exists(self) -> bool:
        if self.read_root()[0] is not None:
            return True
        return next(iter(self._pages("kernels/", 1)), None) is not None

    def read_root(self) -> tuple[bytes | None, object]:
        """The root and its ETag: from memory within the freshness window, else a conditional
        GET (304: the copy held is current)."""
        import obstore.exceptions as oe

        held = self._held.for_commit()
        self._first_look = False
        just_checked, self._root_checked_now = self._root_checked_now, False
        if held is not None and (just_checked or time.time() - held[2] < self.freshness):
            return held[0], held[1]
        options = {"if_none_match": etag_of(held[1])} if held is not None else None
        try:
            data, meta = self._get(ROOT, options)
            etag = token_of(meta)
            self.stats["bytes_in"] += len(data)
        except oe.NotModifiedError:
            assert held is not None
            data, etag = held[0], held[1]
        except ObjectMissing:
            # Gone from the server: forget it here too, or a writer would build on it (and skip
            # creating the empty root first) for the next five minutes.
            self._held.forget()
            return None, None
        self._held.remember(data, etag)
        return data, etag

    def cached_root(self, *, ask: bool = True) -> bytes | None:
        """The root a pinned ``name@v`` resolves through (:meth:`HeldRoot.for_pins`); with
        ``ask=False``, the last root this machine saw, never with a request."""
        first_look, self._first_look = self._first_look or not ask, self._first_look and not ask
        return self._held.for_pins(first_look, self.freshness, self.read_root)

    def read(self, key: str) -> bytes:
        immutable = key.startswith(_IMMUTABLE) and self.cache is not None
        if immutable:
            data = self.cache.get(self._space, key)  # type: ignore[union-attr]
            if data is not None:
                return data
        try:
            data, meta = self._get(key)
        except ObjectMissing:
            self._held.stale()  # a writer moved it: the next root read must ask the server
            raise
        self.stats["bytes_in"] += len(data)
        if not etag_matches(data, meta.get("e_tag")):
            # Damaged on the way, or an ETag that is no MD5 (SSE-KMS): fetch again; the same
            # bytes twice are what the server holds, a damaged transfer does not repeat itself.
            again = self._get(key)[0]
            self.stats["bytes_in"] += len(again)
            if again != data and not etag_matches(again, meta.get("e_tag")):
                raise RemoteError(f"{self.url}/{key}: two downloads differ and neither matches the server's "
                                  "checksum (ETag); the network damages transfers. Try again.")
            data = again
        if immutable:
            self.cache.put(self._space, key, data)  # type: ignore[union-attr]
        return data

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        import obstore as obs

        if self.cache is not None and key.startswith(_IMMUTABLE):
            data = self.read(key)  # the whole object, once: then pinned loads need no request
            if offset < 0 or offset + size > len(data):
                raise UnsafeFileError(f"{self.url}/{key} is shorter than its index entry says; run 'kreg fsck'.")
            return data[offset:offset + size]
        if size == 0:
            return b""
        data = bytes(self._request("get", lambda: obs.get_range(self.store, key, start=offset, length=size), key))
        self.stats["bytes_in"] += len(data)
        if len(data) != size:
            raise UnsafeFileError(f"{self.url}/{key} is shorter than its index entry says; run 'kreg fsck'.")
        return data

    def keys(self, prefix: str = "") -> Iterator[str]:
        for chunk in self._pages(prefix, 1000):
            for meta in chunk:
                if meta["path"] != ROOT:
                    yield meta["path"]

    def _pages(self, prefix: str, size: int) -> Iterator[list[dict[str, Any]]]:
        """Pages of a listing, each one request."""
        import obstore as obs

        stream = obs.list(self.store, prefix=prefix or None, chunk_size=size)
        while True:
            self.stats["list"] += 1
            try:
                chunk = next(stream, None)
            except Exception as exc:  # noqa: BLE001
                raise _translate(exc, self.url, writing=False, key=prefix or "/", limits=self._limits) from None
            except BaseException as exc:  # noqa: BLE001 - a Rust panic of the client (others re-raised)
                raise _panic(exc, self.url) from None
            if not chunk:
                return
            yield chunk

    # -- writing ----------------------------------------------------------

    def writer(self) -> Any:
        """No lock on an object store: commits are compare-and-swap."""
        return nullcontext()

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Create ``key`` (``If-None-Match: *``); an acknowledged PUT is durable, so ``durable`` is moot."""
        import obstore as obs
        import obstore.exceptions as oe

        try:
            _again(self, "put", key, lambda: obs.put(self.store, key, data, mode="create", use_multipart=False))
        except (oe.AlreadyExistsError, oe.PreconditionError):
            # A retried PUT whose first attempt landed also answers 412: if the bytes there are
            # ours, the put succeeded (segment keys are random; an object holds its own record).
            try:
                if self._get(key)[0] == bytes(data):
                    return
            except ObjectMissing:
                pass
            raise ObjectExists(f"{self.url}/{key} already exists.") from None
        self.stats["bytes_out"] += len(data)
        if self.cache is not None and key.startswith(_IMMUTABLE):
            self.cache.put(self._space, key, bytes(data))

    def put_marker(self, data: bytes) -> None:
        """Before the first write: make sure a root exists (see :func:`_ensure_root`)."""
        _ensure_root(self)

    def flush(self) -> None:
        """Nothing to do: an object store acknowledges a PUT once it is durable."""

    def delete(self, key: str) -> None:
        import obstore as obs

        _again(self, "delete", key, lambda: obs.delete(self.store, key))
        if self.cache is not None:
            self.cache.forget(self._space, key)

    def delete_many(self, keys: list[str]) -> None:
        """Delete ``keys`` in bulk: one request per 1,000 on S3 (DeleteObjects), per 256 on Azure."""
        import obstore as obs

        per_request = {"s3": 1000, "az": 256}.get(self._scheme, 1)
        self.stats["delete"] += max(1, -(-len(keys) // per_request)) - 1  # _request counts one
        self._request("delete", lambda: obs.delete(self.store, list(keys)), keys[0] if keys else "", writing=True)
        if self.cache is not None:
            for key in keys:
                self.cache.forget(self._space, key)

    def commit(self, root: bytes, token: object) -> object:
        """Replace the root if its ETag is still ``token`` (``If-Match``), or create it if there was
        none (``If-None-Match: *``). A 412 is a :class:`CommitConflict` unless the root there is
        ours or built on ours (a retried PUT whose first attempt landed). A request whose answer
        was lost is settled by reading the root back (see :func:`_settle`)."""
        import obstore as obs
        import obstore.exceptions as oe

        mode: Any = update_mode(str(token)) if token is not None else "create"
        lost: Exception | None = None
        started = time.monotonic()
        for attempt in range(SETTLE_ATTEMPTS):
            if attempt:
                time.sleep(0.1 * 2**attempt)
            try:
                result = self._request("put", lambda: obs.put(self.store, ROOT, root, mode=mode, use_multipart=False),
                                       ROOT, writing=True, committing=True)
            except (oe.AlreadyExistsError, oe.PreconditionError) as exc:
                if _LEASED.search(str(exc)):
                    # Azure answers 412 to any write of a leased blob: no replay can win it.
                    raise _refused(StoreWriteError(
                        f"{self.url}/{ROOT} is leased (an Azure blob lease is held on it), so no commit can "
                        f"replace it; nothing was committed. Break the lease ('az storage blob lease break "
                        f"--container-name {self._bucket} --blob-name {self._key(ROOT)}') and try again.")) from None
                outcome = _settle(self, root, token, started)
                if outcome is _UNCHANGED or outcome is _OTHER:
                    raise CommitConflict(f"{self.url}: another writer committed first.") from None
            except Exception as exc:
                if getattr(exc, "committed", None) is False:
                    raise
                lost = exc
                outcome = _settle(self, root, token, started)
                if outcome is _OTHER:  # another writer's root, not built on ours: ours never landed
                    raise CommitConflict(f"{self.url}: another writer committed first.") from None
            else:
                self.stats["bytes_out"] += len(root)
                self._held.remember(bytes(root), token_of(result))
                return token_of(result)
            if outcome is not _UNCHANGED and outcome is not _UNKNOWN:
                return outcome  # ours landed: its token (or that of a root built on it)
            if time.monotonic() - started > SETTLE_SECONDS:
                break
            # The root is still the one built on (or could not be read): the same conditional PUT
            # again is safe, it lands at most once (a landed first attempt makes it answer 412).
        raise _outcome_unknown(self.url, lost)

    def _key(self, key: str) -> str:
        """``key`` as the store names it: under the registry's prefix."""
        return f"{self._prefix}/{key}" if self._prefix else key


def split_url(url: str, error: type[Exception]) -> tuple[str, str, str]:
    """``(scheme, bucket, prefix)`` of an object-store URL, refused (as ``error``) when it is not
    plain (see ``cloud_errors._check_plain``) or names no bucket of a known scheme."""
    _check_plain(url)
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme not in SCHEMES or not bucket:
        raise error(f"Not an object-store URL: {url!r}. Expected s3://BUCKET/PREFIX (or gs://, az://).")
    return scheme, bucket, prefix.strip("/")


def _ensure_root(backend: ObjectBackend) -> None:
    """Without a lock, a root missing while kernel objects exist would be ambiguous (a first
    commit under way, or a lost index), so a new registry gets an empty root (naming one empty
    segment) before any object is put. No request when this machine has seen the root before."""
    from ..format.index import empty_root

    held = backend._held.for_commit()
    if held is not None:
        # Optimistic: a writer may build on a root confirmed lately without asking again; the
        # commit's If-Match refuses it if it moved (then the writer re-reads and replays).
        backend._root_checked_now = time.time() - held[2] < OPTIMISTIC_SECONDS
        return
    if backend.read_root()[0] is not None or backend.exists():
        backend._root_checked_now = True
        return
    key, segment, root = empty_root()
    backend.put(key, segment)
    try:
        backend.commit(root, None)
    except CommitConflict:  # another writer created it first
        backend.delete(key)


def _again(backend: ObjectBackend, verb: str, key: str, call: Any) -> None:
    """A request that is safe to send twice (a create-only PUT lands at most once, a DELETE is
    idempotent), sent again while its answer is lost and the operation limit allows: the client
    never resends a conditional PUT, and its own quick retries of a dropped connection can all
    fall within one stall of a loaded server. A 412 after a lost answer is read back by ``put``."""
    request, operation = backend._limits
    started = time.monotonic()
    for attempt in range(backend._retries + 1):
        try:
            backend._request(verb, call, key, writing=True)
            return
        except RemoteError as exc:
            pause = min(MAX_BACKOFF, 0.1 * 2**attempt)
            if (not getattr(exc, "unanswered", False) or attempt == backend._retries
                    or time.monotonic() - started + pause + request > operation):
                raise
            time.sleep(pause)


#: What reading the root back after a commit can tell (besides a token: it landed).
_UNCHANGED, _OTHER, _UNKNOWN = object(), object(), object()


def _settle(backend: ObjectBackend, root: bytes, token: object, started: float) -> object:
    """After a commit got no answer (or a 412): read the root back and say whether ``root`` landed.

    Each root names a segment key its writer just created at random, so the root there is ours
    (it landed), or one built on ours (it names every segment ours names, live or retired: a
    replaced segment stays listed for ``RETIRE_AFTER`` seconds: past ``SETTLE_SECONDS`` since the
    first PUT (``started``), this says nothing), or the root ``token`` named (nothing landed yet: the
    PUT may be sent again), or another writer's (ours never landed: replay). Returns the new
    token, or ``_UNCHANGED``, ``_OTHER``, ``_UNKNOWN``."""
    backend._held.stale()
    try:
        there, meta = backend._get(ROOT)
    except ObjectMissing:
        return _UNCHANGED if token is None else _OTHER  # a create not landed yet; else deleted meanwhile
    except KregError:
        return _UNKNOWN
    current = token_of(meta)
    if there == bytes(root):
        backend._held.remember(there, current)
        return current
    if current == token:
        return _UNCHANGED
    ours, named = _segment_keys(bytes(root)), _segment_keys(there, retired=True)
    if ours is None or named is None:
        return _UNKNOWN  # a root that cannot be read says nothing about ours
    if ours and ours <= named:
        return current
    return _OTHER if time.monotonic() - started < SETTLE_SECONDS else _UNKNOWN


def _segment_keys(data: bytes, *, retired: bool = False) -> set[str] | None:
    """The segment keys a root names (with its retired ones), or None if it is not a root."""
    try:
        document = json.loads(data)
        keys = set(document["segments"].values())
        if retired:
            keys |= set(document.get("retired") or {})
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return keys if all(isinstance(key, str) for key in keys) else None


def _outcome_unknown(url: str, lost: Exception | None) -> Exception:
    """The error when the root could not be read back in time: the commit may have landed, so
    the writer must not delete what the new root may name (uncommitted, they are orphans, which
    fsck lists)."""
    if lost is None:  # only refusals, and the root could not be read after them
        lost = RemoteError(f"{url} answered the commit with a conflict.")
    error = lost if isinstance(lost, (RemoteError, StoreWriteError)) else RemoteError(str(lost))
    error.args = ((f"{error} The commit may or may not have landed (the root could not be read back): check "
                   "with 'kreg list' before adding again."),)
    error.committed = True  # type: ignore[attr-defined]
    return error


__all__ = ["ObjectBackend", "SCHEMES"]
