"""The Registry: names, versions, the built-in layer and caches, on top of a storage backend.

``Registry`` holds a :class:`~registry.store.backend.Backend` and never sees a path, a lock
or a rename: reads go through the committed root and its segments (``index.py``), writes
through one :class:`~registry.store.writer.Transaction` per commit (``writer.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._builtins import BuiltinLayer
from .._content import same_content
from .._exceptions import (
    InvalidKernelError,
    KernelNotFoundError,
    KregError,
    ReadOnlyError,
)
from .._index import KernelInfo, Listing
from .._kernel import Kernel, stack
from .._names import check_name, parse_ref
from .._paths import builtin_db_path
from .._records import build_record
from .backend import Backend
from .listing import merged_listing
from .reading import Loader, family_names, generate
from .state import Committed, KernelMemo
from .writer import Transaction

#: Kernels at most this large (bytes, all together) stay cached in memory.
CACHE_BYTES = 64 * 2**20
#: The format marker a registry directory gets on its first write.
MARKER_DOCUMENT = b'{"format":"kreg-registry","version":2}\n'


def open_backend(location: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> Backend:
    """The backend for a path, a ``file://`` URL, or an object-store URL (``s3://``, ``gs://``, ``az://``)."""
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        # -- issue 10: object storage (store/object.py), imported only for such URLs --
        from .object import SCHEMES, ObjectBackend

        scheme = text.split("://", 1)[0]
        if scheme in SCHEMES:
            return ObjectBackend(text)
        from .cloud_errors import shown_url

        raise InvalidKernelError(f"Registries at {scheme}:// URLs are not supported by this kreg "
                                 f"(s3://, gs://, az://, file:// are). Received: {shown_url(text)!r}.")
    from .local import LocalBackend

    return LocalBackend(text, lock_timeout=lock_timeout)


