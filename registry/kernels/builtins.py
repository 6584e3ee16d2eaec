"""The built-in kernel database: a read-only pack under every registry.

Beside the pack, ``builtin.listing.json`` holds its listing entries and the pack's sha256, so
``kreg list`` shows the built-ins without opening HDF5 (about 45 ms of a fresh process); a
listing whose hash does not match the pack beside it is ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import KernelNotFoundError
from .._paths import read_shipped
from ..format.container import parse_json
from ..format.names import Ref
from ..format.rows import KernelInfo, listing_entry
from .kernel import Kernel

if TYPE_CHECKING:
    from ..format.guard import GuardedFile

# What is read to trust the listing, at most: a FIFO, a device or a runaway file there is
# refused without waiting and the listing comes from the pack itself (far above today's
# 12 KiB listing and 150 KiB pack).
MAX_LISTING_BYTES = 16 * 2**20
MAX_PACK_BYTES = 256 * 2**20


class BuiltinLayer:
    """The kernels shipped with kreg, opened through the guarded reader on first use.

    A missing database file is an empty layer (a bare source checkout before
    ``make kernels``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: GuardedFile | None = None
        self._records: dict[str, dict[int, dict[str, Any]]] | None = None
        self._rows: dict[str, dict[int, KernelInfo]] | None = None
        self._kernels: dict[str, Kernel] = {}
        self._entries: list[str] | None = None  # listing entries of every version

    @property
    def records(self) -> dict[str, dict[int, dict[str, Any]]]:
        """name -> version -> record of every built-in."""
        if self._records is None:
            self._records = {}
            if self.path.exists():
                from ..format.guard import GuardedFile

                self._file = GuardedFile(self.path, kind="pack")
                for entry in self._file.entries.values():
                    record = entry.record
                    self._records.setdefault(record["name"], {})[record["version"]] = record
        return self._records

    @property
    def rows(self) -> dict[str, dict[int, KernelInfo]]:
        """name -> version -> listing row of every built-in."""
        if self._rows is None:
            self._rows = {
                name: {v: KernelInfo.from_record(r, builtin=True) for v, r in versions.items()}
                for name, versions in self.records.items()
            }
        return self._rows

    @property
    def listing_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".listing.json")

    def listing(self, *, all_versions: bool = False) -> list[str]:
        """Listing entries of the latest version of each built-in (or of every version)."""
        if self._entries is None:  # the pack does not change under a running process: read once
            self._entries = self._shipped_listing()
            if self._entries is None:
                self._entries = [listing_entry(info[1:]) for versions in self.rows.values()
                                 for info in versions.values()]
        entries = list(self._entries)
        if all_versions:
            return entries
        latest: dict[str, tuple[int, str]] = {}
        for entry in entries:
            _, name, version, _ = entry.split("\t", 3)
            if name not in latest or int(version) > latest[name][0]:
                latest[name] = (int(version), entry)
        return [entry for _, entry in latest.values()]

    def _shipped_listing(self) -> list[str] | None:
        try:
            shipped = parse_json(read_shipped(self.listing_path, MAX_LISTING_BYTES))
            entries = shipped["entries"]
            pack = read_shipped(self.path, MAX_PACK_BYTES)
            if shipped["pack_sha256"] != hashlib.sha256(pack).hexdigest() or not (
                    isinstance(entries, list) and all(isinstance(e, str) and e.count("\t") == 9 for e in entries)):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entries

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def get(self, ref: Ref) -> dict[str, Any] | None:
        versions = self.records.get(ref.name, {})
        if ref.version is None:
            return versions[max(versions)] if versions else None
        return versions.get(ref.version)

    def load(self, ref: Ref, *, verify: bool = True, cached: bool = True) -> Kernel:
        record = self.get(ref)
        if record is None:
            have = ", ".join(map(str, sorted(self.records.get(ref.name, ()))))
            raise KernelNotFoundError(f"Built-in kernel {ref.name!r} has no version {ref.version} (it has: {have}).")
        key = f"{record['name']}@{record['version']}"
        kernel = self._kernels.get(key) if cached else None
        if kernel is None:
            assert self._file is not None
            kernel = Kernel(record, self._file.read(self._file.entries[key], verify=verify))
            if verify and cached:
                self._kernels[key] = kernel
        return kernel

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._records, self._rows, self._entries = None, None, None, None
        self._kernels.clear()


def write_listing(layer: BuiltinLayer) -> None:
    """Write the listing beside ``layer``'s pack (``make kernels`` does, after the pack)."""
    entries = sorted(listing_entry(info[1:]) for versions in layer.rows.values() for info in versions.values())
    document = {"format": "kreg-builtin-listing", "version": 1,
                "pack_sha256": hashlib.sha256(layer.path.read_bytes()).hexdigest(), "entries": entries}
    layer.listing_path.write_text(json.dumps(document, indent=0) + "\n", encoding="utf-8")
