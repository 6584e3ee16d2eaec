"""What a team says about versions after they are stored: labels, deprecations, and the history of every change.

A label (``stable``) is a mutable pointer from a name to one of its versions; a deprecation
retires a version without breaking those who pinned it (``load("name")`` skips it, a pinned
load warns). Both live in the index segment of their name and change with a commit like any
add, so they move by compare-and-swap; each change, like each add and remove, puts its event
(who, when, what, from where) in the same segment, so an event commits with its change or
not at all (see ``schema/FORMAT.md``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from .._exceptions import InvalidKernelError, KernelNotFoundError, ReadOnlyError, RemoteError
from ..format.index import Edit, View
from ..format.names import check_label, check_name, escape, parse_ref
from ..kernels.kernel import Kernel
from .reader import RegistryReader
from .writer import Transaction, new_event

#: The format marker a registry directory gets on its first write.
MARKER_DOCUMENT = b'{"format":"kreg-registry","version":2}\n'
#: What a new version takes from the version before it unless given (``add(inherit=False)``).
INHERITED = ("description", "tags", "license", "references", "author")
#: Longest deprecation reason kept (characters).
MAX_REASON = 500


def inherited(previous: Mapping[str, Any], given: Mapping[str, Any], values: object) -> dict[str, Any]:
    """The fields of :data:`INHERITED` that ``previous`` (a record) holds and neither ``given``
    (the metadata of an add) nor a :class:`Kernel` given as ``values`` supplies."""
    prov = previous.get("provenance") or {}
    source = values._record if isinstance(values, Kernel) else {}
    brought_prov = source.get("provenance") or {}
    held = {"description": prov.get("description"), "tags": tuple(previous.get("tags") or ()),
            "license": prov.get("license"), "references": tuple(prov.get("references") or ()),
            "author": prov.get("author")}
    brought = {"description": brought_prov.get("description"), "tags": source.get("tags"),
               "license": brought_prov.get("license"), "references": brought_prov.get("references"), "author": None}
    return {field: held[field] for field in INHERITED if held[field] and not given.get(field) and not brought[field]}


def parse_since(since: str | datetime | None) -> str | None:
    """``since`` (an ISO date or date-time; UTC unless it says) as the text events' ``at`` sorts with."""
    if since is None:
        return None
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since.strip())
        except ValueError:
            raise InvalidKernelError(f"A date is ISO 8601, e.g. 2026-12-01 or 2026-12-01T09:30. Received: "
                                     f"{escape(since[:40])}.") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")



def event_details(event: Mapping[str, Any]) -> str:
    """The details of an event of the history, in words (``label=stable source=s3://b/t``). It is
    untrusted text (it may come from a hostile bucket): escape it where it is shown."""
    return " ".join(f"{key}={event[key]}" for key in ("label", "before", "reason", "source")
                    if event.get(key) is not None)


