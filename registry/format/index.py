"""The format-2 index: a small root naming immutable segments, each holding the names of one hash range.

A name lives in the segment whose *prefix* (a string of bits) starts the bits of
``sha256(name)``; the prefixes form a complete prefix-free set, and a segment that grows past
:data:`MAX_ROWS` splits in two (extendible hashing). So resolving ``name`` or ``name@v`` reads
the root (a few KB) and one segment (at most a few thousand rows) whatever the registry's
size; listing reads every segment's listing block, nothing else; an add rewrites one segment
and the root. Segments are written once under a fresh key and never changed, so a reader
holding an old root still reads a consistent old state, and a parsed segment can be cached by
its key forever. See ``schema/FORMAT.md``.

A segment file is UTF-8 text: first the *listing block*, one line per name for its latest
version (an *entry*, tab-separated text; see :mod:`registry.format.rows`) in natural order; then a
JSON header line ``{"next": {name: n}, "rows": [row, ...]}``; then one line per row with that
kernel's full record (canonical JSON), in row order. A row is ``[name, version, shape, dtype,
layout, origin, summary, tags, sha256, offset]``, ``offset`` being where the values start in
the object (``null`` if unknown). The header is the first line that starts with ``{``; a
segment with no line before it (the layout before the listing block, or an empty segment)
lists its rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

from .._exceptions import UnsafeFileError
from .container import load_document
from .rows import WIDTHS, column_widths, listing_entry, row_of
from .segment import Segment, damaged, record_of

ROOT_FORMAT = "kreg-registry-index"
ROOT_VERSION = 2
#: Rows a segment holds before it splits in two.
MAX_ROWS = 2048
#: Longest prefix (bits of sha256(name)); past it a segment just grows.
MAX_DEPTH = 24
SEGMENT_KEY = re.compile(r"index/[0-9a-f]{32}\.json")
#: Replaced segments an object-store writer deletes in one bulk request, and how old (seconds)
#: they must be first.
RETIRE_BATCH = 16
RETIRE_AFTER = 60.0
#: Widest column a reader takes on the root's word (a name is at most 128 characters).
MAX_WIDTH = 1024
#: Largest listing block a reader reads on the root's word (bytes).
MAX_HEAD = 64 << 20


def canonical(record: dict[str, Any]) -> str:
    """The one JSON text of a record, as stored in its object and its segment line."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def name_bits(name: str, depth: int) -> str:
    """The first ``depth`` bits of ``sha256(name)`` as a string of ``0``/``1``."""
    if depth == 0:
        return ""
    value = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big")
    return format(value >> (32 - depth), f"0{depth}b")


def empty_root() -> tuple[str, bytes, bytes]:
    """``(segment key, segment bytes, root bytes)`` of a new, empty registry."""
    key = f"index/{uuid.uuid4().hex}.json"
    data = Segment(None, {}, {}).dump()
    return key, data, root_document({"": key}, {key: listing_facts(data, [])})


def root_document(segments: dict[str, str], listing: dict[str, list[int]] | None = None,
                  retired: dict[str, float] | None = None, annotated: set[str] | None = None) -> bytes:
    """The root naming ``segments`` (prefix -> key), under a fresh generation token, with what
    it knows of each segment's listing block (key -> ``[bytes, column widths...]``) and the
    replaced segments not deleted yet (key -> when they were replaced, Unix seconds)."""
    document: dict[str, Any] = {"format": ROOT_FORMAT, "version": ROOT_VERSION, "generation": uuid.uuid4().hex,
                                "segments": dict(sorted(segments.items()))}
    if listing:
        document["listing"] = {key: listing[key] for key in sorted(listing) if key in segments.values()}
    if retired:
        document["retired"] = dict(sorted(retired.items()))
    live = set(segments.values())
    if annotated and (named := sorted(annotated & live)):
        document["annotated"] = named
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


def listing_facts(data: bytes, entries: list[str]) -> list[int]:
    """What the root records of a dumped segment's listing block: its length in bytes, then the
    widths of its entries' first columns (see :func:`column_widths`)."""
    return [0 if data[:1] == b"{" else data.index(b"\n{") + 1, *column_widths(entries)]


