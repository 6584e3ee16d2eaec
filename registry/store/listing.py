"""A listing: the index's entries and the built-ins' merged in natural order, then filtered."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from .._index import Listing, column_widths, entry_name, select
from .._names import sort_key


def merged_listing(entries: list[str], widths: list[int] | None, builtins: list[str], *, all_versions: bool,
                   pattern: str | Sequence[str], exclude: str | Sequence[str], tags: Sequence[str],
                   origin: str | None) -> Listing:
    """The registry's ``entries`` (each segment's run sorted) and the ``builtins``' in one
    natural order, a built-in shadowing a user kernel of its name, then filtered.

    Args:
        entries: the index's listing entries, in runs.
        widths: their column widths as the index records them, or None.
        builtins: the built-in layer's entries.
        all_versions: the entries are every version, not only the latest.
        pattern, exclude, tags, origin: see :meth:`Registry.list_kernels`.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)
    names = {entry_name(entry) for entry in builtins}
    if builtins:
        entries.sort()
        entries = _without_names(entries, names)
        entries += builtins
        if widths is not None:
            widths = [max(w, b) for w, b in zip(widths, column_widths(builtins))]
    entries.sort(key=_version_order if all_versions else None)
    selected = select(entries, patterns, excludes, tags, origin)
    return Listing(selected, names, widths if selected is entries else None)


def _version_order(entry: str) -> tuple[str, str, int]:
    """Sort key of an entry among every version: natural name order, then version number."""
    key, name, version, _ = entry.split("\t", 3)
    return key, name, int(version) if version.isdigit() else -1


def _without_names(entries: list[str], names: Iterable[str]) -> list[str]:
    """Sorted ``entries`` less those of ``names`` (found by bisection, not by a scan)."""
    drop: list[tuple[int, int]] = []
    for name in names:
        prefix = f"{sort_key(name)}\t{name}\t"
        start = end = bisect.bisect_left(entries, prefix)
        while end < len(entries) and entries[end].startswith(prefix):
            end += 1
        if end > start:
            drop.append((start, end))
    for start, end in sorted(drop, reverse=True):
        del entries[start:end]
    return entries
