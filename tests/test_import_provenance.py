"""What a kernel says about where it came from survives the ways kernels travel: a JSON export
added back, and a signed pack imported elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli

SOURCE = {"framework": "torch", "framework_version": "2.3.1", "model": "resnet18", "layer": "conv1",
          "checkpoint_sha256": "ab" * 32}


def kreg(db: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


@pytest.fixture
def source_db(tmp_path: Path) -> Path:
    """A registry with a learned kernel (its source recorded) and a generated one (a family's)."""
    db = tmp_path / "src"
    with registry.Registry(db) as reg:
        reg.add("team/learned", np.arange(9, dtype="f4").reshape(3, 3) - 4, origin="learned",
                provenance={"source": SOURCE}, description="conv1 of a ResNet")
        reg.add("team/blur", reg.load("gaussian", ksize=5, sigma=1.0))
    return db


def test_a_json_export_added_back_keeps_provenance_source(source_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert kreg(source_db, "export", "team/learned", "-o", str(out)).exit_code == 0
    exported = json.loads(out.read_text())
    written = exported["record"]["provenance"]["source"] if "record" in exported else exported["provenance"]["source"]
    assert written == SOURCE  # the file itself carries it
    result = kreg(tmp_path / "dst", "add", "other/learned", "--from", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(kreg(tmp_path / "dst", "show", "other/learned", "--json").stdout)
    assert record["provenance"]["source"] == SOURCE
    assert record["provenance"]["origin"] == "imported"  # values from a file, as the README says


@pytest.mark.parametrize("signed", [True, False])
def test_a_signed_pack_keeps_learned_and_generated_an_unsigned_one_says_imported(
        source_db: Path, tmp_path: Path, signed: bool) -> None:
    key = tmp_path / "keys" / "team.key"
    assert kreg(source_db, "keygen", "-o", str(key)).exit_code == 0
    pack = tmp_path / "team.h5"
    sign = ["--sign", str(key)] if signed else []
    assert kreg(source_db, "export", "team/*", "sobel_x", "-o", str(pack), *sign).exit_code == 0
    trust = ["--trust", f"{key}.pub"] if signed else []
    result = kreg(tmp_path / "dst", "import", str(pack), "--prefix", "in/", *trust)
    assert result.exit_code == 0, result.output
    dst = registry.Registry(tmp_path / "dst")
    origins = {name: dst.load(f"in/{name}").spec.provenance.origin for name in ("team/learned", "team/blur", "sobel_x")}
    if signed:
        assert origins == {"team/learned": "learned", "team/blur": "generated", "sobel_x": "imported"}
    else:
        assert set(origins.values()) == {"imported"}
    assert dst.load("in/team/learned").spec.provenance.source.checkpoint_sha256 == SOURCE["checkpoint_sha256"]
    assert dst.load("in/team/blur").spec.provenance.pack is not None
    assert [r.name for r in dst.list_kernels("in/*", origin="imported")] == (
        ["in/sobel_x"] if signed else ["in/sobel_x", "in/team/blur", "in/team/learned"])
