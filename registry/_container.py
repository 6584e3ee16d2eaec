"""The kreg HDF5 container: one file holding kernels and their records.

A store object (one kernel version), a pack (many) and the built-in database
are all this container; ``schema/FORMAT.md`` is its normative description.
Writing lives here; reading goes through :mod:`registry._guard`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: Magic value of the root ``kreg_format`` attribute.
FORMAT_NAME = "kreg"
#: Version of the container layout (independent of the record schema version).
FORMAT_VERSION = 1
#: The newest kernel-record schema version this kreg reads and writes (registry/_spec/v<N>.py).
SCHEMA_VERSION = 1
#: Kinds of container.
KINDS = ("object", "pack", "index")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_document(text: str | bytes, *, where: str, what: str, fmt: str, supported: int) -> dict[str, Any]:
    """Parse a versioned JSON document of the format (an index listing, a pack manifest).

    Raises:
        UnsafeFileError: not JSON, not that document, or no version.
        SchemaVersionError: written by a newer kreg.
    """
    from ._exceptions import UnsafeFileError, too_new

    try:
        data = json.loads(text)
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
        blobs: for ``kind="index"``, top-level uint8 datasets (the index's JSON).
    """
    import h5py  # here, not at the top: reading a store never needs libhdf5 on its fast path

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
        for record, values in kernels:
            ds = group.create_dataset(
                dataset_path(record["name"], record["version"]).removeprefix("kernels/"),
                data=np.ascontiguousarray(values, values.dtype.newbyteorder("<")),
                track_times=False,
            )
            ds.attrs["record"] = json.dumps(record, separators=(",", ":"), sort_keys=True)
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
