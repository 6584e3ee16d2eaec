"""The guarded reader: the one path by which kreg opens an HDF5 file it did not just write.

The whole structure (links, datasets, filters, dtypes, declared sizes,
attributes, names, format and schema versions) is checked before any kernel
values are read; values are then read only from datasets that passed, and
their sha256 is checked against the record.
"""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._exceptions import IntegrityError, KregError, UnsafeFileError, too_new
from .container import FORMAT_NAME, FORMAT_VERSION, HDF5_SIGNATURE, KINDS, SCHEMA_VERSION, parse_json
from .content import DTYPES, content_hash, record_problems
from .limits import LIMITS, Limits
from .names import escape

__all__ = ["ALLOWED_FILTERS", "BLOBS", "Entry", "GuardedFile", "Limits", "check_plain_file", "end_of_file"]


# HDF5 filter ids that may appear in a pack; any other id is refused before a
# read, so libhdf5 never goes looking for a plugin.
ALLOWED_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
#: The top-level 1-D uint8 datasets (JSON documents) each kind of container may hold.
BLOBS = {"index": ("listing", "rows", "records"), "pack": ("manifest",), "object": ()}
#: Kept for callers of the first layout.
INDEX_BLOBS = BLOBS["index"]
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True)
class Entry:
    """A kernel dataset that passed the structural checks."""

    path: str
    record: dict[str, Any]
    shape: tuple[int, ...]
    dtype: np.dtype
    contiguous: bool
    offset: int | None = None  # where the values start in the file, when contiguous
    text: str = ""  # the record attribute exactly as stored (a pack's record_sha256 covers it)

    @property
    def ref(self) -> str:
        return f"{self.record['name']}@{self.record['version']}"


