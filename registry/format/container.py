"""The kreg HDF5 container: one file holding kernels and their records.

A store object (one kernel version), a pack (many) and the built-in database
are all this container; ``schema/FORMAT.md`` is its normative description.
Writing lives here; reading goes through :mod:`registry.format.guard`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .limits import LIMITS

#: Magic value of the root ``kreg_format`` attribute.
FORMAT_NAME = "kreg"
#: Version of the container layout (independent of the record schema version).
FORMAT_VERSION = 1
#: The newest kernel-record schema version this kreg reads and writes (registry/_spec/v<N>.py).
SCHEMA_VERSION = 1
#: Kinds of container.
KINDS = ("object", "pack", "index")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` for text read from a file or a store: nesting too deep for the parser (the
    C decoder recurses once per bracket) is a ``ValueError`` like any other malformed text, so
    the caller's one clear error covers it instead of a ``RecursionError`` traceback."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def load_document(text: str | bytes, *, where: str, what: str, fmt: str, supported: int) -> dict[str, Any]:
    """Parse a versioned JSON document of the format (an index listing, a pack manifest).

    Raises:
        UnsafeFileError: not JSON, not that document, or no version.
        SchemaVersionError: written by a newer kreg.
    """
    from .._exceptions import UnsafeFileError, too_new

    try:
        data = parse_json(text)
    except ValueError:
        raise UnsafeFileError(f"{where}: the {what} is not valid JSON.") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise UnsafeFileError(f"{where}: the {what} is not a kreg {what}.")
    version = data.get("version")
    if type(version) is not int or version < 1:
        raise UnsafeFileError(f"{where}: the {what} has no valid version.")
    if version > supported:
        raise too_new(where, what, version, supported)
    return data


def record_text(record: Mapping[str, Any]) -> str:
    """The ``record`` attribute's text for ``record``: JSON with sorted keys, no spaces, ASCII
    only (non-ASCII as ``\\uXXXX``), no NaN or infinity. A pack's ``record_sha256`` is the
    SHA-256 of exactly these bytes, as stored.

    Raises:
        InvalidKernelError: the record holds NaN or infinity (not JSON).
    """
    from .._exceptions import InvalidKernelError

    try:
        return json.dumps(record, separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False)
    except ValueError:
        raise InvalidKernelError(
            f"The record of {record.get('name')}@{record.get('version')} holds NaN or infinity "
            "(in its bias, factors or parameters), which JSON cannot carry. Pass finite numbers."
        ) from None


def check_writable(kernels: list[tuple[Mapping[str, Any], np.ndarray]], *, blobs: Mapping[str, bytes] | None = None
                   ) -> list[str]:
    """Refuse, before a byte is written, what the guarded reader would refuse to read back.

    Returns:
        The ``record`` attribute text of each kernel, in order.

    Raises:
        InvalidKernelError, InvalidNameError: naming the limit (``registry.format.limits``) and the kernel.
    """
    from .._exceptions import InvalidKernelError
    from .content import record_problems
    from .names import check_name

    texts, groups, total = [], set(), 0
    for record, values in kernels:
        ref = f"{record.get('name')}@{record.get('version')}"
        name = check_name(record["name"])
        text = record_text(record)
        # provenance.pack (what import adds, bounded by the schema) lives in the reserve.
        provenance = record.get("provenance")
        own = len(text)
        if isinstance(provenance, Mapping) and "pack" in provenance:
            own = len(record_text({**record, "provenance": {k: v for k, v in provenance.items() if k != "pack"}}))
        if own > LIMITS.max_writer_record_bytes or len(text) > LIMITS.max_record_bytes:
            raise InvalidKernelError(
                f"The record of {ref} is {own} bytes as JSON; kreg stores records of at most "
                f"{LIMITS.max_writer_record_bytes} bytes (its description, references, tags, bias or "
                "generator parameters are too long). Shorten them."
            )
        if values.ndim > LIMITS.max_rank or values.nbytes > LIMITS.max_kernel_bytes:
            raise InvalidKernelError(
                f"{ref}: {values.ndim} dimensions and {values.nbytes} bytes; kreg stores at most "
                f"{LIMITS.max_rank} and {LIMITS.max_kernel_bytes} per kernel."
            )
        total += values.nbytes
        problems = record_problems(record, values, check_hash=False)
        if problems:
            raise InvalidKernelError(f"The record of {ref} does not hold for its values: {'; '.join(problems)}.")
        parts = name.split("/")
        groups.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        texts.append(text)
    for blob in (blobs or {}).values():
        total += len(blob)
    objects = 1 + len(groups) + len(texts) + len(blobs or {})
    if total > LIMITS.max_total_bytes or objects > LIMITS.max_objects:
        raise InvalidKernelError(
            f"{len(texts)} kernels ({total} bytes, {objects} HDF5 objects) do not fit one file: at most "
            f"{LIMITS.max_total_bytes} bytes and {LIMITS.max_objects} objects. Split them into several packs."
        )
    return texts


def dataset_path(name: str, version: int) -> str:
    """Where kernel ``name@version`` lives inside a container."""
    return f"kernels/{name}/@{version}"


def write_container(
    path: str | os.PathLike[str] | BinaryIO,
    kind: str,
    kernels: Iterable[tuple[Mapping[str, Any], np.ndarray]],
    *,
    attrs: Mapping[str, Any] | None = None,
    blobs: Mapping[str, bytes] | None = None,
) -> None:
    """Write a container to ``path`` (a new file) and fsync it.

    Args:
        path: file to create (it must not exist), or a binary buffer to write the image into.
        kind: ``object``, ``pack`` or ``index``.
        kernels: ``(record, values)`` pairs; values are written little-endian,
            C order, contiguous and unfiltered so they can be read at their offset.
        attrs: extra root attributes (JSON-able values are stored as JSON text).
        blobs: top-level 1-D uint8 datasets: the JSON of an index, a pack's ``manifest``.

    Raises:
        InvalidKernelError: a kernel breaks a limit of :mod:`registry.format.limits` or its
            record does not hold for its values; nothing is written.
    """
    import h5py  # here, not at the top: reading a store never needs libhdf5 on its fast path

    kernels = list(kernels)
    texts = check_writable(kernels, blobs=blobs)
    in_memory = not isinstance(path, (str, os.PathLike))
    with h5py.File(path, "w" if in_memory else "x", libver="earliest", track_order=False) as f:
        f.attrs["kreg_format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["kind"] = kind
        for key, value in (attrs or {}).items():
            f.attrs[key] = value if isinstance(value, (str, int)) else json.dumps(value)
        for name, blob in (blobs or {}).items():
            f.create_dataset(name, data=np.frombuffer(blob, dtype=np.uint8), track_times=False)
        group = f.create_group("kernels")
        for (record, values), text in zip(kernels, texts):
            ds = group.create_dataset(
                dataset_path(record["name"], record["version"]).removeprefix("kernels/"),
                data=np.ascontiguousarray(values, values.dtype.newbyteorder("<")),
                track_times=False,
            )
            ds.attrs["record"] = text
    if not in_memory:
        fsync_path(path)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by path, so its data or entries are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src: Path, dst: Path) -> None:
    """Atomically rename ``src`` over ``dst`` and fsync the directory entry."""
    os.replace(src, dst)
    fsync_path(dst.parent)