def covers_once(segments: dict[str, Any]) -> bool:
    """Whether the prefixes of ``segments`` put every name in exactly one segment, each segment
    under one prefix: a complete prefix-free set of bit strings at most :data:`MAX_DEPTH` long,
    naming distinct keys. Overlapping prefixes would list a name twice and a gap would lose
    names; no writer makes either."""
    prefixes = sorted(segments)
    if not prefixes or len(set(segments.values())) != len(prefixes):
        return False
    if not all(len(p) <= MAX_DEPTH and set(p) <= {"0", "1"} for p in prefixes):
        return False
    # sorted, a prefix of any later string is a prefix of the one right after it
    if any(b.startswith(a) for a, b in pairwise(prefixes)):
        return False
    return sum(1 << (MAX_DEPTH - len(p)) for p in prefixes) == 1 << MAX_DEPTH  # prefix-free: no gap


def object_key(name: str, version: int) -> str:
    """Where ``name@version``'s object lives in the store."""
    return f"kernels/{name}/@{version}.h5"


class View:
    """One committed state of the index: the root, and segments fetched (and cached) on demand.

    Args:
        root: the parsed root document.
        fetch: reads a segment's bytes by key.
        cache: parsed segments by key, shared between views (keys never change meaning).
    """

    def __init__(self, root: dict[str, Any], fetch: Callable[[str], bytes], cache: dict[str, Segment],
                 *, where: str, fetch_head: Callable[[str, int], bytes] | None = None) -> None:
        self.root = root
        self.generation: str = root["generation"]
        self.segments: dict[str, str] = root["segments"]
        heads = root.get("listing")
        self.heads: dict[str, list[int]] = {
            k: facts for k, facts in heads.items()
            if isinstance(facts, list) and len(facts) == 1 + WIDTHS and all(type(n) is int and n >= 0 for n in facts)
            and facts[0] <= MAX_HEAD and max(facts[1:]) <= MAX_WIDTH
        } if isinstance(heads, dict) else {}
        retired = root.get("retired")
        live = set(self.segments.values())
        # only segment keys this root does not name: a damaged or forged root must never make a
        # writer delete a kernel or a live segment
        self.retired: dict[str, float] = {
            k: float(t) for k, t in retired.items()
            if type(t) in (int, float) and 0 <= t < 1e11 and SEGMENT_KEY.fullmatch(k) and k not in live
        } if isinstance(retired, dict) else {}
        annotated = root.get("annotated")
        # the segments holding labels or deprecations: a listing reads them whole to show both
        self.annotated: set[str] = {k for k in annotated if isinstance(k, str) and k in live} if isinstance(
            annotated, list) else set()
        self._depths = sorted({len(p) for p in self.segments})
        self._fetch = fetch
        self._fetch_head = fetch_head
        self._cache = cache
        self.where = where

    @classmethod
    def empty(cls, fetch: Callable[[str], bytes], cache: dict[str, Segment], *, where: str) -> View:
        return cls({"format": ROOT_FORMAT, "version": ROOT_VERSION, "generation": "", "segments": {"": None}},
                   fetch, cache, where=where)

    @classmethod
    def parse(cls, data: bytes, fetch: Callable[[str], bytes], cache: dict[str, Segment], *, where: str,
              fetch_head: Callable[[str, int], bytes] | None = None) -> View:
        root = load_document(data, where=where, what="index", fmt=ROOT_FORMAT, supported=ROOT_VERSION)
        segments = root.get("segments")
        if (not isinstance(segments, dict) or not isinstance(root.get("generation"), str)
                or not all(isinstance(k, str) for k in segments.values()) or not covers_once(segments)):
            raise UnsafeFileError(f"{where}: the index root is damaged. Run 'kreg fsck --repair'.")
        return cls(root, fetch, cache, where=where, fetch_head=fetch_head)

    def prefix_of(self, name: str) -> str:
        for depth in self._depths:
            prefix = name_bits(name, depth)
            if prefix in self.segments:
                return prefix
        raise UnsafeFileError(f"{self.where}: the index root covers no segment for {name!r}. Run 'kreg fsck --repair'.")

    def segment(self, prefix: str) -> Segment:
        key = self.segments[prefix]
        if key is None:
            return Segment(None, {}, {})
        return self.segment_by_key(key)

    def segment_by_key(self, key: str) -> Segment:
        segment = self._cache.get(key)
        if segment is None:
            segment = Segment.parse(key, self._fetch(key), where=self.where)
            self._cache[key] = segment
        return segment

    def segment_listing(self, prefix: str) -> list[str]:
        """The listing of one segment: its listing block alone is read when the root gives its
        length (a range read), else the whole segment."""
        key = self.segments[prefix]
        if key is None:
            return []
        if key not in self._cache and self._fetch_head is not None and key in self.heads:
            if self.heads[key][0] == 0:
                return []  # an empty segment
            head = self._cache.get(key + "#listing")
            if head is None:
                # one byte more than the block: the header's "{" proves the block is whole
                head = Segment.parse_listing(key, self._fetch_head(key, self.heads[key][0] + 1), where=self.where,
                                             most=MAX_ROWS if len(prefix) < MAX_DEPTH else None)
                self._cache[key + "#listing"] = head
            return head.listing()
        return self.segment(prefix).listing()

    def listing_widths(self) -> list[int] | None:
        """The widest text of each first column over every segment's listing, when the root
        records them for every segment (then a table needs no pass to measure its rows)."""
        keys = [key for key in self.segments.values() if key is not None]
        if self.annotated or not all(key in self.heads for key in keys):  # annotated: an entry may be older
            return None
        return [max([0, *(self.heads[key][1 + i] for key in keys)]) for i in range(WIDTHS)]

    def all_segments(self) -> Iterator[Segment]:
        for prefix in sorted(self.segments):
            yield self.segment(prefix)

    # -- lookups ----------------------------------------------------------

    def versions(self, name: str) -> dict[int, tuple[list[Any], str | None]]:
        return self.segment(self.prefix_of(name)).names.get(name, {})

    def meta(self, name: str) -> dict[str, Any]:
        """What the index says of ``name`` beyond its rows (see :attr:`Segment.meta`)."""
        return self.segment(self.prefix_of(name)).meta.get(name, {})

    def labels(self, name: str) -> dict[str, int]:
        return dict(self.meta(name).get("labels", {}))

    def deprecated(self, name: str) -> dict[int, str]:
        return {int(v): reason for v, reason in self.meta(name).get("deprecated", {}).items()}

    def events(self, name: str) -> list[dict[str, Any]]:
        return list(self.meta(name).get("events", []))

    def row(self, name: str, version: int | None) -> list[Any] | None:
        """The row of ``name@version``; of ``name``, its latest version not deprecated (the
        latest of all when every one is)."""
        versions = self.versions(name)
        if not versions:
            return None
        entry = versions.get(latest(versions, self.deprecated(name)) if version is None else version)
        return entry[0] if entry else None

    def record(self, name: str, version: int) -> dict[str, Any]:
        entry = self.versions(name).get(version)
        if entry is None or not entry[1]:
            raise UnsafeFileError(f"{self.where}: no record for {name}@{version} in the index. Run 'kreg fsck'.")
        return record_of(entry[1], where=self.where, key=self.segments[self.prefix_of(name)] or "?")

    def next_version(self, name: str) -> int:
        segment = self.segment(self.prefix_of(name))
        versions = segment.names.get(name, {})
        return max([segment.next.get(name, 1), *(v + 1 for v in versions)])

    def listing(self, *, all_versions: bool = False) -> list[str]:
        """Listing entries of every kernel's latest version (or of every version), each
        segment's run in natural order: ``list.sort`` on the whole merges the runs."""
        out: list[str] = []
        for prefix in sorted(self.segments):
            if not all_versions and self.segments[prefix] in self.annotated:
                out += annotated_listing(self.segment(prefix))
                continue
            if not all_versions:
                out += self.segment_listing(prefix)
                continue
            segment = self.segment(prefix)
            try:
                out += map(listing_entry, segment.rows())
            except (TypeError, ValueError):
                raise damaged(self.where, segment.key or "?") from None
        return out

    def marks(self) -> dict[str, tuple[tuple[str, ...], str | None]]:
        """``name@version`` -> (its labels, why it is deprecated or None), for the versions that
        have either (only the segments the root names as annotated hold any)."""
        marks: dict[str, tuple[tuple[str, ...], str | None]] = {}
        for prefix, key in self.segments.items():
            if key is None or key not in self.annotated:
                continue
            for name, facts in self.segment(prefix).meta.items():
                for label, version in facts.get("labels", {}).items():
                    held = marks.get(f"{name}@{version}", ((), None))
                    marks[f"{name}@{version}"] = (tuple(sorted((*held[0], label))), held[1])
                for version, reason in facts.get("deprecated", {}).items():
                    held = marks.get(f"{name}@{version}", ((), None))
                    marks[f"{name}@{version}"] = (held[0], reason)
        return marks

    def names(self) -> list[str]:
        return list(dict.fromkeys(row[0] for segment in self.all_segments() for row in segment.rows()))

    def __len__(self) -> int:
        return sum(len(segment) for segment in self.all_segments())


