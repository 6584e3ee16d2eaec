"""One immutable index segment: its listing block, its header and its record lines, parsed lazily.

The layout is described in :mod:`registry.format.index` and ``schema/FORMAT.md``.
"""

from __future__ import annotations

import json
from itertools import repeat
from typing import Any

from .._exceptions import UnsafeFileError
from .container import parse_json
from .rows import listing_entry


class Segment:
    """One immutable segment: its listing block, then name -> version -> (row, record line) and
    next versions.

    Nothing is parsed up front: a listing read alone splits the listing block only (a segment
    read whole lists its rows, after checking that its block says the same), a lookup parses
    the header, and the record lines are split out of the raw bytes the first time one is asked
    for.
    """

    __slots__ = ("_body", "_data", "_head", "_listing", "_meta", "_names", "_next", "_rows", "_where", "key")

    def __init__(self, key: str | None, names: dict[str, dict[int, tuple[list[Any], str | None]]] | None,
                 next_version: dict[str, int] | None, meta: dict[str, dict[str, Any]] | None = None) -> None:
        self.key = key
        self._names = names
        self._next = next_version
        self._meta = meta if meta is not None or names is None else {}
        self._data: bytes | None = None  # the raw segment, until its parts are parsed
        self._listing: list[str] | None = None
        self._rows: list[list[Any]] | None = None
        self._body = b""
        self._head = b""  # the listing block's bytes, kept once the header is parsed
        self._where = "?"

    @classmethod
    def parse(cls, key: str, data: bytes, *, where: str) -> Segment:
        segment = cls(key, None, None)
        segment._data, segment._where = bytes(data), where
        return segment

    @classmethod
    def parse_listing(cls, key: str, head: bytes, *, where: str, most: int | None = None) -> Segment:
        """A segment known by its listing block alone: ``head`` is the block and the header's
        first byte, ``{``, which proves the block whole (its length came from the root). The
        block is taken on the root's word, but never with more than ``most`` entries (the rows
        a segment holds before it splits): phantom entries cannot swell a listing past that."""
        head = bytes(head)  # a large read may come as a buffer, which compares with no bytes
        if head[-1:] != b"{" or (len(head) > 1 and head[-2:-1] != b"\n"):
            raise damaged(where, key)
        segment = cls.parse(key, head[:-1], where=where)  # the block, and no header
        entries = segment._split_block(segment._data or b"")
        if most is not None and len(entries) > most:
            raise damaged(where, key)
        segment._listing = entries
        return segment

    def _block_end(self) -> int:
        """Where the listing block of the raw bytes ends: the header is the first line that
        starts with ``{`` (an entry starts with a name's sort key, never with ``{``)."""
        data = self._data or b""
        if data[:1] == b"{":
            return 0
        end = data.find(b"\n{")
        return len(data) if end < 0 else end + 1  # no header: a read of the block alone

    def listing(self) -> list[str]:
        """The listing entries (see :mod:`registry.format.rows`) of each name's latest version, in
        natural order. A segment parsed from its listing block alone lists the block; a whole
        segment lists its rows, and a block that says anything else (entries for rows that are
        not there, rows missing) makes it damaged rather than listed."""
        if self._listing is None:
            block = self._block_bytes()
            listing = _listing_of(self.rows())
            if block and self._split_block(block) != listing:
                raise damaged(self._where, self.key or "?")
            self._listing = listing
        return self._listing

    def block_listing(self) -> list[str]:
        """The listing block as written, not compared with the rows (``kreg fsck`` compares
        it); a segment without a block (the layout before it, or an empty one) lists its rows."""
        if self._listing is not None and self._data is None and not self._head:
            return self._listing  # dumped here or parsed from the block alone: nothing else to read
        block = self._block_bytes()
        return self._split_block(block) if block else _listing_of(self.rows())

    def _block_bytes(self) -> bytes:
        return self._data[:self._block_end()] if self._data is not None else self._head

    def _split_block(self, block: bytes) -> list[str]:
        entries = block.decode("utf-8", "replace").split("\n")
        if entries.pop() != "" or set(map(str.count, entries, repeat("\t"))) - {9}:
            raise damaged(self._where, self.key or "?")  # every entry: ten fields
        return entries

    def _header(self) -> None:
        data = self._data or b""
        start = self._block_end()
        end = data.find(b"\n", start)
        if start >= len(data) or end < 0:
            raise damaged(self._where, self.key or "?")
        line, body = data[start:end], data[end + 1:]
        try:
            header = parse_json(line)
            rows, next_version = header["rows"], header["next"]
            if not isinstance(rows, list) or not isinstance(next_version, dict):
                raise ValueError("not a segment header")
            next_version = {str(k): int(v) for k, v in next_version.items()}
            meta = checked_meta(header.get("meta", {}))
        except (ValueError, KeyError, TypeError):
            raise damaged(self._where, self.key or "?") from None
        self._rows, self._next, self._body, self._meta = rows, next_version, body, meta
        self._head, self._data = data[:start], None

    @property
    def next(self) -> dict[str, int]:
        """name -> the lowest version number never handed out."""
        if self._next is None:
            self._header()
        assert self._next is not None
        return self._next

    @property
    def meta(self) -> dict[str, dict[str, Any]]:
        """name -> what the header says of it beyond its rows: ``labels`` (label -> version),
        ``deprecated`` (version, in decimal -> reason) and ``events`` (its history, oldest first)."""
        if self._meta is None:
            self._header()
        assert self._meta is not None
        return self._meta

    @property
    def names(self) -> dict[str, dict[int, tuple[list[Any], str | None]]]:
        if self._names is None:
            if self._rows is None:
                self._header()
            rows = self._rows or []
            lines = self._body.decode("utf-8", "replace").split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            if len(lines) != len(rows):
                raise damaged(self._where, self.key or "?")
            names: dict[str, dict[int, tuple[list[Any], str | None]]] = {}
            try:
                for row, line in zip(rows, lines):
                    names.setdefault(row[0], {})[row[1]] = (row, line)
            except (TypeError, IndexError):
                raise damaged(self._where, self.key or "?") from None
            self._names, self._rows, self._body = names, None, b""
        return self._names

    def rows(self) -> list[list[Any]]:
        """Every row, without splitting out the records."""
        if self._names is None:
            if self._rows is None:
                self._header()
            return self._rows or []
        return [row for versions in self._names.values() for row, _ in versions.values()]

    def dump(self) -> bytes:
        rows, lines = [], []
        for versions in self.names.values():
            for version in sorted(versions):
                row, line = versions[version]
                rows.append(row)
                lines.append(line or "")
        self._listing = _listing_of(rows)
        document: dict[str, Any] = {"next": self.next, "rows": rows}
        meta = {name: kept for name, facts in self.meta.items() if (kept := {k: v for k, v in facts.items() if v})}
        if meta:  # absent when empty: a segment without labels, deprecations or events reads as before
            document["meta"] = meta
        header = json.dumps(document, separators=(",", ":"), sort_keys=True)
        return "".join(entry + "\n" for entry in [*self._listing, header, *lines]).encode("utf-8")

    def copy(self) -> Segment:
        meta = {n: {"labels": dict(f.get("labels", {})), "deprecated": dict(f.get("deprecated", {})),
                    "events": list(f.get("events", []))} for n, f in self.meta.items()}
        return Segment(None, {n: dict(v) for n, v in self.names.items()}, dict(self.next), meta)

    def __len__(self) -> int:
        return len(self.rows())

    def listing_matches_rows(self) -> bool:
        """Whether the listing block says what the rows say (``kreg fsck`` checks it)."""
        return self.block_listing() == _listing_of(self.rows())


