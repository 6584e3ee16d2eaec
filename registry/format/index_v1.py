"""Reading a format-1 registry: its whole index in one ``index.h5``, turned into one format-2 segment.

A format-1 registry keeps working: it is read through this module, and the first write
migrates it (the objects stay where they are; a root and segments are written, then the old
``index.h5`` is removed). See ``schema/FORMAT.md``.
"""

from __future__ import annotations

from .._exceptions import UnsafeFileError
from .container import load_document, parse_json
from .guard import GuardedFile
from .index import Segment, canonical
from .rows import row_of

INDEX_FORMAT = "kreg-index"
INDEX_VERSION = 1
#: The cache key under which the converted format-1 index is kept.
LEGACY_KEY = "legacy/index.h5"


def legacy_segment(data: bytes, *, where: str) -> Segment:
    """The whole format-1 index at ``where`` as one in-memory segment (offsets unknown)."""
    with GuardedFile(data, kind="index", where=where) as f:
        listing, records = f.read_blob("listing"), f.read_blob("records")
    header = load_document(listing, where=where, what="index", fmt=INDEX_FORMAT, supported=INDEX_VERSION)
    names: dict[str, dict[int, tuple[list, str | None]]] = {}
    try:
        for record in parse_json(records):
            names.setdefault(record["name"], {})[record["version"]] = (row_of(record, None), canonical(record))
        next_version = {str(k): int(v) for k, v in dict(header.get("next_version", {})).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise UnsafeFileError(f"{where}: the format-1 index is damaged. Run 'kreg fsck --repair'.") from None
    return Segment(LEGACY_KEY, names, next_version)
