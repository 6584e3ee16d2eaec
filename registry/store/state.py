"""What a Registry keeps in memory about its store: the committed state and the kernels it loaded.

:class:`Committed` holds the parsed root (re-read only when the root changed), every segment
parsed so far (by key: a key never changes meaning), and the read loop that retries when a
writer moved what a reader was reading. :class:`KernelMemo` keeps recently loaded kernels,
capped by their bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._exceptions import IntegrityError, UnsafeFileError
from ..format.index import ROOT_FORMAT, Segment, View
from ..kernels.kernel import Kernel
from .backend import Backend, ObjectMissing

#: Times a reader re-reads the root when a concurrent writer moved what it was reading.
READ_ATTEMPTS = 8


class Committed:
    """The committed state of one backend, as this process last read it."""

    def __init__(self, backend: Backend, url: str) -> None:
        self.backend = backend
        self.url = url
        self.segments: dict[str, Segment] = {}  # parsed segments by key: keys never change meaning
        self._cached: tuple[object, View] | None = None

    def view(self, *, fresh: bool = False) -> View:
        """The committed state; re-read only when the root changed (or ``fresh``)."""
        stamp = self._stamp()
        cached = self._cached
        if cached is not None and not fresh and stamp is not None and cached[0] == stamp:
            return cached[1]
        data, _ = self.backend.read_root()
        view = self.parse(data)
        self._cached = (stamp, view)
        return view

    def read(self, action: Callable[[View], Any]) -> Any:
        """Run ``action`` on the committed state; if a writer moved something it was reading
        (a segment replaced, a removed object), read the root again and retry."""
        for attempt in range(READ_ATTEMPTS):
            view = self.view(fresh=attempt > 0)
            try:
                return action(view)
            except (ObjectMissing, UnsafeFileError, IntegrityError):
                if attempt == READ_ATTEMPTS - 1 or self.view(fresh=True).generation == view.generation:
                    raise
        raise AssertionError("unreachable")

    def fresh(self) -> tuple[View, object]:
        """The root as the store has it now, parsed, with its compare-and-swap token (a writer's start)."""
        data, token = self.backend.read_root()
        return self.parse(data), token

    def parse(self, data: bytes | None) -> View:
        """A root's bytes as a View; without a root, a format-1 index, an empty registry, or an error
        saying the index was lost (objects without a root)."""
        if data is not None:
            return View.parse(data, self.backend.read, self.segments, where=self.url,
                              fetch_head=lambda key, size: self.backend.read_range(key, 0, size))
        legacy = getattr(self.backend, "legacy_index", lambda: None)()
        if legacy is not None:
            from ..format.index_v1 import LEGACY_KEY, legacy_segment

            self.segments[LEGACY_KEY] = legacy_segment(legacy, where=f"{self.url}/index.h5")
            return View({"format": ROOT_FORMAT, "version": 1, "generation": "legacy",
                         "segments": {"": LEGACY_KEY}}, self.backend.read, self.segments, where=self.url)
        if self.backend.exists():
            raise UnsafeFileError(
                f"The index of the registry at {self.url} is missing or was lost, but kernels are there. "
                "Run 'kreg fsck --repair' to rebuild it from the kernels' own records."
            )
        return View.empty(self.backend.read, self.segments, where=self.url)

    def committed(self, view: View) -> None:
        """This process just committed ``view``: it is the state now. After the first format-2
        commit of a format-1 registry, its ``index.h5`` goes."""
        self._cached = (self._stamp(), view)
        if getattr(self.backend, "legacy_index", lambda: None)() is not None:
            self.backend.remove_legacy_index()  # type: ignore[attr-defined]

    def forget(self, *, segments: bool = False) -> None:
        """Read the root again next time (and re-parse every segment, with ``segments``)."""
        self._cached = None
        if segments:
            self.segments.clear()

    def _stamp(self) -> object:
        stamp = getattr(self.backend, "root_stamp", None)
        return stamp() if stamp is not None else None


class KernelMemo:
    """Recently loaded kernels by ``(name, version)``, least recently used dropped first once
    their values pass ``limit`` bytes; a kernel over a quarter of it is never kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kernels: OrderedDict[tuple[str, int], Kernel] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, int], sha256: str) -> Kernel | None:
        """The kernel kept for ``key`` if its hash is ``sha256`` (the index's word), else None."""
        kernel = self._kernels.get(key)
        if kernel is None or kernel.sha256 != sha256:
            return None
        self._kernels.move_to_end(key)
        return kernel

    def remember(self, key: tuple[str, int], kernel: Kernel) -> None:
        size = kernel.array.nbytes
        if size > self.limit // 4:
            return
        self.forget(key)
        self._kernels[key] = kernel
        self._bytes += size
        while self._bytes > self.limit:
            _, old = self._kernels.popitem(last=False)
            self._bytes -= old.array.nbytes

    def forget(self, key: tuple[str, int]) -> None:
        old = self._kernels.pop(key, None)
        if old is not None:
            self._bytes -= old.array.nbytes

    def clear(self) -> None:
        self._kernels.clear()
        self._bytes = 0
