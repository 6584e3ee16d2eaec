"""The read side of a registry: load, list, resolve, bank and versions, over the committed state.

:class:`~registry.store.registry.Registry` adds the writes, packs and checks on top of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._exceptions import InvalidKernelError, KernelNotFoundError, KregError, RemoteError
from .._paths import builtin_db_path, check_location
from ..format.names import check_name, parse_pin, parse_ref
from ..format.rows import KernelInfo, Listing
from ..kernels.builtins import BuiltinLayer
from ..kernels.kernel import Kernel, stack
from .backend import Backend
from .listing import merged_listing
from .reading import Loader, generate
from .state import Committed, KernelMemo
from .writer import Transaction

#: Kernels at most this large (bytes, all together) stay cached in memory.
CACHE_BYTES = 64 * 2**20


def open_backend(location: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> Backend:
    """The backend for a path, a ``file://`` URL, or an object-store URL (``s3://``, ``gs://``, ``az://``)."""
    text = os.fspath(location)
    if isinstance(location, str):  # a Path object is a path by choice, even one named 's3:x'
        check_location(text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        # Object storage (store/object.py) is imported only for such URLs: its client is an extra.
        from .object import SCHEMES, ObjectBackend

        scheme = text.split("://", 1)[0]
        if scheme in SCHEMES:
            return ObjectBackend(text)
        from .cloud_errors import shown_url

        raise InvalidKernelError(f"Registries at {scheme}:// URLs are not supported by this kreg "
                                 f"(s3://, gs://, az://, file:// are). Received: {shown_url(text)!r}.")
    from .local import LocalBackend

    return LocalBackend(text, lock_timeout=lock_timeout)


class RegistryReader:
    """What every registry can do without writing: see :class:`~registry.store.registry.Registry`,
    which documents the arguments."""

    def __init__(
        self,
        path: str | os.PathLike[str] | Backend,
        *,
        builtins: bool | str | os.PathLike[str] = True,
        lock_timeout: float = 60.0,
    ) -> None:
        self.backend: Backend = (
            path if isinstance(path, Backend) and not isinstance(path, (str, os.PathLike))
            else open_backend(path, lock_timeout=lock_timeout)
        )
        self.url = self.backend.url
        self.path = Path(getattr(self.backend, "path", self.url))
        self.lock_timeout = lock_timeout
        if builtins is True:
            builtins = builtin_db_path()
        self._builtins = BuiltinLayer(Path(builtins)) if builtins else None
        self._state = Committed(self.backend, self.url)
        self._memo = KernelMemo(CACHE_BYTES)
        self._loader = Loader(self.backend, self._state, self._builtins, self._memo)
        self._txn: Transaction | None = None
        self._closed = False

    # -- reading ----------------------------------------------------------

    def load(self, ref: str, *, verify: bool = True, **params: Any) -> Kernel:
        """Load ``"name"`` (latest version), ``"name@version"``, a content pin ``"name@sha256:HEX"``
        (12 or more hex digits of the values' hash, :attr:`Kernel.pin`: the same kernel in any
        registry that holds it), or generate from a family.

        Args:
            ref: the kernel reference, or a family name (``"gaussian"``).
            verify: check the values against their recorded sha256 (the default).
                Skipping it saves about 0.6 s per GB on kernels you trust.
            **params: family parameters, e.g. ``load("gaussian", sigma=2.0, ksize=9)``;
                ``dtype="float64"`` picks the dtype (float32 by default).

        Raises:
            KernelNotFoundError: unknown name or version, with suggestions.
            IntegrityError: the stored values do not match their hash.
        """
        self._check_open()
        pin = parse_pin(ref)
        if pin is not None:
            return self._loader.load_pin(*pin, verify)
        parsed = parse_ref(ref)
        if params:
            return generate(parsed, params)
        # A pinned version the last root this machine saw lists is immutable, so it
        # loads from the local cache with no request (and offline), or from its receipt. Then the
        # user's index: a fresh process loading its own kernel never opens the built-ins, and a
        # name the index holds is the user's (list, show and versions agree).
        return self._loader.load(parsed, verify)

    def list_kernels(
        self,
        pattern: str | Sequence[str] = "*",
        exclude: str | Sequence[str] = (),
        tags: Sequence[str] = (),
        *,
        origin: str | None = None,
        all_versions: bool = False,
    ) -> list[KernelInfo]:
        """List kernels whose name matches a glob, naturally sorted (``gauss_3`` before ``gauss_11``).

        Args:
            pattern: fnmatch pattern(s) a name must match (any of them).
            exclude: pattern(s) a name must not match.
            tags: tags a kernel must all carry.
            origin: keep only this provenance origin (``builtin``, ``learned``, ...).
            all_versions: every version instead of the latest of each name.
        """
        return list(self.listing(pattern, exclude, tags, origin=origin, all_versions=all_versions))

    def listing(
        self,
        pattern: str | Sequence[str] = "*",
        exclude: str | Sequence[str] = (),
        tags: Sequence[str] = (),
        *,
        origin: str | None = None,
        all_versions: bool = False,
        builtins_only: bool = False,
    ) -> Listing:
        """:meth:`list_kernels` as a :class:`~registry.format.rows.Listing`: the same rows, each made
        when it is read (the form ``kreg list`` prints 100,000 rows from). ``builtins_only`` lists
        the built-ins alone, without reading the store (``kreg list`` with the store unreachable)."""
        self._check_open()
        entries, widths, marks = ([], None, {}) if builtins_only else self._state.read(lambda view: (
            view.listing(all_versions=all_versions), None if all_versions else view.listing_widths(), view.marks()))
        own = self._builtins.listing(all_versions=all_versions) if self._builtins is not None else []
        return merged_listing(entries, widths, own, all_versions=all_versions, pattern=pattern, exclude=exclude,
                              tags=tags, origin=origin, marks=marks)

    def records(self, refs: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The stored records (plain dicts) of ``refs`` (a bare name means its latest version),
        or of the latest version of every kernel."""
        refs = list(refs) or [info.ref for info in self.list_kernels()]
        if any(parse_pin(r) for r in refs):  # a content pin is found as a load finds it
            return [self.load(r)._record if parse_pin(r) else self._loader.record(parse_ref(r)) for r in refs]
        # one committed state for all: on an object store one root read, not one per ref
        return self._loader.records([parse_ref(r) for r in refs])

    @property
    def builtin_path(self) -> Path | None:
        """The read-only built-in pack under this registry, or None."""
        return self._builtins.path if self._builtins is not None else None

    def resolve(self, refs: str | Sequence[str]) -> list[Kernel]:
        """Load refs and glob patterns (a pattern brings its matches in natural order), each once.

        Example:
            >>> import tempfile
            >>> from registry import Registry
            >>> [k.ref for k in Registry(tempfile.mkdtemp()).resolve(["sobel_?", "sobel_x"])]
            ['sobel_x@1', 'sobel_y@1']
        """
        chosen: dict[str, Kernel | None] = {}
        for ref in [refs] if isinstance(refs, str) else refs:
            if any(ch in ref for ch in "*?["):
                matches = self.list_kernels(ref)
                if not matches:
                    raise KernelNotFoundError(f"No kernel matches {ref!r}. See 'kreg list'.")
                for info in matches:
                    chosen.setdefault(info.ref, None)
            else:
                kernel = self.load(ref)
                chosen.setdefault(kernel.ref, kernel)
        return [kernel if kernel is not None else self.load(ref) for ref, kernel in chosen.items()]

    def bank(self, refs: str | Kernel | Sequence[str | Kernel]) -> Kernel:
        """Stack compatible kernels into one ``HWIO`` kernel, one output channel each, in order.

        Args:
            refs: refs or glob patterns, as for :meth:`resolve`, and :class:`Kernel` objects
                (say, ``load("gaussian", sigma=2)``), mixed freely.

        Returns:
            A kernel that is not stored (version 0) whose description records the order;
            ``bank(...).to_keras()`` gives one layer.

        Example:
            >>> import tempfile
            >>> from registry import Registry
            >>> b = Registry(tempfile.mkdtemp()).bank(["sobel_x", "sobel_y"])
            >>> b.ref, b.shape
            ('bank(sobel_x@1, sobel_y@1)', (3, 3, 1, 2))

        Raises:
            InvalidKernelError: an item that is neither a ref nor a Kernel, or kernels of
                different height, width or input depth.
        """
        items = [refs] if isinstance(refs, (str, Kernel)) else list(refs)
        chosen: list[Kernel] = []
        named: set[str] = set()  # a stored kernel named twice (a ref and a pattern) is stacked once, as in resolve
        for item in items:
            if isinstance(item, Kernel):
                chosen.append(item)
            elif isinstance(item, str):
                found = [k for k in self.resolve([item]) if k.ref not in named]
                named.update(k.ref for k in found)
                chosen += found
            else:
                raise InvalidKernelError(f"bank() takes refs, glob patterns or Kernel objects. Received: "
                                         f"{type(item).__name__} ({item!r:.60}).")
        return stack(chosen)

    def versions(self, name: str) -> list[int]:
        """The versions of ``name`` still present, oldest first."""
        check_name(name)
        versions = {} if self._loader.shipped(name) else self._state.read(lambda view: view.versions(name))
        if not versions and self._builtins is not None and name in self._builtins:
            return sorted(self._builtins.rows[name])
        return sorted(versions)

    def next_version(self, name: str) -> int:
        """The version the next add of ``name`` would get if no other writer comes first."""
        check_name(name)
        return self._state.read(lambda view: view.next_version(name))

    def __contains__(self, ref: object) -> bool:
        try:
            self._loader.record(parse_ref(ref))
        except (KernelNotFoundError, ValueError):
            return False
        return True

    def __getitem__(self, ref: str) -> Kernel:
        return self.load(ref)

    def __iter__(self) -> Iterator[str]:
        return iter([info.name for info in self.listing()])

    def __len__(self) -> int:
        return len(self.listing())

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Drop caches and close the built-in database; the object cannot be used after."""
        if self._builtins is not None:
            self._builtins.close()
        self._memo.clear()
        self._state.forget(segments=True)
        self._closed = True

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<kreg Registry {self.url!r} (closed)>"
        try:
            user = f"{len(self._state.view())} kernel versions"
        except KregError:
            user = "unreadable index"
        builtin = len(self._builtins.rows) if self._builtins is not None else 0
        return f"<kreg Registry {self.url!r} ({user}, {builtin} built-in names)>"

    # -- internals --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"The registry at {self.url} is closed.")
