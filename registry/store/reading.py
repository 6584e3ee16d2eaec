"""The read path: which kernel a ref names, and its values at their recorded offset.

:class:`Loader` resolves a ref for a Registry (the user's index first, then the built-ins, then
the families); :func:`read_values` and :func:`load_by_receipt` read a stored version without
opening HDF5 when the index (or the receipt) says where the values start, so a fresh process
loading a stored kernel imports neither h5py nor pydantic.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import (
    DeprecatedKernelWarning,
    IntegrityError,
    InvalidKernelError,
    InvalidNameError,
    KernelNotFoundError,
    KregError,
    RemoteError,
    UnsafeFileError,
)
from ..format.container import parse_json
from ..format.content import content_hash, same_content
from ..format.index import View, object_key
from ..format.names import Ref, did_you_mean, escape
from ..kernels.kernel import Kernel
from .backend import Backend
from .state import Committed, KernelMemo
from .writer import RECEIPT_FORMAT, receipt_key

if TYPE_CHECKING:
    from ..kernels.builtins import BuiltinLayer


#: kreg's own directory: a warning names the first line outside it.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Loader:
    """Finds what a ref names, for one Registry: a pinned ``name@v`` through the last root this
    machine saw (no request) or the version's receipt (two), else through the committed index;
    a name the user's index holds is the user's, then come the built-ins, then the families.
    Kernels it loaded with their hash checked are kept in ``memo``."""

    def __init__(self, backend: Backend, state: Committed, builtins: BuiltinLayer | None, memo: KernelMemo) -> None:
        self.backend, self.state, self.builtins, self.memo = backend, state, builtins, memo
        self._shipped_names: set[str] | None = None

    def load(self, parsed: Ref, verify: bool) -> Kernel:
        if parsed.label is None and self.shipped(parsed.name):  # a label is the user's registry's word
            if self.builtins is not None and parsed.name in self.builtins:
                return self.builtins.load(parsed, verify=verify)
            if parsed.version is None:
                return generate(parsed, {})
        try:
            if parsed.version is not None and (kernel := self._pinned(parsed, verify)) is not None:
                return kernel
            return self.state.read(lambda view: self.load_from(view, parsed, verify, cached=True))
        except RemoteError:
            # The built-ins and families ship in the package: they never need the network (a user
            # version of a built-in name, in a registry older than that built-in, waits for it).
            if parsed.label is not None:
                raise
            if self.builtins is not None and parsed.name in self.builtins:
                return self.builtins.load(parsed, verify=verify)
            if parsed.version is None and parsed.name in family_names():
                return generate(parsed, {})
            raise

    def shipped(self, name: str) -> bool:
        """Whether ``name`` is a built-in or a family to serve from the package with no request: on
        an object store, unless the last root this machine saw (read with no request) holds it
        for the user (a registry older than that built-in). A local index costs no request: it decides."""
        cached_root = getattr(self.backend, "cached_root", None)
        if cached_root is None:
            return False
        if self._shipped_names is None:  # from the shipped listing: no HDF5 opened for the user's names
            listed = self.builtins.listing() if self.builtins is not None else []
            self._shipped_names = {entry.split("\t", 2)[1] for entry in listed} | set(family_names())
        if name not in self._shipped_names:
            return False
        data = cached_root(ask=False)
        try:
            return data is None or not View.parse(data, self.backend.read, self.state.segments,
                                                  where=self.backend.url).versions(name)
        except KregError:
            return True

    def load_pin(self, name: str, digits: str, verify: bool) -> Kernel:
        """The version of ``name`` whose values hash to ``digits...`` (a content pin): the root, the
        name's segment and the values, three requests cold. Versions with the same values and the
        same identity (a revert re-added) are one kernel: the newest is taken."""
        return self.state.read(lambda view: self.load_from(view, self.pinned_ref(view, name, digits), verify,
                                                           cached=True))

    def pinned_ref(self, view: View, name: str, digits: str) -> Ref:
        """The ``name@v`` a content pin names in ``view`` (or in the built-ins under it)."""
        held = view.versions(name)
        if held:
            found = sorted(v for v, (row, _) in held.items() if row[8].startswith(digits))
            records = [view.record(name, v) for v in found]
        elif self.builtins is not None and name in self.builtins:
            found = sorted(v for v, info in self.builtins.rows[name].items() if info.sha256.startswith(digits))
            records = [self.builtins.records[name][v] for v in found]
        else:
            raise self.not_found(Ref(name), view)
        if not found:
            have = ", ".join(f"{name}@{v}" for v in sorted(held or self.builtins.rows[name]))  # type: ignore[union-attr]
            raise KernelNotFoundError(f"No version of {name!r} in {self.backend.url} has values whose sha256 starts "
                                      f"with {digits} (it has: {have}).")
        if any(not same_content(r, records[-1]) for r in records):
            which = ", ".join(f"{name}@{v}" for v in found)
            more = " give more hex digits of the sha256, or" if len({r["sha256"] for r in records}) > 1 else ""
            raise InvalidNameError(f"{name}@sha256:{digits} matches {len(found)} different versions ({which}):"
                                   f"{more} pin a version number.")
        return Ref(name, found[-1])  # one kernel (a revert re-added it): the newest number

    def resolved(self, view: View, ref: Ref) -> Ref:
        """``ref`` with a label replaced by the version it points at in ``view``."""
        if ref.label is None:
            return ref
        version = view.labels(ref.name).get(ref.label)
        if version is None:
            if not view.versions(ref.name) and not (self.builtins is not None and ref.name in self.builtins):
                raise self.not_found(Ref(ref.name), view)
            held = ", ".join(sorted(view.labels(ref.name))) or "none"
            raise KernelNotFoundError(f"Kernel {ref.name!r} has no label {ref.label!r} (its labels: {held}). "
                                      "See 'kreg show NAME'.")
        return Ref(ref.name, version)

    def _pinned(self, parsed: Ref, verify: bool) -> Kernel | None:
        """``name@v`` without reading the index when it can be:
        through the last root this machine saw (no request at all when it is cached), else
        through the version's receipt (an object store: the receipt and the values, two
        requests). None sends the load down the index path, which decides.

        Where that root lists the version, its hash is the index's word: a receipt is taken only
        if it names the same hash (a receipt and an object swapped together in the bucket must
        not serve another kernel where the index held here says otherwise)."""
        cached_root = getattr(self.backend, "cached_root", None)
        data = cached_root() if cached_root is not None else None
        expected: str | None = None
        if data is not None:
            try:
                view = View.parse(data, self.backend.read, self.state.segments, where=self.backend.url)
                row = view.row(parsed.name, parsed.version)
                if row is not None:
                    expected = row[8]
                    return self.load_from(view, parsed, verify, cached=True)
                if int(parsed.version or 0) < view.next_version(parsed.name):
                    # Issued and no longer listed: removed, as far as this machine knows. A receipt
                    # (or this machine's cached copy of one) must not bring it back: the index decides.
                    return None
            except KregError:
                pass
        if not getattr(self.backend, "receipts", False):
            return None
        key = (parsed.name, int(parsed.version or 0))
        kernel = load_by_receipt(self.backend, *key, verify=verify, sha256=expected)
        if kernel is not None and verify:
            self.memo.remember(key, kernel)
        return kernel

    def load_from(self, view: View, parsed: Ref, verify: bool, *, cached: bool) -> Kernel:
        parsed = self.resolved(view, parsed)
        row = view.row(parsed.name, parsed.version)
        if row is None:
            if self.builtins is not None and parsed.name in self.builtins:
                return self.builtins.load(parsed, verify=verify)
            if parsed.version is None and parsed.name in family_names():
                return generate(parsed, {})
            raise self.not_found(parsed, view)
        key = (row[0], row[1])
        reason = view.deprecated(row[0]).get(row[1])
        if reason is not None:
            # attributed to the user's line that loaded it, not to kreg's frames
            warnings.warn(DeprecatedKernelWarning(f"{row[0]}@{row[1]} is deprecated: {escape(reason, quote=False)}"),
                          stacklevel=_outside_kreg())
        kernel = self.memo.get(key, row[8]) if cached else None
        if kernel is not None:
            return kernel
        record = view.record(*key)
        if record.get("sha256") != row[8]:
            raise UnsafeFileError(f"{self.backend.url}: the index row and record of {row[0]}@{row[1]} disagree. "
                                  "Run 'kreg fsck'.")
        kernel = Kernel(record, read_values(self.backend, record, row[9] if len(row) > 9 else None, verify=verify))
        if verify and cached:
            self.memo.remember(key, kernel)
        return kernel

    def record(self, ref: Ref) -> dict[str, Any]:
        """The record of ``ref``, found as :meth:`load` finds the kernel."""
        return self.records([ref])[0]

    def records(self, refs: list[Ref]) -> list[dict[str, Any]]:
        """The records of ``refs`` in one committed state; with the store unreachable, the
        built-ins' own (they ship in the package)."""
        try:
            return self.state.read(lambda view: [self.record_in(view, ref) for ref in refs])
        except RemoteError:
            shipped = [self.builtins.get(ref) if self.builtins is not None and ref.label is None else None
                       for ref in refs]
            if any(record is None for record in shipped):
                raise
            return shipped  # type: ignore[return-value]

    def record_in(self, view: View, ref: Ref) -> dict[str, Any]:
        """:meth:`record` in the committed state ``view``."""
        ref = self.resolved(view, ref)
        row = view.row(ref.name, ref.version)
        if row is not None:
            return view.record(row[0], row[1])
        if self.builtins is not None and ref.name in self.builtins and not view.versions(ref.name):
            record = self.builtins.get(ref)
            if record is not None:
                return record
        raise self.not_found(ref, view)

    def not_found(self, ref: Ref, view: View | None) -> KernelNotFoundError:
        """The error for a ref nothing holds: the versions the name has, or names like it."""
        builtins = self.builtins
        versions = (view.versions(ref.name) if view is not None else None) or (
            builtins.rows.get(ref.name) if builtins else None)
        if versions:
            have = ", ".join(str(v) for v in sorted(versions))
            return KernelNotFoundError(f"Kernel {ref.name!r} has no version {ref.version} (it has: {have}).")
        known = (view.names() if view is not None else []) + (list(builtins.rows) if builtins else [])
        known += family_names()
        return KernelNotFoundError(
            f"No kernel named {escape(ref.name)} in {self.backend.url}.{did_you_mean(ref.name, known)}"
            " See 'kreg list'."
        )


