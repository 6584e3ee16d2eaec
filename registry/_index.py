"""The registry index: every committed record, replaced atomically as one file.

It holds three JSON blobs: a small *listing* (format, version, next version of each name),
the *rows* (one short row per kernel version: enough to list, resolve and check a load) and
the full *records*. A fresh ``kreg list`` parses only the rows; an add splices its new row and
record onto the committed bytes instead of parsing and re-encoding every record.
"""

from __future__ import annotations

import json
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
    return [record["name"], record["version"], list(record["shape"]), record["dtype"], record["layout"],
            prov.get("origin", ""), summary, list(record.get("tags", [])), record["sha256"]]


class Index:
    """Name -> version -> :class:`KernelInfo`, the full records on demand, and next versions.

    ``next_version`` outlives removals, so a removed ``name@3`` is never reissued with
    other bytes. Committed records stay as the bytes read from disk until one is asked for.
    """

    def __init__(
        self,
        rows: dict[str, dict[int, KernelInfo]] | None = None,
        next_version: dict[str, int] | None = None,
        *,
        rows_raw: bytes = b"[]",
        records_raw: bytes = b"[]",
        generation: str = "",
    ) -> None:
        self.rows = rows if rows is not None else {}
        self.generation = generation  # a fresh token per commit: equal tokens, equal contents
        self.next_version = next_version if next_version is not None else {}
        self._rows_raw, self._records_raw = rows_raw, records_raw
        self._added: list[dict[str, Any]] = []  # put since the committed bytes, in order
        self._records: dict[tuple[str, int], dict[str, Any]] | None = None  # parsed, when needed
        self._rewrite = False  # a drop happened: the blobs must be rebuilt, not spliced

    @classmethod
    def from_blobs(cls, listing: bytes, rows: bytes, records: bytes, *, where: str) -> Index:
        data = load_document(listing, where=where, what="index", fmt=INDEX_FORMAT, supported=INDEX_VERSION)
        by_name: dict[str, dict[int, KernelInfo]] = {}
        make = KernelInfo._make  # the hot loop of a fresh `kreg list`: no per-row method calls
        for name, version, shape, dtype, layout, origin, summary, tags, sha256 in json.loads(rows):
            by_name.setdefault(name, {})[version] = make(
                (f"{name}@{version}", name, version, tuple(shape), dtype, layout, origin, summary,
                 tuple(tags), sha256, False))
        return cls(by_name, dict(data["next_version"]), rows_raw=rows, records_raw=records,
                   generation=str(data.get("generation", "")))

    @staticmethod
    def generation_of(listing: bytes, *, where: str) -> str:
        """The commit token of a listing blob, without building the index."""
        data = load_document(listing, where=where, what="index", fmt=INDEX_FORMAT, supported=INDEX_VERSION)
        return str(data.get("generation", ""))

    def _all_records(self) -> dict[tuple[str, int], dict[str, Any]]:
        if self._records is None:
            self._records = {(r["name"], r["version"]): r for r in json.loads(self._records_raw)}
            self._records.update({(r["name"], r["version"]): r for r in self._added})
        return self._records

    def record(self, name: str, version: int) -> dict[str, Any]:
        """The full stored record of ``name@version`` (which must be listed)."""
        for record in reversed(self._added):
            if (record["name"], record["version"]) == (name, version):
                return record
        return self._all_records()[(name, version)]

    def to_blobs(self) -> dict[str, bytes]:
        """The ``listing``, ``rows`` and ``records`` blobs of this index, under a new generation;
        from then on this object stands for what was written."""
        import uuid

        self.generation = uuid.uuid4().hex
        listing = _dumps({"format": INDEX_FORMAT, "version": INDEX_VERSION, "generation": self.generation,
                          "next_version": self.next_version})
        if self._rewrite:
            rows_blob = _dumps([list(info[1:10]) for versions in self.rows.values() for info in versions.values()])
            records_blob = _dumps(list(self._all_records().values()))
        else:
            rows_blob = _splice(self._rows_raw, [_dumps(_row(r)) for r in self._added])
            records_blob = _splice(self._records_raw, [_dumps(r) for r in self._added])
        self._rows_raw, self._records_raw, self._added, self._rewrite = rows_blob, records_blob, [], False
        return {"listing": listing, "rows": rows_blob, "records": records_blob}

    def copy(self) -> Index:
        """A copy to edit: inner version maps are copied only when a name is touched."""
        other = Index(dict(self.rows), dict(self.next_version), rows_raw=self._rows_raw,
                      records_raw=self._records_raw, generation=self.generation)
        other._added = list(self._added)
        other._records = None if self._records is None else dict(self._records)
        other._rewrite = self._rewrite
        return other

    def latest(self, name: str) -> KernelInfo | None:
        versions = self.rows.get(name)
        return versions[max(versions)] if versions else None

    def get(self, name: str, version: int | None) -> KernelInfo | None:
        if version is None:
            return self.latest(name)
        return self.rows.get(name, {}).get(version)

    def put(self, record: dict[str, Any]) -> None:
        name, version = record["name"], record["version"]
        self.rows[name] = {**self.rows.get(name, {}), version: KernelInfo.from_record(record)}
        self._added.append(record)
        if self._records is not None:
            self._records[(name, version)] = record
        self.next_version[name] = max(self.next_version.get(name, 1), version + 1)

    def drop(self, name: str, version: int) -> None:
        records = self._all_records()
        versions = {v: info for v, info in self.rows[name].items() if v != version}
        if versions:
            self.rows[name] = versions
        else:
            del self.rows[name]
        del records[(name, version)]
        self._added = [r for r in self._added if (r["name"], r["version"]) != (name, version)]
        self._rewrite = True

    def __len__(self) -> int:
        return sum(len(v) for v in self.rows.values())


def _dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _splice(array: bytes, items: list[bytes]) -> bytes:
    """Append encoded items to the bytes of a JSON array without decoding it."""
    if not items:
        return array
    joined = b",".join(items)
    body = array.rstrip()[:-1].rstrip()  # drop the closing "]"
    return body + (b"," if body != b"[" else b"") + joined + b"]"
