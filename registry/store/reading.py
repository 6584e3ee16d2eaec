"""The read path of a stored version: its values at their recorded offset, and its receipt.

Neither opens HDF5 when the index (or the receipt) says where the values start: a fresh
process loading a stored kernel imports neither h5py nor pydantic.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .._content import content_hash
from .._exceptions import IntegrityError, KregError, UnsafeFileError
from .._kernel import Kernel
from .backend import Backend
from .index import object_key
from .writer import RECEIPT_FORMAT, receipt_key


def read_values(backend: Backend, record: dict[str, Any], offset: int | None, *, verify: bool) -> np.ndarray:
    """The values of a stored version: read at their offset (no HDF5 parsing), else through
    the guarded reader; their sha256 checked unless ``verify`` is off."""
    name, version = record["name"], record["version"]
    key = object_key(name, version)
    dtype = np.dtype(record["dtype"]).newbyteorder("<")
    if offset is None:
        from .._guard import GuardedFile

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


def load_by_receipt(backend: Backend, name: str, version: int, *, verify: bool) -> Kernel | None:
    """``name@version`` from its receipt (see ``writer.receipt``): two reads, the receipt and the
    values. None if there is no receipt or it does not hold together: a receipt naming another
    version, a bad offset, values that do not match its record; the index path then decides."""
    try:
        document = json.loads(backend.read(receipt_key(name, version)))
        record, offset = document["record"], document["offset"]
        if (document.get("format") != RECEIPT_FORMAT or (record.get("name"), record.get("version")) != (name, version)
                or not (offset is None or (type(offset) is int and offset >= 0))):
            return None
        return Kernel(record, read_values(backend, record, offset, verify=verify))
    except (KregError, ValueError, TypeError, KeyError, AttributeError):
        return None
