"""The versioned kernel-record schema: the current models and forward migration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from ..._exceptions import InvalidKernelError, SchemaVersionError, too_new
from ..container import SCHEMA_VERSION, parse_json
from .v1 import (
    DTYPES,
    LAYOUT_RANKS,
    Generator,
    KernelRecord,
    PackOrigin,
    Provenance,
    Separable,
    Source,
)

__all__ = [
    "DTYPES",
    "LAYOUT_RANKS",
    "SCHEMA_VERSION",
    "Generator",
    "KernelRecord",
    "PackOrigin",
    "Provenance",
    "Separable",
    "Source",
    "json_schema",
    "parse_record",
]

# MIGRATIONS[n] turns a schema-n record dict into a schema-(n+1) one. Version 1
# is the first, so the chain is empty; a v2 adds `MIGRATIONS[1]` here.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def parse_record(data: Mapping[str, Any] | str | bytes, *, where: str = "record", stored: bool = False
                 ) -> KernelRecord:
    """Validate a record, migrating an older schema version forward.

    Args:
        data: the record as a mapping or as JSON text.
        where: what to call the record in error messages (a file and path).
        stored: the record was read from a file, so its ``version`` is from 1 (version 0
            marks a kernel generated in memory, which is never stored); this is the
            record ``schema/v1/kernel-record.schema.json`` describes.

    Raises:
        SchemaVersionError: the record is newer than this kreg, or unknown.
        InvalidKernelError: the record breaks the schema.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = parse_json(data)
        except ValueError as exc:
            raise InvalidKernelError(f"{where}: the record is not valid JSON ({exc}).") from None
    if not isinstance(data, Mapping):
        raise InvalidKernelError(f"{where}: a record is a JSON object. Received: {type(data).__name__}.")
    version = data.get("schema_version")
    if type(version) is not int or version < 1:
        raise SchemaVersionError(
            f"{where}: schema_version must be a whole number from 1. Received: {version!r}."
        )
    if version > SCHEMA_VERSION:
        raise too_new(where, "schema", version, SCHEMA_VERSION)
    if stored and not (type(data.get("version")) is int and data["version"] >= 1):
        raise InvalidKernelError(
            f"{where} breaks schema v{SCHEMA_VERSION}: version: a stored kernel's version is a whole number "
            f"from 1. Received: version={data.get('version')!r}."
        )
    record = dict(data)
    while version < SCHEMA_VERSION:
        record = MIGRATIONS[version](record)
        version += 1
        record["schema_version"] = version
    try:
        return KernelRecord.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidKernelError(f"{where} breaks schema v{SCHEMA_VERSION}: {problems}.") from None


def json_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of kernel records for ``version``, as checked in under ``schema/``."""
    if version != SCHEMA_VERSION:
        # Only the current version is held as models; an older record is migrated, not printed.
        why = ("written by a newer kreg: upgrade kreg (pip install -U kreg) to print it" if version > SCHEMA_VERSION
               else "which is no schema version: they count from 1")
        raise SchemaVersionError(
            f"This kreg knows kernel-record schema version {SCHEMA_VERSION} only (the versions it can print: "
            f"{SCHEMA_VERSION}). Received: {version}, {why}."
        )
    schema = KernelRecord.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://kreg.dev/schema/v{version}/kernel-record.schema.json"
    return schema
