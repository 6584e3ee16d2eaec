"""The Registry: a directory of immutable per-version HDF5 objects and one atomic index.

Layout (see ``schema/FORMAT.md``)::

    REGISTRY/
      index.h5                  every committed record; replaced atomically
      kernels/<name>/@<v>.h5    one immutable container per kernel version
      tmp/                      files of writes in flight; swept by the next command
      .lock                     the writers' lock (readers never take it)

An add writes and fsyncs the object, renames it into place, then writes and
fsyncs a new index and renames it over the old one: the index rename is the
commit. A crash before it leaves only unreferenced files, which the next
command removes; a crash after it leaves a complete kernel.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


from ._builtins import BuiltinLayer
from ._content import check_values, content_hash, to_stored_layout
from ._exceptions import (
    InvalidKernelError,
    KernelNotFoundError,
    ReadOnlyError,
    UnsafeFileError,
)
from ._guard import GuardedFile
from ._index import Index, KernelInfo
from ._kernel import Kernel, stack
from ._names import Ref, check_name, did_you_mean, escape, match, parse_ref
from ._paths import builtin_db_path
from ._transactions import INDEX_FILE, Transactions

#: Kernels at most this large (bytes, all together) stay cached in memory.
CACHE_BYTES = 64 * 2**20


class Registry(Transactions):
    """A kernel registry on disk, with the built-in kernels as a read-only layer under it.

    Args:
        path: the registry directory; created on the first add.
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
        path: str | os.PathLike[str],
        *,
        builtins: bool | str | os.PathLike[str] = True,
        lock_timeout: float = 60.0,
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.lock_timeout = lock_timeout
        if builtins is True:
            builtins = builtin_db_path()
        self._builtins = BuiltinLayer(Path(builtins)) if builtins else None
        self._index_cache: tuple[tuple[int, int, int], Index] | None = None
        self._kernels: OrderedDict[tuple[str, int], Kernel] = OrderedDict()
        self._cached_bytes = 0
        self._txn = None
        self._holding_lock = False
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
            return self._generate(parsed, params)
        if self._builtins is not None and parsed.name in self._builtins:
            return self._builtins.load(parsed, verify=verify)
        index = self._index()
        info = index.get(*parsed)
        if info is None:
            if parsed.version is None and parsed.name in _family_names():
                return self._generate(parsed, {})
            raise self._not_found(parsed, index)
        key = (info.name, info.version)
        cached = self._kernels.get(key)
        if cached is not None and cached.sha256 == info.sha256:
            self._kernels.move_to_end(key)
            return cached
        with GuardedFile(self._object_path(*key), kind="object") as obj:
            entry = obj.entries.get(info.ref)
            if entry is None or entry.record.get("sha256") != info.sha256:
                raise UnsafeFileError(
                    f"{obj.path}: the object does not hold what the index lists for {info.ref}. "
                    "Run 'kreg verify' to see what else is damaged."
                )
            kernel = Kernel(entry.record, obj.read(entry, verify=verify))
        if verify:
            self._remember(key, kernel)
        return kernel

    def _generate(self, parsed: Ref, params: dict[str, Any]) -> Kernel:
        """A kernel made on the fly by the family ``parsed.name``."""
        if parsed.version is not None:
            raise InvalidKernelError(f"A family takes parameters, not a version. Received: {parsed}.")
        from ._families import generate_kernel

        dtype = params.pop("dtype", "float32")
        return Kernel(*generate_kernel(parsed.name, params, dtype=dtype))

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
        self._check_open()
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        excludes = [exclude] if isinstance(exclude, str) else list(exclude)
        by_name = dict(self._index().rows)
        if self._builtins is not None:
            by_name.update(self._builtins.rows)
        wanted = set(tags)
        rows = []
        for name in match(by_name, patterns, excludes):
            versions = by_name[name]
            for version in sorted(versions) if all_versions else [max(versions)]:
                info = versions[version]
                if (not wanted or wanted <= set(info.tags)) and origin in (None, info.origin):
                    rows.append(info)
        return rows

    def records(self, refs: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The stored records (plain dicts) of ``refs`` (a bare name means its latest version),
        or of the latest version of every kernel."""
        refs = list(refs) or [info.ref for info in self.list_kernels()]
        return [self._record(parse_ref(r)) for r in refs]

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
        if self._builtins is not None and name in self._builtins:
            return sorted(self._builtins.rows[name])
        return sorted(self._index().rows.get(name, ()))

    def __contains__(self, ref: object) -> bool:
        try:
            self._record(parse_ref(ref))
        except (KernelNotFoundError, ValueError):
            return False
        return True

    def __getitem__(self, ref: str) -> Kernel:
        return self.load(ref)

    def __iter__(self) -> Iterator[str]:
        return iter([info.name for info in self.list_kernels()])

    def __len__(self) -> int:
        return len(self.list_kernels())

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
        self._check_open()
        check_name(name)
        family = name in _family_names()
        if family or (self._builtins is not None and name in self._builtins):
            what = "a built-in kernel family" if family else "a built-in kernel"
            raise ReadOnlyError(
                f"{name!r} is {what} and cannot be shadowed. Choose another name, e.g. 'my/{name}'."
            )
        inherited: dict[str, Any] = {}
        if isinstance(values, Kernel):
            source, values = values, values.array
            src, src_prov = source._record, source._record["provenance"]
            layout = layout or src["layout"]
            description = description or src_prov.get("description", "")
            normalization = normalization or src.get("normalization")
            separable = separable or src.get("separable")
            bias = bias if bias is not None else src.get("bias")
            tags = tags or tuple(src.get("tags", ()))
            references = references or tuple(src_prov.get("references", ()))
            license = license or src_prov.get("license")
            if src_prov.get("generator"):
                inherited["generator"] = src_prov["generator"]
                origin = origin or "generated"
            if src["version"] >= 1:
                inherited["parent"] = source.ref
        array = check_values(values, dtype=dtype)
        if layout is None:
            if array.ndim == 4:
                raise InvalidKernelError(
                    "Values of rank 4 need an explicit layout: 'HWIO' (Keras), 'OIHW' "
                    f"(PyTorch) or 'HWIM' (depthwise). Received: shape={array.shape}."
                )
            layout = "HW"
        array, stored_layout, source_layout = to_stored_layout(array, layout, convolution=convolution)
        from datetime import datetime, timezone

        prov: dict[str, Any] = {
            **inherited,
            "origin": origin or "handmade",
            "created_at": datetime.now(timezone.utc),
            "author": author,
            "description": description,
            "references": tuple(references),
            "license": license,
            "source_layout": source_layout,
            "source_operation": "convolution" if convolution else "correlation",
            **(provenance or {}),
        }
        # Validated before taking the lock, so bad metadata fails the same way every time.
        draft = _validated(
            {
                "name": name,
                "version": 1,
                "shape": array.shape,
                "dtype": array.dtype.name,
                "layout": stored_layout,
                "normalization": normalization,
                "separable": separable,
                "bias": None if bias is None else [float(b) for b in bias],
                "tags": tuple(tags),
                "sha256": content_hash(array),
                "provenance": prov,
            }
        )
        with self._writing() as txn:
            latest = txn.index.latest(name)
            if latest is not None and (latest.sha256, latest.layout) == (draft["sha256"], stored_layout):
                return Kernel(txn.index.record(name, latest.version), array)
            version = txn.index.next_version.get(name, 1)
            record = {**draft, "version": version}
            self._write_object(record, array)
            txn.index.put(record)
            txn.dirty = True
        kernel = Kernel(record, array)
        self._remember((name, version), kernel)
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
        with self._writing():
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
        if self._builtins is not None and parsed.name in self._builtins:
            raise ReadOnlyError(f"{parsed.name!r} is a built-in kernel; built-ins cannot be removed.")
        with self._writing() as txn:
            versions = txn.index.rows.get(parsed.name, {})
            if parsed.version is not None:
                chosen = [parsed.version] if parsed.version in versions else []
            elif all_versions or len(versions) == 1:
                chosen = sorted(versions)
            else:
                pinned = ", ".join(f"{parsed.name}@{v}" for v in sorted(versions))
                raise InvalidKernelError(
                    f"{parsed.name!r} has {len(versions)} versions; name one ({pinned}) "
                    "or remove them all with all_versions=True (kreg rm --all)."
                )
            if not chosen:
                raise self._not_found(parsed, txn.index)
            for version in chosen:
                txn.index.drop(parsed.name, version)
                txn.dirty = True
                txn.unlink.append(self._object_path(parsed.name, version))
                self._forget((parsed.name, version))
        return [f"{parsed.name}@{v}" for v in chosen]

    # -- integrity --------------------------------------------------------

    def verify(
        self, refs: Sequence[str] = (), *, progress: Callable[[str], object] | None = None
    ) -> list[tuple[str, str]]:
        """Re-read kernels and check them against their records, hashes and generators.

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
            self._record(parsed)  # unknown names raise here, with suggestions
            versions = [parsed.version] if parsed.version else self.versions(parsed.name)
            targets += [f"{parsed.name}@{v}" for v in versions]
        from ._families import regenerate_problems

        problems: list[tuple[str, str]] = []
        for ref in targets:
            if progress is not None:
                progress(ref)
            name, version = ref.rsplit("@", 1)
            self._forget((name, int(version)))
            try:
                kernel = self.load(ref)
                kernel.spec  # noqa: B018 - validates the record against the schema
                if kernel._record != self._record(parse_ref(ref)):
                    problems.append((ref, "the object's record differs from the index's record"))
                problems.extend((ref, p) for p in regenerate_problems(kernel._record, kernel.array))
            except Exception as exc:  # every failure is reported; none stops the run
                problems.append((ref, str(exc)))
        return problems

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Drop caches and close the built-in database; the object cannot be used after."""
        if self._builtins is not None:
            self._builtins.close()
        self._kernels.clear()
        self._index_cache = None
        self._closed = True

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<kreg Registry {str(self.path)!r} (closed)>"
        user = len(self._index())
        builtin = len(self._builtins.rows) if self._builtins is not None else 0
        return f"<kreg Registry {str(self.path)!r} ({user} kernel versions, {builtin} built-in names)>"

    # -- internals --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"The registry at {self.path} is closed.")

    def _object_path(self, name: str, version: int) -> Path:
        return self.path / "kernels" / name / f"@{version}.h5"

    def _index(self, *, fresh: bool = False) -> Index:
        """The committed index. Re-read only when the file changed (or ``fresh``), and rebuilt
        only when its generation token differs from the one in memory."""
        path = self.path / INDEX_FILE
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._sweep_if_idle()  # a first add may have died before its commit
            return Index()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._index_cache
        if cached is not None and cached[0] == key and not fresh:
            return cached[1]
        self._sweep_if_idle()
        with GuardedFile(path, kind="index") as f:
            listing = f.read_blob("listing")
            generation = Index.generation_of(listing, where=str(path))
            if cached is not None and generation and cached[1].generation == generation:
                index = cached[1]
            else:
                index = Index.from_blobs(listing, f.read_blob("rows"), f.read_blob("records"), where=str(path))
        self._index_cache = (key, index)
        return index

    def _record(self, ref: Ref) -> dict[str, Any]:
        if self._builtins is not None and ref.name in self._builtins:
            record = self._builtins.get(ref)
            if record is not None:
                return record
        else:
            index = self._index()
            info = index.get(*ref)
            if info is not None:
                return index.record(info.name, info.version)
        raise self._not_found(ref, self._index())

    def _not_found(self, ref: Ref, index: Index) -> KernelNotFoundError:
        versions = index.rows.get(ref.name) or (self._builtins.rows.get(ref.name) if self._builtins else None)
        if versions:
            have = ", ".join(str(v) for v in sorted(versions))
            return KernelNotFoundError(f"Kernel {ref.name!r} has no version {ref.version} (it has: {have}).")
        known = list(index.rows) + (list(self._builtins.rows) if self._builtins else []) + _family_names()
        return KernelNotFoundError(
            f"No kernel named {escape(ref.name)} in {self.path}.{did_you_mean(ref.name, known)}"
            " See 'kreg list'."
        )

    def _remember(self, key: tuple[str, int], kernel: Kernel) -> None:
        size = kernel.array.nbytes
        if size > CACHE_BYTES // 4:
            return
        self._forget(key)
        self._kernels[key] = kernel
        self._cached_bytes += size
        while self._cached_bytes > CACHE_BYTES:
            _, old = self._kernels.popitem(last=False)
            self._cached_bytes -= old.array.nbytes

    def _forget(self, key: tuple[str, int]) -> None:
        old = self._kernels.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.array.nbytes

    # -- the write path ---------------------------------------------------

def _validated(fields: dict[str, Any]) -> dict[str, Any]:
    from ._spec import KernelRecord
    from pydantic import ValidationError

    try:
        record = KernelRecord.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (received {e.get('input')!r:.60})"
            for e in exc.errors()[:3]
        )
        raise InvalidKernelError(f"The kernel record is not valid: {problems}.") from None
    return record.model_dump(mode="json", exclude_none=True)


def _family_names() -> list[str]:
    from ._families import FAMILIES

    return list(FAMILIES)