class Curated(RegistryReader):
    """The writer's context, and labels, deprecations and history on top of the read side
    (:class:`~registry.store.registry.Registry` documents the whole)."""

    #: After :meth:`~registry.store.registry.Registry.add`: ``(ref, fields)`` when the new version
    #: took fields from ``ref``, the version before it (``kreg add`` says so), else None.
    last_inherited: tuple[str, list[str]] | None = None

    @contextmanager
    def _writing(self, *, deferred: bool = False) -> Iterator[Transaction]:
        """One transaction around the backend's writer context; joined by nested calls (batch)."""
        if self._txn is not None:
            yield self._txn
            return
        try:
            with self.backend.writer():
                if (put_marker := getattr(self.backend, "put_marker", None)) is not None:
                    put_marker(MARKER_DOCUMENT)
                txn = self._txn = Transaction(self.backend, self._state.fresh, self._state.segments,
                                              deferred=deferred)
                try:
                    yield txn
                    view = txn.commit()
                except BaseException:
                    txn.abort()
                    self._memo.clear()
                    raise
                finally:
                    self._txn = None
                if view is not None:
                    self._state.committed(view)
        except RemoteError as exc:
            # a read of this write found the store unreachable: what works offline for a reader
            # is beside the point here; that nothing was committed is not
            if getattr(exc, "committed", None) is not True and "committed" not in str(exc).lower():
                exc.args = (f"{getattr(exc, 'unreached', str(exc)).rstrip('.')}; nothing was committed.",)
            raise

    # -- labels -----------------------------------------------------------

    def label(self, ref: str, label: str, *, remove: bool = False) -> str | None:
        """Point ``label`` of a name at a version (``ref`` is ``name@version``, or a name: its
        latest), or with ``remove=True`` take the label away (``ref`` may then be the name alone).

        ``load("name@label")`` then loads that version. The move commits by compare-and-swap with
        its event, like any change. Returns the ref the label pointed at before, or None.

        Example:
            >>> import tempfile
            >>> reg = Registry(tempfile.mkdtemp(), builtins=False)  # doctest: +SKIP
            >>> _ = reg.add("team/edge", [[1.0, -1.0]])             # doctest: +SKIP
            >>> reg.label("team/edge@1", "stable"); reg.load("team/edge@stable").ref  # doctest: +SKIP
            'team/edge@1'
        """
        self._check_open()
        parsed = parse_ref(ref)
        check_label(label)
        self._refuse_builtin(parsed.name)
        with self._writing() as txn:
            def move(edit: Edit) -> int | None:
                versions = edit.versions(parsed.name)
                if remove:
                    before = edit.meta(parsed.name).get("labels", {}).get(label)
                    if before is None:
                        held = ", ".join(sorted(edit.meta(parsed.name).get("labels", {}))) or "none"
                        raise KernelNotFoundError(f"{parsed.name!r} has no label {label!r} to remove (its labels: "
                                                  f"{held}).")
                    version = None
                else:
                    version = self._version_in(edit, parsed, versions)
                    if edit.meta(parsed.name).get("labels", {}).get(label) == version:
                        return version  # already there: no change, no event
                before = edit.label(parsed.name, label, version)
                target = f"{parsed.name}@{before if version is None else version}"
                edit.event(parsed.name, new_event("unlabel" if remove else "label", target, label=label,
                                                  before=None if before is None or remove else before))
                return before

            before = txn.apply(move)
        return None if before is None else f"{parsed.name}@{before}"

    def labels(self, name: str) -> dict[str, int]:
        """The labels of ``name`` and the version each points at."""
        check_name(name)
        return self._state.read(lambda view: view.labels(name))

    # -- deprecation ------------------------------------------------------

    def deprecate(self, ref: str, reason: str = "", *, undo: bool = False) -> str:
        """Deprecate ``name@version`` (a label works too) for ``reason``, or with ``undo=True``
        take the deprecation back.

        A deprecated version still loads by its number or label, with a
        :class:`~registry.DeprecatedKernelWarning` carrying the reason; ``load("name")`` skips
        it (as a resolver skips a yanked release), and ``list`` marks it. Returns the ref.
        """
        self._check_open()
        parsed = parse_ref(ref)
        if parsed.version is None and parsed.label is None:
            raise InvalidKernelError(f"Deprecate one version: name@version or name@label. Received: {escape(ref)}.")
        text = " ".join(str(reason).split())
        if not undo and (not text or not text.isprintable() or len(text) > MAX_REASON):
            raise InvalidKernelError(f"A deprecation needs a reason of one printable line, at most {MAX_REASON} "
                                     "characters, saying what to use instead, e.g. 'sign bug, use @3'.")
        self._refuse_builtin(parsed.name)
        with self._writing() as txn:
            def mark(edit: Edit) -> int:
                version = self._version_in(edit, parsed, edit.versions(parsed.name))
                held = edit.meta(parsed.name).get("deprecated", {}).get(str(version))
                if (held is None) if undo else (held == text):
                    return version  # nothing changes: no event
                edit.deprecate(parsed.name, version, None if undo else text)
                edit.event(parsed.name, new_event("undeprecate" if undo else "deprecate",
                                                  f"{parsed.name}@{version}", reason=None if undo else text))
                return version

            version = txn.apply(mark)
            if not undo:
                txn.unreceipted.append((parsed.name, version))  # a pinned load must go by the index to warn
        return f"{parsed.name}@{version}"

    def deprecations(self, name: str) -> dict[int, str]:
        """The deprecated versions of ``name`` and why."""
        check_name(name)
        return self._state.read(lambda view: view.deprecated(name))

    # -- history ----------------------------------------------------------

    def annotations(self, name: str) -> tuple[dict[str, int], dict[int, str], list[dict[str, Any]]]:
        """The labels, the deprecations and the events (oldest first) of ``name``, from one
        committed state: one read of the store where the three calls would make three."""
        check_name(name)
        return self._state.read(lambda view: (view.labels(name), view.deprecated(name), view.events(name)))

    def history(self, pattern: str = "*", *, since: str | datetime | None = None) -> list[dict[str, Any]]:
        """The events of the names matching ``pattern`` (a name or a glob), oldest first.

        Each event is a dict: ``op`` (add, remove, label, unlabel, deprecate, undeprecate,
        copy), ``ref``, ``by`` (who), ``at`` (when, UTC), ``host`` (from where) and details
        (``label``, ``before``, ``reason``, ``source``). A name reads one index segment; a
        glob reads each segment once.

        Args:
            pattern: a kernel name, or a glob over names.
            since: only events at or after this date (ISO text or a datetime).
        """
        self._check_open()
        after = parse_since(since)
        glob = any(ch in pattern for ch in "*?[")
        if not glob:
            check_name(pattern)

        def collect(view: View) -> list[dict[str, Any]]:
            if not glob:
                return [dict(e, name=pattern) for e in view.events(pattern)]
            found = []
            for segment in view.all_segments():
                for name, facts in segment.meta.items():
                    if fnmatch.fnmatchcase(name, pattern):
                        found += [dict(e, name=name) for e in facts.get("events", ())]
            return found

        events = self._state.read(collect)
        if after is not None:
            events = [e for e in events if str(e.get("at", "")) >= after]
        events.sort(key=lambda e: str(e.get("at", "")))  # stable: one name's events keep commit order
        return events

    # -- internals --------------------------------------------------------

    def _refuse_builtin(self, name: str) -> None:
        if (self._builtins is not None and name in self._builtins
                and not self._state.read(lambda view: view.versions(name))):
            raise ReadOnlyError(f"{name!r} is a built-in kernel; built-ins take no labels or deprecations. "
                                f"Add your own version first (e.g. 'my/{name}').")

    @staticmethod
    def _version_in(edit: Edit, parsed: Any, versions: Mapping[int, Any]) -> int:
        """The version ``parsed`` names in ``edit`` (its number, its label, or the latest)."""
        if not versions:
            raise KernelNotFoundError(f"No kernel named {escape(parsed.name)}. See 'kreg list'.")
        if parsed.label is not None:
            version = edit.meta(parsed.name).get("labels", {}).get(parsed.label)
            if version is None:
                raise KernelNotFoundError(f"{parsed.name!r} has no label {parsed.label!r}.")
        else:
            version = parsed.version if parsed.version is not None else max(versions)
        if version not in versions:
            have = ", ".join(map(str, sorted(versions)))
            raise KernelNotFoundError(f"Kernel {parsed.name!r} has no version {version} (it has: {have}).")
        return int(version)
