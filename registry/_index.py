"""The registry index: every committed record, replaced atomically as one file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._exceptions import SchemaVersionError, UnsafeFileError

INDEX_FORMAT = "kreg-index"
INDEX_VERSION = 1


class KernelInfo(NamedTuple):
    """One row of a listing: cheap to build for 100,000 kernels, no values read."""

    ref: str
    name: str
    version: int
    shape: tuple[int, ...]
    dtype: str
    layout: str
    origin: str
    description: str
    tags: tuple[str, ...]
    builtin: bool

    @classmethod
    def from_record(cls, record: dict[str, Any], *, builtin: bool = False) -> KernelInfo:
        prov = record.get("provenance") or {}
        return cls(
            f"{record['name']}@{record['version']}",
            record["name"],
            record["version"],
            tuple(record["shape"]),
            record["dtype"],
            record["layout"],
            prov.get("origin", ""),
            prov.get("description", ""),
            tuple(record.get("tags", ())),
            builtin,
        )


@dataclass
class Index:
    """Name -> version -> record, plus the next version number of each name.

    ``next_version`` outlives removals, so a removed ``name@3`` is never
    reissued with other bytes.
    """

    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    next_version: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: bytes, *, where: str) -> Index:
        try:
            data = json.loads(raw)
        except ValueError:
            raise UnsafeFileError(f"{where}: the index is not valid JSON.") from None
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise UnsafeFileError(f"{where}: not a kreg index.")
        if data.get("version", 0) > INDEX_VERSION:
            raise SchemaVersionError(
                f"{where} uses kreg index version {data.get('version')}, but this kreg reads index "
                f"versions up to {INDEX_VERSION}. Upgrade kreg (pip install -U kreg) to read it."
            )
        index = cls(next_version=dict(data["next_version"]))
        for record in data["kernels"]:
            index.records.setdefault(record["name"], {})[record["version"]] = record
        return index

    def to_json(self) -> bytes:
        kernels = [r for versions in self.records.values() for r in versions.values()]
        data = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "next_version": self.next_version,
            "kernels": kernels,
        }
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def copy(self) -> Index:
        return Index({n: dict(v) for n, v in self.records.items()}, dict(self.next_version))

    def latest(self, name: str) -> dict[str, Any] | None:
        versions = self.records.get(name)
        return versions[max(versions)] if versions else None

    def get(self, name: str, version: int | None) -> dict[str, Any] | None:
        if version is None:
            return self.latest(name)
        return self.records.get(name, {}).get(version)

    def put(self, record: dict[str, Any]) -> None:
        name, version = record["name"], record["version"]
        self.records.setdefault(name, {})[version] = record
        self.next_version[name] = max(self.next_version.get(name, 1), version + 1)

    def drop(self, name: str, version: int) -> None:
        versions = self.records[name]
        del versions[version]
        if not versions:
            del self.records[name]

    def __len__(self) -> int:
        return sum(len(v) for v in self.records.values())
