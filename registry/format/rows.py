"""Listing rows: the short form of a kernel record that ``list`` and ``load`` need, no values read.

A row has two shapes. In memory it is a :class:`KernelInfo`; in an index segment's listing block
it is an *entry*, one line of tab-separated text that starts with the name's :func:`sort_key`,
so that 100,000 of them split out of the bytes, sort with ``list.sort`` and print without
building an object each (``kreg list`` at scale).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, overload

from .._exceptions import UnsafeFileError
from .names import sort_key

#: Characters of the description kept in a listing row.
SUMMARY_LENGTH = 120


class KernelInfo(NamedTuple):
    """One row of a listing: cheap to build for 100,000 kernels, no values read."""

    ref: str
    name: str
    version: int
    shape: tuple[int, ...]
    dtype: str
    layout: str
    origin: str
    summary: str
    tags: tuple[str, ...]
    sha256: str
    builtin: bool = False
    #: The labels pointing at this version, and why it is deprecated (None: it is not).
    labels: tuple[str, ...] = ()
    deprecated: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any], *, builtin: bool = False) -> KernelInfo:
        return cls.from_row(row_of(record), builtin=builtin)

    @classmethod
    def from_row(cls, row: list[Any], *, builtin: bool = False) -> KernelInfo:
        name, version, shape, dtype, layout, origin, summary, tags, sha256 = row[:9]
        return cls(f"{name}@{version}", name, version, tuple(shape), dtype, layout, origin, summary,
                   tuple(tags), sha256, builtin)


def row_of(record: dict[str, Any], *extra: Any) -> list[Any]:
    """The listing row of a record: ``[name, version, shape, dtype, layout, origin, summary,
    tags, sha256, *extra]`` (the store appends where the values start in the object)."""
    prov = record.get("provenance") or {}
    description = " ".join(str(prov.get("description", "")).split())
    return [record["name"], record["version"], list(record["shape"]), record["dtype"], record["layout"],
            prov.get("origin", ""), description[:SUMMARY_LENGTH], list(record.get("tags", [])),
            record["sha256"], *extra]


def listing_entry(row: Sequence[Any]) -> str:
    """The listing entry of a row: one line of UTF-8 text, whatever the row's summary holds.

    Its ten tab-separated fields: sort key, name, version, shape (``x``-joined), dtype, layout,
    origin, summary, tags (``,``-joined), sha256.
    """
    name, version, shape, dtype, layout, origin, summary, tags, sha256 = row[:9]
    summary = str(summary).replace("\t", " ").replace("\n", " ")  # a row's summary has none; a forged one may
    if not summary.isascii():
        summary = summary.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate
    return "\t".join((sort_key(name), name, str(version), "x".join(map(str, shape)), dtype, layout, origin,
                      summary, ",".join(tags), sha256))


def entry_info(entry: str, *, builtin: bool = False) -> KernelInfo:
    """The :class:`KernelInfo` of a listing entry; a damaged entry is an :class:`UnsafeFileError`."""
    try:
        _, name, version, shape, dtype, layout, origin, summary, tags, sha256 = entry.split("\t")
        number = int(version)
        dims = tuple(int(d) for d in shape.split("x")) if shape else ()
    except ValueError:
        raise UnsafeFileError(f"A damaged listing entry in the index: {entry[:80]!r}. Run 'kreg fsck --repair'.") from None
    return KernelInfo(f"{name}@{number}", name, number, dims, dtype, layout, origin, summary,
                      tuple(tags.split(",")) if tags else (), sha256, builtin)


def entry_name(entry: str) -> str:
    """The kernel name of a listing entry."""
    return entry.split("\t", 2)[1]


#: Columns of an entry whose widest text the root records per segment: name, version, shape,
#: dtype, layout, origin (a table of 100,000 rows then needs no pass to measure them).
WIDTHS = 6


def column_widths(entries: Iterable[str]) -> list[int]:
    """The widest text of the first :data:`WIDTHS` columns (after the sort key) of ``entries``."""
    cells = [entry.split("\t", WIDTHS + 1) for entry in entries]
    return [max(map(len, map(itemgetter(i), cells)), default=0) for i in range(1, WIDTHS + 1)]


class Listing(Sequence[KernelInfo]):
    """Listing entries in natural order, each turned into a :class:`KernelInfo` when it is read.

    ``kreg list`` formats :attr:`entries` directly: building 100,000 ``KernelInfo`` would cost
    more than reading the registry.
    """

    def __init__(self, entries: list[str], builtins: frozenset[str] | set[str] = frozenset(),
                 widths: list[int] | None = None,
                 marks: dict[str, tuple[tuple[str, ...], str | None]] | None = None) -> None:
        self.entries = entries
        self._builtins = builtins
        #: ``name@version`` -> (labels, deprecation reason or None), for the versions that have either.
        self.marks = marks or {}
        #: The widest text of each first column, when known without a pass over the rows: at
        #: least that of every entry (a shadowed or filtered-out row may have been wider).
        self.widths = widths

    @overload
    def __getitem__(self, index: int) -> KernelInfo: ...

    @overload
    def __getitem__(self, index: slice) -> list[KernelInfo]: ...

    def __getitem__(self, index: int | slice) -> KernelInfo | list[KernelInfo]:
        if isinstance(index, slice):
            return [self._info(e) for e in self.entries[index]]
        return self._info(self.entries[index])

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[KernelInfo]:
        return map(self._info, self.entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Listing):
            return self.entries == other.entries
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Listing({list(self)!r})"

    def _info(self, entry: str) -> KernelInfo:
        info = entry_info(entry, builtin=bool(self._builtins) and entry_name(entry) in self._builtins)
        mark = self.marks.get(info.ref) if self.marks else None
        return info if mark is None else info._replace(labels=mark[0], deprecated=mark[1])


def select(entries: list[str], patterns: Sequence[str], exclude: Sequence[str], tags: Sequence[str],
           origin: str | None) -> list[str]:
    """The entries whose name matches a glob of ``patterns`` and none of ``exclude``, carrying
    every tag of ``tags`` and, when given, of provenance ``origin`` (order kept)."""
    import fnmatch

    if patterns and "*" not in patterns:
        wanted = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
        entries = [e for e in entries if wanted(entry_name(e))]
    if exclude:
        unwanted = re.compile("|".join(fnmatch.translate(p) for p in exclude)).match
        entries = [e for e in entries if not unwanted(entry_name(e))]
    if tags or origin is not None:
        need = set(tags)
        kept = []
        for e in entries:
            fields = e.split("\t")
            if len(fields) == 10 and origin in (None, fields[6]) and need <= set(filter(None, fields[8].split(","))):
                kept.append(e)
        entries = kept
    return entries
