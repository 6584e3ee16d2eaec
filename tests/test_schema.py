"""Schema v1: the models, the checked-in JSON Schema, golden examples, version handling."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from registry import InvalidKernelError, Registry, SchemaVersionError
from registry._paths import schema_dir
from registry._spec import SCHEMA_VERSION, KernelRecord, json_schema, parse_record

EXAMPLES = sorted((schema_dir() / "v1" / "examples").glob("*.json"))


def test_checked_in_json_schema_matches_the_models() -> None:
    checked_in = json.loads((schema_dir() / "v1" / "kernel-record.schema.json").read_text())
    assert checked_in == json_schema(), "schema/ drifted from the models: run 'make schema'"


def test_there_is_one_schema_file_per_version() -> None:
    versions = sorted(p.name for p in schema_dir().glob("v*") if p.is_dir())
    assert versions == [f"v{v}" for v in range(1, SCHEMA_VERSION + 1)]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_golden_examples_validate(example: Path) -> None:
    from datetime import datetime

    record = parse_record(example.read_text())
    assert record.schema_version == 1
    # No field is silently dropped: every field of the example, at every depth (provenance and
    # its generator included), is in the validated record with the same value.
    dumped = record.model_dump(mode="json")
    original = json.loads(example.read_text())

    def missing(given: object, kept: object, where: str) -> list[str]:
        if isinstance(given, dict) and isinstance(kept, dict):
            return [m for key, value in given.items()
                    for m in (missing(value, kept[key], f"{where}.{key}") if key in kept else [f"{where}.{key}"])]
        if where.endswith(".created_at"):  # the same instant: "+00:00" is written back as "Z"
            given, kept = (datetime.fromisoformat(str(t).replace("Z", "+00:00")) for t in (given, kept))
        return [] if given == kept else [f"{where} (was {given!r}, now {kept!r})"]

    assert missing(original, dumped, example.stem) == []


def test_golden_examples_validate_against_the_json_schema_too() -> None:
    import jsonschema

    schema = json.loads((schema_dir() / "v1" / "kernel-record.schema.json").read_text())
    for example in EXAMPLES:
        jsonschema.validate(json.loads(example.read_text()), schema)


def test_models_are_frozen() -> None:
    record = parse_record(EXAMPLES[0].read_text())
    with pytest.raises(Exception, match="frozen"):
        record.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "float128"}, "dtype"),
        ({"layout": "CHW"}, "layout"),
        ({"shape": [3, 3, 1]}, "layout HW needs a shape of rank 2"),
        ({"name": "a..b"}, "must not contain '..'"),
        ({"name": "/abs"}, "name"),
        ({"sha256": "xyz"}, "sha256"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"operation": "convolution"}, "operation"),
    ],
)
def test_bad_records_are_refused_with_the_field_named(change: dict, message: str) -> None:
    data = {**json.loads(EXAMPLES[0].read_text()), **change}
    with pytest.raises(InvalidKernelError, match=message):
        parse_record(data)


def test_created_at_must_carry_a_time_zone() -> None:
    data = json.loads(EXAMPLES[0].read_text())
    data["provenance"]["created_at"] = "2026-11-25T00:00:00"
    with pytest.raises(InvalidKernelError, match="time zone"):
        parse_record(data)


def test_a_newer_schema_version_is_refused_naming_both_versions() -> None:
    data = {**json.loads(EXAMPLES[0].read_text()), "schema_version": 2}
    with pytest.raises(SchemaVersionError) as info:
        parse_record(data, where="pack.h5")
    assert str(info.value) == (
        "pack.h5 uses kreg schema version 2, but this kreg reads schema versions up to 1. "
        "Upgrade kreg (pip install -U kreg) to read it."
    )


def test_older_versions_are_migrated_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this kreg is at v2 (which renamed nothing but added `license_url`):
    a v1 record must pass through MIGRATIONS[1] and validate as v2."""
    from typing import Literal

    from registry import _spec

    class RecordV2(KernelRecord):
        schema_version: Literal[2] = 2  # type: ignore[assignment]
        license_url: str

    def v1_to_v2(record: dict) -> dict:
        return {**record, "license_url": "https://spdx.org/licenses/MIT.html"}

    monkeypatch.setattr(_spec, "MIGRATIONS", {1: v1_to_v2})
    monkeypatch.setattr(_spec, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(_spec, "KernelRecord", RecordV2)
    migrated = _spec.parse_record(EXAMPLES[0].read_text())
    assert isinstance(migrated, RecordV2)
    assert (migrated.schema_version, migrated.license_url) == (2, "https://spdx.org/licenses/MIT.html")


def test_a_v2_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """A pack written by a future kreg: one kernel whose record says schema_version 2."""
    reg = Registry(tmp_path / "reg", builtins=False)
    reg.add("k", [[1.0]])
    obj = tmp_path / "reg" / "kernels" / "k" / "@1.h5"
    with h5py.File(obj, "r+") as f:
        record = json.loads(f["kernels/k/@1"].attrs["record"])
        record["schema_version"] = 2
        record["new_in_v2"] = {"anything": True}
        f["kernels/k/@1"].attrs["record"] = json.dumps(record)
    from registry._guard import GuardedFile

    with pytest.raises(SchemaVersionError, match="schema version 2, but this kreg reads schema versions up to 1"):
        GuardedFile(obj)


def test_record_round_trips_through_json() -> None:
    record = parse_record((schema_dir() / "v1" / "examples" / "learned-conv1.json").read_text())
    again = KernelRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.ref == "mnist/conv1@3"
    assert np.array(again.shape).prod() == 200