class Registry:
    """A kernel registry, with the built-in kernels as a read-only layer under it.

    Args:
        path: the registry directory (created on the first add), or a backend.
        builtins: include the built-in database (``True``), a path to another
            read-only pack, or ``False`` for none.
        lock_timeout: seconds a writer waits for another writer before
            raising :class:`LockTimeoutError`.

    Example:
        >>> import numpy as np, tempfile
        >>> with Registry(tempfile.mkdtemp(), builtins=False) as reg:
        ...     k = reg.add("team/edge", np.array([[1, -1]], "f4"), description="step")
        ...     reg.load("team/edge").ref
        'team/edge@1'
    """

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
        """Load ``"name"`` (latest version) or ``"name@version"``, or generate from a family.

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
        parsed = parse_ref(ref)
        if params:
            return generate(parsed, params)
        # -- issue 10: a pinned version the last root this machine saw lists is immutable, so it
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
    ) -> Listing:
        """:meth:`list_kernels` as a :class:`~registry._index.Listing`: the same rows, each made
        when it is read (the form ``kreg list`` prints 100,000 rows from)."""
        self._check_open()
        entries, widths = self._state.read(lambda view: (view.listing(all_versions=all_versions),
                                                   None if all_versions else view.listing_widths()))
        own = self._builtins.listing(all_versions=all_versions) if self._builtins is not None else []
        return merged_listing(entries, widths, own, all_versions=all_versions, pattern=pattern, exclude=exclude,
                              tags=tags, origin=origin)

    def records(self, refs: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The stored records (plain dicts) of ``refs`` (a bare name means its latest version),
        or of the latest version of every kernel."""
        refs = list(refs) or [info.ref for info in self.list_kernels()]
        return [self._loader.record(parse_ref(r)) for r in refs]

    @property
    def builtin_path(self) -> Path | None:
        """The read-only built-in pack under this registry, or None."""
        return self._builtins.path if self._builtins is not None else None

    def resolve(self, refs: str | Sequence[str]) -> list[Kernel]:
        """Load refs and glob patterns (a pattern brings its matches in natural order), each once.

        Example:
            >>> import tempfile
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

    def bank(self, refs: str | Sequence[str]) -> Kernel:
        """Stack compatible kernels into one ``HWIO`` kernel, one output channel each, in order.

        Args:
            refs: refs or glob patterns, as for :meth:`resolve`.

        Returns:
            A kernel that is not stored (version 0) whose description records the order;
            ``bank(...).to_keras()`` gives one layer.

        Example:
            >>> import tempfile
            >>> b = Registry(tempfile.mkdtemp()).bank(["sobel_x", "sobel_y"])
            >>> b.ref, b.shape
            ('bank(sobel_x@1, sobel_y@1)', (3, 3, 1, 2))
        """
        return stack(self.resolve(refs))

    def versions(self, name: str) -> list[int]:
        """The versions of ``name`` still present, oldest first."""
        check_name(name)
        versions = self._state.read(lambda view: view.versions(name))
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

    # -- writing ----------------------------------------------------------

    def add(
        self,
        name: str,
        values: object,
        *,
        layout: str | None = None,
        dtype: str | None = None,
        convolution: bool = False,
        description: str = "",
        tags: Sequence[str] = (),
        license: str | None = None,
        author: str | None = None,
        references: Sequence[str] = (),
        origin: str | None = None,
        normalization: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        separable: Mapping[str, Sequence[float]] | None = None,
        bias: Sequence[float] | None = None,
    ) -> Kernel:
        """Add a new version of ``name``; identical to the latest version, return that one.

        Identical means equal values, dtype, shape, layout and bias; anything else is a new version.

        Args:
            name: lowercase name, ``team/`` namespaces allowed.
            values: array-like; nested lists become float32 unless ``dtype`` is given.
                A :class:`Kernel` (say, ``load("gaussian", sigma=2)``) brings its
                layout, generator, normalization, factors, tags and description along,
                and is recorded as the parent when it is a stored version.
            layout: ``HW`` (the default for 2-D values), ``HWIO``, ``HWIM`` or
                ``OIHW`` (PyTorch; converted to ``HWIO``, the source layout recorded).
            dtype: convert the values to this dtype first.
            convolution: the values are a true-convolution kernel: flip them into
                the correlation form TensorFlow computes, and record that.
            description, tags, license, author, references, origin, normalization:
                recorded as given (``license`` is an SPDX expression).
            provenance: further provenance fields (``source``, ``generator``,
                ``parent``, ``pack``, ``created_at``, ...).
            separable: ``{"column": [...], "row": [...]}`` factors of a rank-1 HW kernel.
            bias: one value per output channel, learned with the kernel.

        Returns:
            The stored :class:`Kernel`.
        """
        return self._add(
            name, values, layout=layout, dtype=dtype, convolution=convolution, description=description,
            tags=tags, license=license, author=author, references=references, origin=origin,
            normalization=normalization, provenance=provenance, separable=separable, bias=bias,
        )

    def _add(self, name: str, values: object, **metadata: Any) -> Kernel:
        """:meth:`add`, plus ``via_import=True`` for pack import (which alone records ``provenance.pack``)."""
        self._check_open()
        check_name(name)
        family = name in family_names()
        if family or (self._builtins is not None and name in self._builtins):
            what = "a built-in kernel family" if family else "a built-in kernel"
            raise ReadOnlyError(
                f"{name!r} is {what} and cannot be shadowed. Choose another name, e.g. 'my/{name}'."
            )
        # Validated before taking the lock, so bad metadata fails the same way every time.
        draft, array = build_record(name, values, **metadata)
        with self._writing() as txn:
            versions = txn.versions(name)
            if versions:
                line = versions[max(versions)][1]
                record = json.loads(line) if line else txn.record(name, max(versions))
                if same_content(record, draft):
                    return Kernel(record, array)
            record = txn.add(draft, array)
        kernel = Kernel(record, array)
        self._memo.remember((name, record["version"]), kernel)
        return kernel

    @contextmanager
    def batch(self) -> Iterator[Registry]:
        """Group many adds and removes into one commit (one lock, one index write).

        All of them land together or, on an exception or a crash, none does.

        Example:
            >>> import tempfile
            >>> reg = Registry(tempfile.mkdtemp(), builtins=False)
            >>> with reg.batch():
            ...     for i in range(3):
            ...         _ = reg.add(f"k{i}", [[float(i)]])
            >>> [info.ref for info in reg.list_kernels()]
            ['k0@1', 'k1@1', 'k2@1']
        """
        with self._writing(deferred=True):
            yield self

    def remove(self, ref: str, *, all_versions: bool = False) -> list[str]:
        """Remove one version, or every version with ``all_versions=True``.

        A bare name removes its only version; with several, pin one. Removed
        version numbers are never reissued.

        Returns:
            The refs removed.
        """
        self._check_open()
        parsed = parse_ref(ref)
        if (self._builtins is not None and parsed.name in self._builtins
                and not self._state.read(lambda view: view.versions(parsed.name))):
            raise ReadOnlyError(f"{parsed.name!r} is a built-in kernel; built-ins cannot be removed.")
        with self._writing() as txn:
            versions = txn.versions(parsed.name)
            if parsed.version is not None:
                chosen = [parsed.version] if parsed.version in versions else []
            elif all_versions or len(versions) <= 1:
                chosen = sorted(versions)
            else:
                pinned = ", ".join(f"{parsed.name}@{v}" for v in sorted(versions))
                raise InvalidKernelError(
                    f"{parsed.name!r} has {len(versions)} versions; name one ({pinned}) or remove "
                    "them all ('kreg rm --all', or all_versions=True in Python)."
                )
            if not chosen:
                raise self._loader.not_found(parsed, txn.view)
            for version in chosen:
                txn.remove(parsed.name, version)
                self._memo.forget((parsed.name, version))
        return [f"{parsed.name}@{v}" for v in chosen]

    @contextmanager
    def _writing(self, *, deferred: bool = False) -> Iterator[Transaction]:
        """One transaction around the backend's writer context; joined by nested calls (batch)."""
        if self._txn is not None:
            yield self._txn
            return
        with self.backend.writer():
            if (put_marker := getattr(self.backend, "put_marker", None)) is not None:
                put_marker(MARKER_DOCUMENT)
            txn = self._txn = Transaction(self.backend, self._state.fresh, self._state.segments, deferred=deferred)
            try:
                yield txn
                view = txn.commit()
            except BaseException:
                txn.abort()
                self._memo.clear()
                raise
            finally:
                self._txn = None
            if view is not None:
                self._state.committed(view)

    # -- packs ------------------------------------------------------------

    def export(
        self,
        refs: str | Sequence[str],
        path: str | os.PathLike[str],
        *,
        sign: str | os.PathLike[str] | None = None,
        name: str | None = None,
        author: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write kernels (refs or glob patterns) to a pack file for another team.

        Args:
            refs: refs or patterns, as for :meth:`resolve`.
            path: the pack to write (atomically).
            sign: a private key file (``kreg keygen``) to sign the manifest with.
            name, author: recorded in the manifest (``name`` defaults to the file name).
            overwrite: replace ``path`` if it exists.

        Example:
            >>> import tempfile, pathlib
            >>> out = pathlib.Path(tempfile.mkdtemp()) / "edges.h5"
            >>> Registry(tempfile.mkdtemp()).export(["sobel_x", "sobel_y"], out).name
            'edges.h5'
        """
        from .._pack import write_pack
        from .._signing import read_key

        kernels = self.resolve(refs)
        key = read_key(os.fspath(sign), what="sign") if sign is not None else None
        target = Path(path)
        return write_pack(target, [(k._record, k.array) for k in kernels], name=name or target.stem,
                          author=author, signing_key=key, overwrite=overwrite)

    def import_pack(
        self,
        path: str | os.PathLike[str],
        *,
        prefix: str = "",
        trust: Sequence[str] = (),
        dry_run: bool = False,
        allow_downgrade: bool = False,
    ) -> Any:
        """Import a pack all or nothing (parsed as hostile input in a child process).

        Args:
            path: the pack file.
            prefix: a namespace put before every name, e.g. ``"team/"``.
            trust: public keys (hex, or ``.pub`` files); when given, the pack must be signed by one.
            dry_run: only plan.
            allow_downgrade: accept a signed pack older than one already imported from the same
                key and pack name (refused by default: a rollback).

        Returns:
            The import report: ``report.steps`` says what was added, versioned or skipped.
        """
        from .._pack import import_pack
        from .._signing import read_key

        keys = [read_key(t, what="trust").hex() for t in trust]
        return import_pack(self, path, prefix=prefix, dry_run=dry_run, trusted_keys=keys,
                           allow_downgrade=allow_downgrade)

    # -- integrity --------------------------------------------------------

    def verify(
        self, refs: Sequence[str] = (), *, progress: Callable[[str], object] | None = None
    ) -> list[tuple[str, str]]:
        """Re-read kernels from the store (never from memory) and check them against their
        records, hashes and generators.

        Generated kernels (built-ins among them) are rebuilt from their recorded
        family and parameters and compared with the stored values.

        Args:
            refs: refs or names to check (every version of a bare name); all when empty.
            progress: called with each ref as it is checked (the CLI's progress bar).

        Returns:
            ``(ref, problem)`` pairs; empty when everything is intact.
        """
        self._check_open()
        targets: list[str] = []
        for ref in refs or [info.name for info in self.list_kernels()]:
            parsed = parse_ref(ref)
            self._loader.record(parsed)  # unknown names raise here, with suggestions
            versions = [parsed.version] if parsed.version else self.versions(parsed.name)
            targets += [f"{parsed.name}@{v}" for v in versions]
        from .fsck import verify_refs

        return verify_refs(self._store_itself(), self._state.view(fresh=True), self._builtins, targets, progress)

    def fsck(self, *, repair: bool = False) -> Any:
        """Check the whole store (index against objects, hashes, orphans, leftovers, links);
        with ``repair``, rebuild the index from the objects' own records.

        Returns:
            A :class:`registry.store.fsck.Report`.
        """
        self._check_open()
        from .fsck import check, rebuild

        if repair:
            with self.backend.writer():
                report = rebuild(self._store_itself(), self._state.segments)
            self._state.forget()
            self._memo.clear()
            return report
        return check(self._store_itself(), self._state.segments)

    def _store_itself(self) -> Backend:
        """The backend without a local cache in front (an object store's), for checks."""
        uncached = getattr(self.backend, "uncached", None)
        return uncached() if uncached is not None else self.backend

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Drop caches and close the built-in database; the object cannot be used after."""
        if self._builtins is not None:
            self._builtins.close()
        self._memo.clear()
        self._state.forget(segments=True)
        self._closed = True

    def __enter__(self) -> Registry:
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
