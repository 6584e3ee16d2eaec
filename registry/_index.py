"""The registry index: every committed record, replaced atomically as one file.

It holds two JSON blobs: a compact *listing* (one short row per kernel version, enough to
list, resolve and check a load) and the full *records*, parsed only when asked for. A
fresh ``kreg list`` of 10,000 kernels thus parses about 1 MB instead of 4.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

from ._container import load_document

INDEX_FORMAT = "kreg-index"
INDEX_VERSION = 1
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
        return cls.from_row(_row(record), builtin=builtin)

    @classmethod
    def from_row(cls, row: list[Any], *, builtin: bool = False) -> KernelInfo:
        name, version, shape, dtype, layout, origin, summary, tags, sha256 = row
        return cls(f"{name}@{version}", name, version, tuple(shape), dtype, layout, origin, summary,
                   tuple(tags), sha256, builtin)


def _row(record: dict[str, Any]) -> list[Any]:
    prov = record.get("provenance") or {}
    description = prov.get("description", "").strip()
    summary = description.splitlines()[0][:SUMMARY_LENGTH] if description else ""
    return [record["name"], record["version"], record["shape"], record["dtype"], record["layout"],
            prov.get("origin", ""), summary, record.get("tags", []), record["sha256"]]


class Index:
    """Name -> version -> :class:`KernelInfo`, the full records on demand, and next versions.

    ``next_version`` outlives removals, so a removed ``name@3`` is never
    reissued with other bytes.
    """

    def __init__(
        self,
        rows: dict[str, dict[int, KernelInfo]] | None = None,
        next_version: dict[str, int] | None = None,
        records: Callable[[], bytes] | dict[tuple[str, int], dict[str, Any]] | None = None,
    ) -> None:
        self.rows = rows or {}
        self.next_version = next_version or {}
        self._records = records if records is not None else {}

    @classmethod
    def from_json(cls, listing: bytes, records: Callable[[], bytes], *, where: str) -> Index:
        data = load_document(listing, where=where, what="index", fmt=INDEX_FORMAT, supported=INDEX_VERSION)
        rows: dict[str, dict[int, KernelInfo]] = {}
        make = KernelInfo._make  # the hot loop of a fresh `kreg list`: no per-row method calls
        for name, version, shape, dtype, layout, origin, summary, tags, sha256 in data["rows"]:
            info = make((f"{name}@{version}", name, version, tuple(shape), dtype, layout, origin,
                         summary, tuple(tags), sha256, False))
            rows.setdefault(name, {})[version] = info
        return cls(rows, dict(data["next_version"]), records)

    def _all_records(self) -> dict[tuple[str, int], dict[str, Any]]:
        if callable(self._records):
            parsed = json.loads(self._records())
            self._records = {(r["name"], r["version"]): r for r in parsed}
        return self._records

    def record(self, name: str, version: int) -> dict[str, Any]:
        """The full stored record of ``name@version`` (which must be listed)."""
        return self._all_records()[(name, version)]

    def to_json(self) -> tuple[bytes, bytes]:
        """``(listing, records)`` JSON blobs."""
        records = self._all_records()
        listing = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "next_version": self.next_version,
            "rows": [list(info[1:10]) for versions in self.rows.values() for info in versions.values()],
        }
        return _dumps(listing), _dumps(list(records.values()))

    def copy(self) -> Index:
        return Index(
            {n: dict(v) for n, v in self.rows.items()}, dict(self.next_version), dict(self._all_records())
        )

    def latest(self, name: str) -> KernelInfo | None:
        versions = self.rows.get(name)
        return versions[max(versions)] if versions else None

    def get(self, name: str, version: int | None) -> KernelInfo | None:
        if version is None:
            return self.latest(name)
        return self.rows.get(name, {}).get(version)

    def put(self, record: dict[str, Any]) -> None:
        name, version = record["name"], record["version"]
        self.rows.setdefault(name, {})[version] = KernelInfo.from_record(record)
        self._all_records()[(name, version)] = record
        self.next_version[name] = max(self.next_version.get(name, 1), version + 1)

    def drop(self, name: str, version: int) -> None:
        versions = self.rows[name]
        del versions[version]
        if not versions:
            del self.rows[name]
        del self._all_records()[(name, version)]

    def __len__(self) -> int:
        return sum(len(v) for v in self.rows.values())


def _dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