class GuardedFile:
    """A kreg container opened read-only after its structure was checked.

    Args:
        path: the file, or the whole file's bytes (an object fetched from a store).
        kind: the container kind expected (``object``, ``pack``, ``index``),
            or ``None`` for any.
        limits: caps on sizes and counts.

    Raises:
        UnsafeFileError: the file is not a kreg container or breaks a rule;
            the message names the rule and where.
        SchemaVersionError: a record was written by a newer kreg.

    Example:
        >>> with GuardedFile("edges.h5") as pack:                # doctest: +SKIP
        ...     values = pack.read(pack.entries["sobel_x@1"])
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        kind: str | None = None,
        limits: Limits = LIMITS,
        where: str | None = None,
    ) -> None:
        self.limits = limits
        if isinstance(path, (bytes, bytearray, memoryview)):
            self.path = Path(where or "<bytes>")
            self.size = len(path)
            if bytes(path[: len(HDF5_SIGNATURE)]) != HDF5_SIGNATURE:
                raise UnsafeFileError(f"{self.path} is not HDF5 (no HDF5 signature at byte 0).")
            head = bytes(path[:128])
            source: Any = io.BytesIO(path)
        else:
            self.path = Path(path)
            self.size = check_plain_file(self.path)
            with open(self.path, "rb") as fh:
                head = fh.read(128)
            source = self.path
        check_end_of_file(self.path, self.size, head)
        try:
            self._file: h5py.File | None = h5py.File(source, "r", locking=False)
        except OSError as exc:
            raise UnsafeFileError(
                f"{self.path} is not a readable HDF5 file ({exc}). A kreg file is an HDF5 "
                "container written by kreg."
            ) from None
        try:
            self.attrs = self._check_root(kind)
            self.kind: str = self.attrs["kind"]
            self.entries: dict[str, Entry] = {}
            self.blobs: set[str] = set()
            self._total = 0
            self._count = 0
            self._walk(self._file, depth=0)
        except KregError:
            self.close()
            raise
        except Exception as exc:  # h5py raises many types on a damaged file: one clear error instead
            self.close()
            raise UnsafeFileError(f"{self.path}: damaged or not a valid kreg file ({type(exc).__name__}: {exc}).") from None
        except BaseException:
            self.close()
            raise

    # -- checks -----------------------------------------------------------

    def _fail(self, what: str, where: str = "/") -> UnsafeFileError:
        return UnsafeFileError(f"{self.path}: refused at {escape(where)}: {what}.")


    def _check_root(self, kind: str | None) -> dict[str, Any]:
        assert self._file is not None
        attrs = self._read_attrs(self._file, "/")
        if attrs.get("kreg_format") != FORMAT_NAME:
            raise self._fail("not a kreg container (no kreg_format='kreg' attribute)")
        version = attrs.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise self._fail(f"format_version must be a whole number from 1, got {version!r}")
        if version > FORMAT_VERSION:
            raise too_new(str(self.path), "container format", version, FORMAT_VERSION)
        if attrs.get("kind") not in KINDS or (kind is not None and attrs["kind"] != kind):
            raise self._fail(f"expected a kreg {kind or ' or '.join(KINDS)} file, got kind={attrs.get('kind')!r}")
        return attrs


    def _read_attrs(self, obj: h5py.HLObject, where: str) -> dict[str, Any]:
        return read_attrs(obj, where, self.limits, self._fail)

    def _walk(self, group: h5py.Group, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise self._fail(f"nesting deeper than {self.limits.max_depth} levels", group.name)
        for name in group:
            where = f"{group.name.rstrip('/')}/{name}"
            self._count += 1
            if self._count > self.limits.max_objects:
                raise self._fail(f"more than {self.limits.max_objects} objects", where)
            if len(name) > self.limits.max_name_length or not _valid_link_name(name, depth):
                raise self._fail("a link name outside [a-z0-9_.-] (or '@N' for a version)", where)
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise self._fail("an external link (it would read another file)", where)
            if isinstance(link, h5py.SoftLink):
                raise self._fail("a soft link (only hard links are allowed)", where)
            if not isinstance(link, h5py.HardLink):
                raise self._fail("a link of unknown kind", where)
            obj = group[name]
            if isinstance(obj, h5py.Group):
                if depth == 0 and name != "kernels":
                    raise self._fail("an unknown top-level group (expected /kernels)", where)
                if name.startswith("@"):
                    raise self._fail("a group named like a version", where)
                if self._read_attrs(obj, where):
                    raise self._fail("attributes on a group", where)
                self._walk(obj, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                if depth == 0:
                    if name not in BLOBS[self.kind]:
                        raise self._fail("an unknown top-level dataset", where)
                    self._check_dataset(obj, where, blob=True)
                    self.blobs.add(name)
                elif not name.startswith("@"):
                    raise self._fail("a dataset not named '@<version>'", where)
                else:
                    self._check_kernel(obj, where)
            else:
                raise self._fail("an object that is neither group nor dataset", where)

    def _check_dataset(self, ds: h5py.Dataset, where: str, *, blob: bool = False) -> tuple[bool, int]:
        """Layout, filters and declared size of a dataset; returns (contiguous, nbytes)."""
        dcpl = ds.id.get_create_plist()
        layout = dcpl.get_layout()
        if layout == h5py.h5d.VIRTUAL:
            raise self._fail("a virtual dataset (it would read other files)", where)
        if dcpl.get_external_count():
            raise self._fail("external raw storage (it would read another file)", where)
        if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT, h5py.h5d.CHUNKED):
            raise self._fail("an unknown dataset layout", where)
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        unknown = [f for f in filters if f not in ALLOWED_FILTERS]
        if unknown:
            raise self._fail(
                f"compression filter id {unknown[0]} is not allowed "
                f"(allowed: {', '.join(ALLOWED_FILTERS.values())})",
                where,
            )
        tid = ds.id.get_type()
        if tid.get_class() not in (h5py.h5t.INTEGER, h5py.h5t.FLOAT):
            raise self._fail(f"dtype {ds.dtype} is not a plain number type", where)
        if tid.committed():
            raise self._fail("a committed (named or anonymous) datatype; kreg writes plain types only", where)
        dtype = ds.dtype
        if blob:
            if dtype != np.uint8 or ds.ndim != 1:
                raise self._fail("a top-level document must be a 1-D uint8 dataset", where)
        elif dtype.newbyteorder("=").name not in DTYPES or dtype.byteorder not in "<>=|":
            raise self._fail(f"dtype {dtype} is not one of {', '.join(DTYPES)}", where)
        if not any(tid.equal(t) for t in _standard_types(dtype)):
            raise self._fail(
                f"dtype {dtype} is not a standard type (a bit offset, a precision, padding or a float "
                "layout of its own); values would not be readable at their file offset",
                where,
            )
        if not blob and ds.ndim > self.limits.max_rank:
            raise self._fail(f"{ds.ndim} dimensions, at most {self.limits.max_rank} allowed", where)
        shape = ds.shape or ()
        nbytes = math.prod(shape) * dtype.itemsize
        cap = self.limits.max_manifest_bytes if blob and self.kind == "pack" else self.limits.max_kernel_bytes
        if nbytes > cap:
            raise self._fail(f"declares {nbytes} bytes, more than the {cap} allowed", where)
        self._total += nbytes
        if self._total > self.limits.max_total_bytes:
            raise self._fail(f"declares more than {self.limits.max_total_bytes} bytes in all", where)
        stored = ds.id.get_storage_size()
        contiguous = layout != h5py.h5d.CHUNKED and not filters
        if contiguous:
            offset = ds.id.get_offset() if layout == h5py.h5d.CONTIGUOUS else 0
            if stored < nbytes or offset is None or offset + stored > self.size:
                raise self._fail(
                    f"declares {nbytes} bytes but the file holds {stored} for it (truncated or forged shape)", where
                )
        else:
            if stored == 0 or stored * self.limits.max_compression_ratio < nbytes or stored > self.size:
                raise self._fail(
                    f"declares {nbytes} bytes from {stored} stored bytes (a compression bomb or a truncated file)",
                    where,
                )
            if layout == h5py.h5d.CHUNKED:
                check_chunks(ds, dcpl, shape, dtype.itemsize, bool(filters), where, size=self.size,
                             limits=self.limits, fail=self._fail)
        return contiguous, nbytes


    def _check_kernel(self, ds: h5py.Dataset, where: str) -> None:
        contiguous, _ = self._check_dataset(ds, where)
        attrs = self._read_attrs(ds, where)
        if set(attrs) != {"record"} or not isinstance(attrs["record"], str):
            raise self._fail("a kernel dataset carries exactly one text attribute, 'record'", where)
        try:
            record = parse_json(attrs["record"])
        except ValueError:
            raise self._fail("the record is not valid JSON", where) from None
        if not isinstance(record, dict):
            raise self._fail("the record is not a JSON object", where)
        version = record.get("schema_version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise too_new(f"{self.path}: kernel at {where}", "schema", version, SCHEMA_VERSION)
        name, ver = record.get("name"), record.get("version")
        expected = f"/kernels/{name}/@{ver}"
        if not isinstance(name, str) or type(ver) is not int or where != expected:
            raise self._fail(f"the record names {escape(str(name))}@{ver!r} but sits elsewhere", where)
        if list(record.get("shape", ())) != list(ds.shape) or record.get("dtype") != ds.dtype.newbyteorder("=").name:
            raise self._fail(
                f"the record says shape {record.get('shape')} {record.get('dtype')}, "
                f"the dataset holds {list(ds.shape)} {ds.dtype.newbyteorder('=').name}",
                where,
            )
        offset = ds.id.get_offset() if contiguous and ds.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS else None
        entry = Entry(where, record, tuple(ds.shape), ds.dtype, contiguous, offset, attrs["record"])
        self.entries[entry.ref] = entry

    # -- reading ----------------------------------------------------------

    def read(self, entry: Entry, *, verify: bool = True) -> np.ndarray:
        """Read a checked kernel's values (native byte order) and verify its sha256.

        Raises:
            IntegrityError: the values do not hash to the recorded sha256.
        """
        out = np.empty(entry.shape, entry.dtype.newbyteorder("="))
        try:
            self._h5[entry.path].read_direct(out)
        except Exception as exc:  # a damaged chunk, a failing filter, a short read
            raise UnsafeFileError(f"{self.path}: could not read {escape(entry.ref)} ({type(exc).__name__}: {exc}).") from None
        if verify:
            digest = content_hash(out)
            if digest != entry.record.get("sha256"):
                raise IntegrityError(
                    f"{self.path}: the values of {entry.ref} do not match their sha256 "
                    f"(recorded {str(entry.record.get('sha256'))[:12]}..., computed {digest[:12]}...). "
                    "The file is corrupt or was altered; restore it from a backup or remove that version."
                )
            problems = record_problems(entry.record, out, check_hash=False)
            if problems:
                raise IntegrityError(f"{self.path}: the record of {escape(entry.ref)} lies: {'; '.join(problems)}.")
        return out

    def read_blob(self, name: str) -> bytes:
        """The bytes of a top-level uint8 dataset (checked at open): an index's JSON, a pack's manifest."""
        if name not in BLOBS[self.kind] or name not in self._h5:
            raise self._fail(f"no {name!r} dataset in this {self.kind}")
        try:
            return self._h5[name][()].tobytes()
        except Exception as exc:
            raise UnsafeFileError(f"{self.path}: could not read {name} ({type(exc).__name__}: {exc}).") from None

    @property
    def _h5(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"{self.path} is closed.")
        return self._file

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> GuardedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else f"{len(self.entries)} kernels"
        return f"<GuardedFile {str(self.path)!r} ({self.kind}, {state})>"


def check_chunks(ds: h5py.Dataset, dcpl: Any, shape: tuple[int, ...], itemsize: int, filtered: bool,
                 where: str, *, size: int, limits: Limits, fail: Callable[[str, str], UnsafeFileError]) -> None:
    """Each chunk, not only the dataset: no larger than the dataset, inside the file, and
    expanding at most ``max_compression_ratio`` times (libhdf5 allocates a whole chunk to
    read any part of it, so one huge chunk of a tiny dataset is a memory bomb)."""
    chunk = tuple(dcpl.get_chunk())
    if len(chunk) != len(shape) or any(c > max(s, 1) for c, s in zip(chunk, shape)):
        raise fail(f"chunk shape {chunk} is larger than the dataset shape {shape}", where)
    chunk_bytes = math.prod(chunk) * itemsize
    count = ds.id.get_num_chunks()
    if count > limits.max_chunks:
        raise fail(f"{count} chunks, at most {limits.max_chunks} allowed", where)
    for i in range(count):
        info = ds.id.get_chunk_info(i)
        if info.byte_offset is None or info.size == 0 or info.byte_offset + info.size > size:
            raise fail(f"chunk {i} lies outside the file (a truncated or forged file)", where)
        ratio = limits.max_compression_ratio if filtered else 1
        if info.size * ratio < chunk_bytes:
            raise fail(
                f"chunk {i} expands {info.size} stored bytes to {chunk_bytes} "
                f"(a compression bomb: at most {ratio}:1)",
                where,
            )


def read_attrs(obj: h5py.HLObject, where: str, limits: Limits,
               fail: Callable[[str, str], UnsafeFileError]) -> dict[str, Any]:
    """An object's attributes, each a scalar UTF-8 string or a plain integer within ``limits``;
    anything else is refused through ``fail(what, where)``."""
    names = list(obj.attrs)
    if len(names) > limits.max_attributes:
        raise fail(f"{len(names)} attributes, at most {limits.max_attributes} allowed", where)
    out: dict[str, Any] = {}
    for name in names:
        aid = obj.attrs.get_id(name)
        tid = aid.get_type()
        cls = tid.get_class()
        if aid.shape != ():
            raise fail(f"attribute {escape(name)} must be a scalar", where)
        if tid.committed():
            raise fail(f"attribute {escape(name)} has a committed (named) datatype", where)
        cap = limits.max_record_bytes if name == "record" else limits.max_attribute_bytes
        if cls == h5py.h5t.STRING:
            if not tid.is_variable_str() or tid.get_cset() not in (h5py.h5t.CSET_UTF8, h5py.h5t.CSET_ASCII):
                raise fail(f"attribute {escape(name)} must be a variable-length UTF-8 string", where)
            value = obj.attrs[name]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "strict")
            if len(value.encode("utf-8")) > cap:
                raise fail(f"attribute {escape(name)} is larger than {cap} bytes", where)
            out[name] = value
        elif cls == h5py.h5t.INTEGER and tid.get_size() <= 8 and _plain_integer(tid):
            out[name] = int(obj.attrs[name])
        else:
            raise fail(f"attribute {escape(name)} has a type kreg does not read", where)
    return out


def _valid_link_name(name: str, depth: int) -> bool:
    if name.startswith("@"):
        return depth >= 2 and name[1:].isascii() and name[1:].isdigit() and name[1] != "0"
    return bool(name) and name[0] not in "._-" and set(name) <= _SEGMENT_CHARS and ".." not in name


def _plain_integer(tid: Any) -> bool:
    return tid.get_precision() == 8 * tid.get_size() and tid.get_offset() == 0


_STANDARD: dict[str, list[Any]] = {}


def _standard_types(dtype: np.dtype) -> list[Any]:
    """The HDF5 types of ``dtype`` in either byte order, as libhdf5 writes them from NumPy:
    full precision, no bit offset, no padding, IEEE float fields."""
    name = dtype.newbyteorder("=").name
    if name not in _STANDARD:
        base = np.dtype(name)
        _STANDARD[name] = [h5py.h5t.py_create(base.newbyteorder(order)) for order in "<>"]
    return _STANDARD[name]


def end_of_file(head: bytes) -> int | None:
    """The end-of-file address the HDF5 superblock at the start of ``head`` records
    (base address plus end-of-file address), or ``None`` if it cannot be read.

    The superblock layouts (HDF5 file format specification, section II.A): versions 0
    and 1 keep base, free-space, end-of-file and driver addresses after 24 (v0) or 28
    (v1) bytes; versions 2 and 3 keep base, extension, end-of-file and root addresses
    after 12 bytes. ``sizeof offsets`` is at byte 13 (v0, v1) or 9 (v2, v3).
    """
    if len(head) < 14 or head[:8] != HDF5_SIGNATURE:  # byte 13 is read below: a shorter file is no HDF5
        return None
    version = head[8]
    if version in (0, 1):
        size, start = head[13], 24 if version == 0 else 28
    elif version in (2, 3):
        size, start = head[9], 12
    else:
        return None
    if size not in (2, 4, 8) or len(head) < start + 3 * size:
        return None
    base = int.from_bytes(head[start:start + size], "little")
    end = int.from_bytes(head[start + 2 * size:start + 3 * size], "little")
    return base + end


def check_end_of_file(path: Path, size: int, head: bytes) -> None:
    """The file ends where its superblock says: nothing appended (an HDF5+zip polyglot,
    a second payload) and nothing cut off."""
    end = end_of_file(head)
    if end is None:
        raise UnsafeFileError(
            f"{path}: the HDF5 superblock is damaged or of an unknown version; refused."
        )
    if end < size:
        raise UnsafeFileError(
            f"{path}: {size - end} bytes follow the end of the HDF5 file (its superblock "
            f"says {end} bytes): data appended to a kreg file (a polyglot, e.g. HDF5+zip) is refused."
        )
    if end > size:
        raise UnsafeFileError(
            f"{path}: the file is truncated: its superblock says {end} bytes, the file holds "
            f"{size}. Copy it again from its source."
        )


def check_plain_file(path: Path) -> int:
    """Refuse what is not a regular HDF5 file before libhdf5 sees it; return its size."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise UnsafeFileError(f"Cannot open {path}: {exc.strerror}.") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFileError(f"{path} is a symbolic link; kreg opens only regular files. Pass the real path.")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFileError(f"{path} is not a regular file (a directory, FIFO or device).")
    try:
        with open(path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except OSError as exc:  # e.g. /proc/self/mem: a "regular file" whose read fails
        raise UnsafeFileError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if head != HDF5_SIGNATURE:
        kind = "empty" if not head else "not HDF5 (no HDF5 signature at byte 0)"
        raise UnsafeFileError(f"{path} is {kind}; a kreg file is an HDF5 container written by kreg.")
    return info.st_size