def _outside_kreg() -> int:
    """The ``stacklevel`` of the first frame outside kreg's package (Python 3.12's
    ``skip_file_prefixes``, by hand)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def generate(parsed: Ref, params: dict[str, Any]) -> Kernel:
    """A kernel made on the fly by the family ``parsed.name``."""
    if parsed.version is not None:
        raise InvalidKernelError(f"A family takes parameters, not a version. Received: {parsed}.")
    from ..kernels.families import generate_kernel

    dtype = params.pop("dtype", "float32")
    return Kernel(*generate_kernel(parsed.name, params, dtype=dtype))


def family_names() -> list[str]:
    from ..kernels.families import FAMILIES

    return list(FAMILIES)


def read_values(backend: Backend, record: dict[str, Any], offset: int | None, *, verify: bool) -> np.ndarray:
    """The values of a stored version: read at their offset (no HDF5 parsing), else through
    the guarded reader; their sha256 checked unless ``verify`` is off."""
    name, version = record["name"], record["version"]
    key = object_key(name, version)
    dtype = np.dtype(record["dtype"]).newbyteorder("<")
    if offset is None:
        from ..format.guard import GuardedFile

        with GuardedFile(backend.read(key), kind="object", where=f"{backend.url}/{key}") as obj:
            entry = obj.entries.get(f"{name}@{version}")
            if entry is None or entry.record.get("sha256") != record["sha256"]:
                raise UnsafeFileError(f"{backend.url}/{key}: the object does not hold what the index lists. "
                                      "Run 'kreg fsck'.")
            return obj.read(entry, verify=verify)
    shape = tuple(record["shape"])
    data = backend.read_range(key, offset, math.prod(shape) * dtype.itemsize)
    array = np.frombuffer(data, dtype).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    if verify and content_hash(array) != record["sha256"]:
        raise IntegrityError(
            f"{backend.url}/{key}: the values of {name}@{version} do not match their sha256. The object is "
            "corrupt or was altered; run 'kreg fsck' and restore it or remove that version."
        )
    return array


def load_by_receipt(backend: Backend, name: str, version: int, *, verify: bool,
                    sha256: str | None = None) -> Kernel | None:
    """``name@version`` from its receipt (see ``writer.receipt``): two reads, the receipt and the
    values. None if there is no receipt or it does not hold together: a receipt naming another
    name or version, another hash than ``sha256`` (the index's, when this machine holds a root
    listing the version), a bad offset, values that do not match its record; the index path
    then decides."""
    try:
        document = parse_json(backend.read(receipt_key(name, version)))
        record, offset = document["record"], document["offset"]
        if (document.get("format") != RECEIPT_FORMAT or record.get("name") != name
                or type(record.get("version")) is not int or record["version"] != version
                or (sha256 is not None and record.get("sha256") != sha256)
                or not (offset is None or (type(offset) is int and offset >= 0))):
            return None
        return Kernel(record, read_values(backend, record, offset, verify=verify))
    except (KregError, ValueError, TypeError, KeyError, AttributeError):
        return None