class Edit:
    """The changes of one transaction on top of a :class:`View`, turned into new segments and a root."""

    def __init__(self, base: View) -> None:
        self.base = base
        self._dirty: dict[str, Segment] = {}
        self.written: dict[str, Segment] = {}  # by :meth:`write`: key -> segment, for a reader's cache

    def _segment(self, name: str) -> Segment:
        prefix = self.base.prefix_of(name)
        if prefix not in self._dirty:
            self._dirty[prefix] = self.base.segment(prefix).copy()
        return self._dirty[prefix]

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def versions(self, name: str) -> dict[int, tuple[list[Any], str | None]]:
        prefix = self.base.prefix_of(name)
        segment = self._dirty.get(prefix) or self.base.segment(prefix)
        return segment.names.get(name, {})

    def meta(self, name: str) -> dict[str, Any]:
        """What this edit holds of ``name`` beyond its rows (see :attr:`Segment.meta`)."""
        prefix = self.base.prefix_of(name)
        segment = self._dirty.get(prefix) or self.base.segment(prefix)
        return segment.meta.get(name, {})

    def _facts(self, name: str) -> dict[str, Any]:
        facts = self._segment(name).meta.setdefault(name, {})
        for key, empty in (("labels", {}), ("deprecated", {}), ("events", [])):
            facts.setdefault(key, type(empty)())
        return facts

    def event(self, name: str, event: dict[str, Any]) -> None:
        """Record ``event`` in ``name``'s history: it commits with the change it describes."""
        self._facts(name)["events"].append(event)

    def label(self, name: str, label: str, version: int | None) -> int | None:
        """Point ``label`` of ``name`` at ``version`` (None: remove it); the version it pointed at before."""
        facts = self._facts(name)
        before = facts["labels"].get(label)
        if version is None:
            facts["labels"].pop(label, None)
        else:
            facts["labels"][label] = version
        return before

    def deprecate(self, name: str, version: int, reason: str | None) -> None:
        """Mark ``name@version`` deprecated for ``reason`` (None: no longer deprecated)."""
        facts = self._facts(name)
        if reason is None:
            facts["deprecated"].pop(str(version), None)
        else:
            facts["deprecated"][str(version)] = reason

    def record(self, name: str, version: int) -> dict[str, Any]:
        """The record of ``name@version`` as this edit holds it (put here, or committed)."""
        prefix = self.base.prefix_of(name)
        segment = self._dirty.get(prefix) or self.base.segment(prefix)
        entry = segment.names.get(name, {}).get(version)
        if entry is None or not entry[1]:
            return self.base.record(name, version)
        return record_of(entry[1], where=self.base.where, key=self.base.segments[prefix] or "?")

    def next_version(self, name: str) -> int:
        segment = self._dirty.get(self.base.prefix_of(name))
        if segment is None:
            return self.base.next_version(name)
        versions = segment.names.get(name, {})
        return max([segment.next.get(name, 1), *(v + 1 for v in versions)])

    def put(self, record: dict[str, Any], offset: int | None) -> None:
        segment = self._segment(record["name"])
        name, version = record["name"], record["version"]
        segment.names.setdefault(name, {})[version] = (row_of(record, offset), canonical(record))
        segment.next[name] = max(segment.next.get(name, 1), version + 1)

    def reserve(self, name: str, version: int) -> None:
        """Never hand out ``version`` (or below) of ``name`` again (an orphan or removed object holds it)."""
        segment = self._segment(name)
        segment.next[name] = max(segment.next.get(name, 1), version + 1)

    def drop(self, name: str, version: int) -> None:
        segment = self._segment(name)
        versions = segment.names.get(name, {})
        versions.pop(version, None)
        segment.next[name] = max(segment.next.get(name, 1), version + 1)
        if not versions:
            segment.names.pop(name, None)
        facts = segment.meta.get(name)
        if facts:  # a removed version keeps no label and no deprecation; its history stays
            facts.get("deprecated", {}).pop(str(version), None)
            for label in [k for k, v in facts.get("labels", {}).items() if v == version]:
                facts["labels"].pop(label)

    def write(self, put: Callable[[str, bytes], None], *,
              retire: Callable[[list[str]], bool] | None = None) -> tuple[bytes, list[str]]:
        """Write the changed segments (splitting big ones) with ``put``; return the new root
        document and the keys of the segments to delete once it is committed.

        With ``retire`` (an object store, where each delete is a request) the replaced segments
        are listed in the root instead, and :data:`RETIRE_BATCH` or more of them at least
        :data:`RETIRE_AFTER` seconds old are handed to ``retire`` (one bulk delete, before the
        commit: they are named by no root) and dropped from the list only if it returns True.
        An add then costs no delete, and a reader holding an older root rarely finds its
        segment gone."""
        segments = dict(self.base.segments)
        heads = dict(self.base.heads)
        annotated = set(self.base.annotated)
        replaced = []
        for prefix, segment in self._dirty.items():
            old = segments.pop(prefix)
            if old is not None:
                replaced.append(old)
            for sub_prefix, part in _split(prefix, segment):
                key = f"index/{uuid.uuid4().hex}.json"
                data = part.dump()
                put(key, data)
                heads[key] = listing_facts(data, part.listing())
                part.key = key
                self.written[key] = part
                segments[sub_prefix] = key
                if any(f.get("labels") or f.get("deprecated") for f in part.meta.values()):
                    annotated.add(key)
        if retire is None:
            return root_document(segments, heads, self.base.retired, annotated), replaced
        now = time.time()
        retired = {**self.base.retired, **dict.fromkeys(replaced, now)}
        due = [key for key, when in self.base.retired.items() if now - when >= RETIRE_AFTER]
        if len(due) >= RETIRE_BATCH and retire(due):
            retired = {key: when for key, when in retired.items() if key not in due}
        return root_document(segments, heads, retired, annotated), []


