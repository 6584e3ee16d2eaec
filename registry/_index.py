"""Listing rows: the short form of a kernel record that ``list`` and ``load`` need, no values read."""

from __future__ import annotations

from typing import Any, NamedTuple

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
