"""The Registry: names, versions, the built-in layer and caches, on top of a storage backend.

``Registry`` holds a :class:`~registry.store.backend.Backend` and never sees a path, a lock
or a rename: reads go through the committed root and its segments (:mod:`registry.format.index`), writes
through one :class:`~registry.store.writer.Transaction` per commit (``writer.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._env import default_author
from .._exceptions import (
    InvalidKernelError,
    KernelNotFoundError,
    ReadOnlyError,
)
from ..format.content import same_content
from ..format.names import check_name, parse_ref
from ..kernels.kernel import Kernel
from ..kernels.records import build_record
from .backend import Backend
from .curation import Curated, inherited
from .reading import family_names


class Registry(Curated):
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
        inherit: bool = True,
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
                recorded as given (``license`` is an SPDX expression). ``author`` defaults
                to ``KREG_AUTHOR``, else git's ``user.name <user.email>``, else login@host.
            provenance: further provenance fields (``source``, ``generator``,
                ``parent``, ``pack``, ``created_at``, ...).
            separable: ``{"column": [...], "row": [...]}`` factors of a rank-1 HW kernel.
            bias: one value per output channel, learned with the kernel.
            inherit: a new version of a name takes the previous version's description, tags,
                license, references and author where they are not given (and a Kernel given as
                ``values`` does not bring them); :attr:`last_inherited` says which it took.

        Returns:
            The stored :class:`Kernel`.
        """
        return self._add(
            name, values, layout=layout, dtype=dtype, convolution=convolution, description=description,
            tags=tags, license=license, author=author, references=references, origin=origin,
            normalization=normalization, provenance=provenance, separable=separable, bias=bias,
            inherit=inherit, by_hand=True,
        )

    def _add(self, name: str, values: object, *, inherit: bool = False, by_hand: bool = False,
             event: dict[str, Any] | None = None, **metadata: Any) -> Kernel:
        """:meth:`add`, plus ``via_import=True`` for pack import (which alone records ``provenance.pack``).
        ``by_hand``: the author defaults to who is acting (a pack's or a copy's records keep theirs).
        ``event``: fields that replace or complete the history event of the add (a copy's
        ``{"op": "copy", "source": URL}``)."""
        self._check_open()
        check_name(name)
        family = name in family_names()
        if family or (self._builtins is not None and name in self._builtins):
            what = "a built-in kernel family" if family else "a built-in kernel"
            raise ReadOnlyError(
                f"{name!r} is {what} and cannot be shadowed. Choose another name, e.g. 'my/{name}'."
            )
        self.last_inherited = None
        if by_hand and not metadata.get("author"):
            metadata["author"] = default_author()
            given = {**metadata, "author": None}
        else:
            given = metadata
        # Validated before taking the lock, so bad metadata fails the same way every time.
        draft, array = build_record(name, values, **metadata)
        with self._writing() as txn:
            versions = txn.versions(name)
            if versions:
                record = txn.record(name, max(versions))
                taken = inherited(record, given, values) if inherit else {}
                if taken:  # read under the writer's view: what the version before this one says
                    draft, array = build_record(name, values, **{**metadata, **taken})
                if same_content(record, draft):
                    return Kernel(record, array)
            else:
                taken = {}
            record = txn.add(draft, array, event)
            if taken:
                self.last_inherited = (f"{name}@{max(versions)}", sorted(taken))
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
            if parsed.label is not None:  # the version the label points at, never "all of them"
                held = txn.edit.meta(parsed.name).get("labels", {}).get(parsed.label)
                if held is None:
                    raise KernelNotFoundError(f"Kernel {parsed.name!r} has no label {parsed.label!r}.")
                chosen = [held] if held in versions else []
            elif parsed.version is not None:
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
        from ..format.pack import write_pack
        from ..format.signing import read_key

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
        from ..format.signing import read_key
        from .packs import import_pack

        keys = [read_key(t, what="trust").hex() for t in trust]
        return import_pack(self, path, prefix=prefix, dry_run=dry_run, trusted_keys=keys,
                           allow_downgrade=allow_downgrade)

    def site(self, out: str | os.PathLike[str], patterns: str | Sequence[str] = (), **options: Any) -> Any:
        """Write the static catalogue of this registry to a directory or an ``s3://`` / ``az://``
        prefix: :func:`registry.site.build_site` (``exclude=``, ``progress=``). Needs ``kreg[site]``."""
        from ..site import build_site  # a face over the store, imported when called (as Kernel.to_keras)

        return build_site(self, out, patterns, **options)

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
