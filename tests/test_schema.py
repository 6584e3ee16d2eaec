"""Schema v1: the models, the checked-in JSON Schema, golden examples, version handling."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from registry import InvalidKernelError, Registry, SchemaVersionError
from registry._paths import schema_dir
from registry.format.spec import SCHEMA_VERSION, KernelRecord, json_schema, parse_record

EXAMPLES = sorted((schema_dir() / "v1" / "examples").glob("*.json"))


def test_checked_in_json_schema_matches_the_models() -> None:
    checked_in = json.loads((schema_dir() / "v1" / "kernel-record.schema.json").read_text())
    assert checked_in == json_schema(), "schema/ drifted from the models: run 'make schema'"


def test_there_is_one_schema_file_per_version() -> None:
    versions = sorted(p.name for p in schema_dir().glob("v*") if p.is_dir())
    assert versions == [f"v{v}" for v in range(1, SCHEMA_VERSION + 1)]


@pytest.mark.parametrize("version", [0, -1, SCHEMA_VERSION + 1])
def test_a_schema_version_this_kreg_cannot_print_names_the_ones_it_has(version: int) -> None:
    shipped = sorted(int(p.name[1:]) for p in schema_dir().glob("v*") if p.is_dir())  # the checked-in folders
    with pytest.raises(SchemaVersionError, match=rf"the versions it can print: {', '.join(map(str, shipped))}\)\. "
                                                 rf"Received: {version}, ") as caught:
        json_schema(version)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_golden_examples_validate(example: Path) -> None:
    record = parse_record(example.read_text(), stored=True)
    assert record.schema_version == 1
    # A validated record dumps back to the same JSON, provenance included: no field of the
    # example is dropped or changed, and nothing but defaults is added.
    original = json.loads(example.read_text())
    assert same_json(record.model_dump(mode="json", exclude_none=True), original, defaults=record)


def same_json(dumped: object, original: object, *, defaults: object, path: str = "") -> bool:
    """``dumped`` equals ``original`` but for times written another way and fields ``original``
    leaves at their default."""
    from datetime import datetime

    if isinstance(original, dict):
        assert isinstance(dumped, dict), path
        missing = set(original) - set(dumped)
        assert not missing, f"dropped: {path}{sorted(missing)}"
        for key in dumped:
            if key not in original:  # added by validation: must be the schema default
                from pydantic import BaseModel

                field = type(defaults).model_fields.get(key) if isinstance(defaults, BaseModel) else None
                assert field is not None and dumped[key] in (field.default, [], {}, ()), f"added: {path}{key}"
                continue
            same_json(dumped[key], original[key], defaults=getattr(defaults, key, None), path=f"{path}{key}.")
        return True
    if path.endswith("created_at.") and isinstance(original, str):
        assert datetime.fromisoformat(str(dumped).replace("Z", "+00:00")) == datetime.fromisoformat(
            original.replace("Z", "+00:00")), path
        return True
    assert dumped == original, f"changed: {path} {dumped!r} != {original!r}"
    return True


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

    from registry.format import spec as _spec

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
    from registry.format.guard import GuardedFile

    with pytest.raises(SchemaVersionError, match="schema version 2, but this kreg reads schema versions up to 1"):
        GuardedFile(obj)


def test_record_round_trips_through_json() -> None:
    record = parse_record((schema_dir() / "v1" / "examples" / "learned-conv1.json").read_text())
    again = KernelRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.ref == "mnist/conv1@3"
    assert np.array(again.shape).prod() == 200


# -- what another language implements: negative examples and a reader without kreg ------------

SCHEMA_FILE = schema_dir() / "v1" / "kernel-record.schema.json"
INVALID = sorted((schema_dir() / "v1" / "examples" / "invalid").glob("*.json"))
BEYOND = sorted((schema_dir() / "v1" / "examples" / "invalid-beyond-json-schema").glob("*.json"))


def json_schema_errors(text: str) -> list[str]:
    """What a strict JSON parser plus a draft 2020-12 validator (format assertions on) say."""
    import jsonschema

    from plain_reader import Refused, strict_json

    try:
        data = strict_json(text)
    except Refused as exc:
        return [str(exc)]
    validator = jsonschema.Draft202012Validator(
        json.loads(SCHEMA_FILE.read_text()), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return [e.message for e in validator.iter_errors(data)]


def test_there_are_negative_examples() -> None:
    assert len(INVALID) >= 20 and len(BEYOND) >= 3


@pytest.mark.parametrize("example", INVALID, ids=lambda p: p.stem)
def test_each_invalid_example_is_refused_by_pydantic_and_by_json_schema(example: Path) -> None:
    text = example.read_text()
    assert json_schema_errors(text), f"{example.name}: a JSON-Schema validator accepts it"
    with pytest.raises((InvalidKernelError, SchemaVersionError)):
        parse_record(text, stored=True)


@pytest.mark.parametrize("example", BEYOND, ids=lambda p: p.stem)
def test_rules_json_schema_cannot_state_are_refused_by_pydantic_and_by_the_format_rules(example: Path) -> None:
    from plain_reader import Refused, rules_beyond_json_schema

    text = example.read_text()
    with pytest.raises(InvalidKernelError):
        parse_record(text, stored=True)
    with pytest.raises(Refused):
        rules_beyond_json_schema(json.loads(text))
    # If the schema can ever say it, the example belongs in invalid/.
    assert not json_schema_errors(text), f"{example.name}: JSON Schema now refuses it; move it to invalid/"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_golden_examples_pass_the_format_rules_too(example: Path) -> None:
    from plain_reader import rules_beyond_json_schema

    assert not json_schema_errors(example.read_text())
    rules_beyond_json_schema(json.loads(example.read_text()))


def test_the_json_schema_names_its_draft_and_checks_date_times() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$defs"]["Provenance"]["properties"]["created_at"]["format"] == "date-time"
    assert json_schema_errors(json.dumps({**json.loads(EXAMPLES[0].read_text()), "provenance": {
        **json.loads(EXAMPLES[0].read_text())["provenance"], "created_at": "yesterday"}}))


def test_equal_values_in_different_layouts_share_a_content_hash() -> None:
    """FORMAT.md says so: the hash covers dtype, shape and values, not the layout."""
    from registry.format.content import content_hash

    values = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    assert content_hash(values) == content_hash(values.copy())  # as HWIO and as HWIM alike


@pytest.fixture
def signed_pack(tmp_path: Path) -> Path:
    from registry.format.pack import write_pack
    from registry.format.signing import keygen, read_key

    reg = Registry(tmp_path / "reg", builtins=True)
    kernels = [
        reg.load("sobel_x"), reg.load("gaussian5"),
        reg.add("team/sep", np.outer([1, 2, 1], [-1, 0, 1]).astype(np.float32),
                separable={"column": [1, 2, 1], "row": [-1, 0, 1]}, description="Sobel, stored by hand: \u00e9\u2603"),
        reg.add("team/conv", np.random.default_rng(0).standard_normal((3, 3, 2, 4)).astype(np.float16),
                layout="HWIO", bias=[0.5, -0.25, 0.0, 1e-3]),
        reg.add("team/dw", np.arange(36, dtype=np.int8).reshape(3, 3, 2, 2), layout="HWIM", bias=[1, 2, 3, 4]),
    ]
    private, _, _ = keygen(tmp_path / "key")
    return write_pack(tmp_path / "pack.h5", [(k._record, k.array) for k in kernels], name="plain",
                      author="Ada", signing_key=read_key(private, what="--sign"))


def run_plain_reader(pack: Path) -> tuple[int, dict]:
    import subprocess
    import sys

    script = Path(__file__).parent / "plain_reader.py"
    out = subprocess.run([sys.executable, str(script), str(pack), str(SCHEMA_FILE)], capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert out.stderr == "", out.stderr
    return out.returncode, json.loads(out.stdout)


def test_a_reader_without_kreg_verifies_a_pack_from_format_md(signed_pack: Path) -> None:
    code, summary = run_plain_reader(signed_pack)
    assert code == 0, summary
    assert sorted(summary["kernels"]) == ["gaussian5@1", "sobel_x@1", "team/conv@1", "team/dw@1", "team/sep@1"]
    assert summary["signer"] is not None and summary["kreg_imported"] is False


@pytest.mark.parametrize("tamper", ["value", "record", "manifest", "signature"])
def test_the_reader_without_kreg_refuses_a_tampered_pack(signed_pack: Path, tamper: str) -> None:
    """So the plain reader really checks: each kind of tampering makes it refuse."""
    with h5py.File(signed_pack, "r+") as f:
        ds = f["kernels/team/sep/@1"]
        if tamper == "value":
            ds[0, 0] = 7.0
        elif tamper == "record":
            ds.attrs["record"] = ds.attrs["record"].replace("Sobel", "Sobex")
        elif tamper == "manifest":
            f.attrs["digest"] = "0" * 64
        else:
            f.attrs["signature"] = "00" * 64
    code, summary = run_plain_reader(signed_pack)
    assert code == 1 and summary["refused"], summary