def _listing_of(rows: list[list[Any]]) -> list[str]:
    """The sorted listing entries of the latest version of each name among ``rows``."""
    latest: dict[str, list[Any]] = {}
    for row in rows:
        held = latest.get(row[0])
        if held is None or row[1] > held[1]:
            latest[row[0]] = row
    try:
        return sorted(listing_entry(row) for row in latest.values())
    except (TypeError, ValueError):
        raise UnsafeFileError("A damaged row in the index. Run 'kreg fsck --repair'.") from None


def checked_meta(meta: Any) -> dict[str, dict[str, Any]]:
    """The header's ``meta`` if it has the shape FORMAT.md gives it, else ``TypeError`` or
    ``ValueError``: labels name whole versions, deprecations carry text, events are objects
    with text fields."""
    if not isinstance(meta, dict):
        raise TypeError("meta is not an object")
    for facts in meta.values():
        if not isinstance(facts, dict):
            raise TypeError("meta entry is not an object")
        labels, deprecated, events = facts.get("labels", {}), facts.get("deprecated", {}), facts.get("events", [])
        if not (isinstance(labels, dict) and all(isinstance(k, str) and type(v) is int for k, v in labels.items())):
            raise ValueError("labels")
        if not (isinstance(deprecated, dict) and all(k.isdigit() and isinstance(v, str) for k, v in deprecated.items())):
            raise ValueError("deprecated")
        if not (isinstance(events, list) and all(isinstance(e, dict) and isinstance(e.get("op"), str)
                                                 and isinstance(e.get("at"), str) for e in events)):
            raise ValueError("events")
    return meta


def record_of(line: str, *, where: str, key: str) -> dict[str, Any]:
    """The record a segment's record line holds; a line that is not a JSON object (cut, forged,
    nested too deep to parse) makes the segment damaged."""
    try:
        record = parse_json(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise damaged(where, key)
    return record


def damaged(where: str, key: str) -> UnsafeFileError:
    """The error for a segment that does not parse or does not hold together."""
    return UnsafeFileError(f"{where}: the index segment {key} is damaged. Run 'kreg fsck --repair'.")