def latest(versions: dict[int, Any], deprecated: dict[int, str]) -> int:
    """The version ``name`` alone means: the highest not deprecated, as a resolver skips a
    yanked release (PEP 592); the highest of all when every one is."""
    kept = [v for v in versions if v not in deprecated]
    return max(kept or versions)


def annotated_listing(segment: Segment) -> list[str]:
    """The listing entries of a segment read whole, each name's entry being the version ``name``
    alone loads (:func:`latest`): its listing block lists the highest version, deprecated or not."""
    entries = []
    for name, versions in segment.names.items():
        deprecated = {int(v): r for v, r in segment.meta.get(name, {}).get("deprecated", {}).items()}
        entries.append(listing_entry(versions[latest(versions, deprecated)][0]))
    return sorted(entries)


def _split(prefix: str, segment: Segment) -> list[tuple[str, Segment]]:
    if len(segment) <= MAX_ROWS or len(prefix) >= MAX_DEPTH:
        return [(prefix, segment)]
    halves = {bit: Segment(None, {}, {}) for bit in "01"}
    depth = len(prefix) + 1
    for name, versions in segment.names.items():
        halves[name_bits(name, depth)[-1]].names[name] = versions
    for name, n in segment.next.items():
        halves[name_bits(name, depth)[-1]].next[name] = n
    for name, facts in segment.meta.items():
        halves[name_bits(name, depth)[-1]].meta[name] = facts
    return [part for bit in "01" for part in _split(prefix + bit, halves[bit])]
