"""A listing: the index's entries and the built-ins' merged in natural order, then filtered."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ..format.names import sort_key
from ..format.rows import Listing, column_widths, entry_name, select


def merged_listing(entries: list[str], widths: list[int] | None, builtins: list[str], *, all_versions: bool,
                   pattern: str | Sequence[str], exclude: str | Sequence[str], tags: Sequence[str],
                   origin: str | None, marks: dict[str, tuple[tuple[str, ...], str | None]] | None = None) -> Listing:
    """The registry's ``entries`` (each segment's run sorted) and the ``builtins``' in one
    natural order, then filtered. A name the registry holds is the user's: it hides a built-in
    of that name (as ``load`` does; only a registry filled without the built-in layer, or
    before a release that added the built-in, can hold one).

    Args:
        entries: the index's listing entries, in runs.
        widths: their column widths as the index records them, or None.
        builtins: the built-in layer's entries.
        all_versions: the entries are every version, not only the latest.
        pattern, exclude, tags, origin: see :meth:`Registry.list_kernels`.
        marks: the labels and deprecations of the versions that have any (``View.marks``).
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)
    names: set[str] = set()
    if builtins:
        entries.sort()
        builtins = [entry for entry in builtins if not _holds(entries, entry_name(entry))]
        names = {entry_name(entry) for entry in builtins}
        entries += builtins
        if widths is not None:
            widths = [max(w, b) for w, b in zip(widths, column_widths(builtins))]
    entries.sort(key=_version_order if all_versions else None)
    selected = select(entries, patterns, excludes, tags, origin)
    return Listing(selected, names, widths if selected is entries else None, marks)


def _version_order(entry: str) -> tuple[str, str, int]:
    """Sort key of an entry among every version: natural name order, then version number."""
    key, name, version, _ = entry.split("\t", 3)
    return key, name, int(version) if version.isdigit() else -1


def _holds(entries: list[str], name: str) -> bool:
    """Whether sorted ``entries`` hold one of ``name`` (by bisection, not by a scan)."""
    prefix = f"{sort_key(name)}\t{name}\t"
    at = bisect.bisect_left(entries, prefix)
    return at < len(entries) and entries[at].startswith(prefix)
