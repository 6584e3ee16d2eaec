"""The built-in kernel database: a read-only pack under every registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exceptions import KernelNotFoundError
from ._index import KernelInfo
from ._kernel import Kernel
from ._names import Ref


if TYPE_CHECKING:
    from ._guard import GuardedFile


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

    @property
    def records(self) -> dict[str, dict[int, dict[str, Any]]]:
        """name -> version -> record of every built-in."""
        if self._records is None:
            self._records = {}
            if self.path.exists():
                from ._guard import GuardedFile

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
        self._file, self._records, self._rows = None, None, None
        self._kernels.clear()
