"""Packs: large packs round-trip, old packs are read, identity is more than a hash, rollbacks and keys."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from registry import IntegrityError, InvalidKernelError, Registry
from registry.format.pack import parse_pack, write_pack
from registry.store.packs import import_pack

DATA = Path(__file__).parent / "data"


def pairs(kernels) -> list:
    return [(k._record, k.array) for k in kernels]


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "reg", builtins=False)


def test_a_pack_of_2500_kernels_round_trips(reg: Registry, tmp_path: Path) -> None:
    """Issue 9: exports of 400 or 2,000 kernels could not be imported (a 64 KiB manifest attribute)."""
    rng = np.random.default_rng(1)
    with reg.batch():
        kernels = [reg.add(f"team/k{i:04d}", rng.standard_normal((3, 3)).astype(np.float32),
                           description=f"kernel number {i}") for i in range(2500)]
    pack = write_pack(tmp_path / "big.h5", pairs(kernels), name="big")
    with h5py.File(pack, "r") as f:
        assert "manifest" not in f.attrs and len(f["manifest"][()]) > 64 * 2**10
    fresh = Registry(tmp_path / "fresh", builtins=False)
    report = import_pack(fresh, pack)
    assert [s.action for s in report.steps] == ["add"] * 2500
    assert fresh.load("team/k2499").sha256 == kernels[-1].sha256
    again = import_pack(fresh, pack)  # nothing new the second time
    assert {s.action for s in again.steps} == {"skip"}


def test_a_version_1_pack_is_still_read(reg: Registry) -> None:
    """tests/data/pack-v1.h5 was written by the first pack format (manifest in an attribute)."""
    with h5py.File(DATA / "pack-v1.h5", "r") as f:
        assert "manifest" in f.attrs and "manifest" not in f
    pack = parse_pack(DATA / "pack-v1.h5")
    assert pack.manifest["version"] == 1
    report = import_pack(reg, DATA / "pack-v1.h5")
    assert [s.result for s in report.steps] == ["team/bank@1", "team/edge@1"]
    assert reg.load("team/bank").spec.bias == (0.1, 0.2, 0.3, -0.0)


def test_a_version_1_pack_with_an_altered_record_is_refused(tmp_path: Path) -> None:
    legacy = tmp_path / "v1.h5"
    legacy.write_bytes((DATA / "pack-v1.h5").read_bytes())
    with h5py.File(legacy, "r+") as f:
        record = json.loads(f["kernels/team/edge/@1"].attrs["record"])
        record["provenance"]["description"] = "altered"
        f["kernels/team/edge/@1"].attrs["record"] = json.dumps(record)
    with pytest.raises(IntegrityError, match="does not match its manifest entry"):
        parse_pack(legacy)


def test_equal_values_in_another_layout_are_a_new_version(reg: Registry, tmp_path: Path) -> None:
    """Issue 9: import took w@1 (HWIO) and w@2 (HWIM) with equal values for one kernel."""
    values = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    source = Registry(tmp_path / "source", builtins=False)
    made = [source.add("w", values, layout="HWIO"), source.add("w", values, layout="HWIM")]
    pack = write_pack(tmp_path / "p.h5", pairs(made), name="p")
    report = import_pack(reg, pack)
    assert [(s.source, s.action, s.result) for s in report.steps] == [("w@1", "add", "w@1"), ("w@2", "version", "w@2")]
    assert [reg.load(f"w@{v}").layout for v in (1, 2)] == ["HWIO", "HWIM"]


def test_another_bias_is_a_new_version(reg: Registry, tmp_path: Path) -> None:
    values = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    first = Registry(tmp_path / "source1", builtins=False).add("b", values, layout="HWIO", bias=[1.0, 2.0])
    import_pack(reg, write_pack(tmp_path / "p.h5", pairs([first]), name="p"))
    other_bias = Registry(tmp_path / "source2", builtins=False).add("b", values, layout="HWIO", bias=[1.0, 3.0])
    report = import_pack(reg, write_pack(tmp_path / "q.h5", pairs([other_bias]), name="q"))
    assert [(s.action, s.result) for s in report.steps] == [("version", "b@2")]
    assert reg.load("b@2").spec.bias == (1.0, 3.0)


def test_same_content_is_values_layout_and_bias() -> None:
    from registry.format.content import same_content

    a = {"sha256": "ab" * 32, "layout": "HWIO", "shape": [1, 1, 1, 2], "dtype": "float32", "bias": [1.0, 2.0]}
    assert same_content(a, dict(a))
    assert same_content(a, {**a, "bias": (1, 2), "provenance": {"author": "someone else"}})
    for change in ({"layout": "HWIM"}, {"bias": [1.0, 2.5]}, {"bias": None}, {"sha256": "cd" * 32},
                   {"dtype": "float16"}, {"shape": [1, 1, 2, 1]}):
        assert not same_content(a, {**a, **change}), change


# -- signatures and rollback ------------------------------------------------------------------


@pytest.fixture
def key(tmp_path: Path) -> Path:
    from registry.format.signing import keygen

    private, _, _ = keygen(tmp_path / "keys" / "team.key")
    return private


def signed(tmp_path: Path, key: Path, name: str, values: list, pack_name: str = "edges") -> Path:
    from registry.format.signing import read_key

    source = Registry(tmp_path / f"src-{name}", builtins=False)
    kernel = source.add("edge", values)
    return write_pack(tmp_path / f"{name}.h5", pairs([kernel]), name=pack_name, signing_key=read_key(key, what="--sign"))


def test_an_older_signed_pack_cannot_roll_back_a_newer_one(reg: Registry, tmp_path: Path, key: Path) -> None:
    old = signed(tmp_path, key, "old", [[1.0, -1.0]])
    new = signed(tmp_path, key, "new", [[1.0, -2.0]])
    assert parse_pack(old).created_at < parse_pack(new).created_at
    import_pack(reg, new)
    origin = reg.load("edge@1").spec.provenance.pack
    assert origin.public_key == parse_pack(new).signer and origin.created_at == parse_pack(new).created_at
    with pytest.raises(IntegrityError, match=r"older than the one edge@1 came from .* Pass --allow-downgrade"):
        import_pack(reg, old)
    with pytest.raises(IntegrityError, match="a rollback"):
        import_pack(reg, old, dry_run=True)
    assert reg.versions("edge") == [1]
    import_pack(reg, old, allow_downgrade=True)
    assert reg.versions("edge") == [1, 2]
    # Another pack name, or the same pack again, is no rollback.
    import_pack(reg, signed(tmp_path, key, "other", [[5.0, 5.0]], pack_name="other"))
    import_pack(reg, new)


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_a_rollback_is_judged_against_the_newest_earlier_import(tmp_path: Path, key: Path, order: str) -> None:
    # Two earlier imports of the same key and pack name: a pack between them in time is older
    # than the newest, whichever version that one became, so it is refused.
    first, middle, last = (signed(tmp_path, key, n, [[1.0, -v]]) for n, v in (("t1", 1.0), ("t2", 2.0), ("t3", 3.0)))
    times = []
    for path in (first, middle, last):
        with h5py.File(path, "r") as f:
            times.append(json.loads(f["manifest"][()].tobytes())["created_at"])
    assert times == sorted(times) and len(set(times)) == 3  # the manifests' own times, read with h5py
    reg = Registry(tmp_path / order.replace(" ", "-"), builtins=False)
    if order == "oldest first":
        import_pack(reg, first)
        import_pack(reg, last)
    else:
        import_pack(reg, last)
        import_pack(reg, first, allow_downgrade=True)
    assert reg.versions("edge") == [1, 2]
    with pytest.raises(IntegrityError, match="a rollback") as caught:
        import_pack(reg, middle)
    assert parse_pack(last).created_at.isoformat() in str(caught.value)  # the newest is the one named
    assert reg.versions("edge") == [1, 2]


def test_a_signed_pack_stripped_of_its_signature_is_not_read_as_unsigned(reg: Registry, tmp_path: Path,
                                                                         key: Path) -> None:
    pack = signed(tmp_path, key, "stripped", [[1.0, -1.0]])
    with h5py.File(pack, "r+") as f:
        assert "signature" in f.attrs
        del f.attrs["signature"]  # the manifest still names the key that signed it
    with pytest.raises(IntegrityError, match="half signed"):
        parse_pack(pack)
    with pytest.raises(IntegrityError, match="half signed"):
        import_pack(reg, pack)
    assert reg.list_kernels() == []


def test_the_cli_refuses_a_rollback_unless_told(kreg_cli, tmp_path: Path, key: Path) -> None:
    old = signed(tmp_path, key, "old", [[1.0, -1.0]])
    new = signed(tmp_path, key, "new", [[1.0, -2.0]])
    assert kreg_cli("import", str(new)).exit_code == 0
    refused = kreg_cli("import", str(old))
    assert refused.exit_code != 0 and "Pass --allow-downgrade" in refused.stderr
    assert kreg_cli("import", str(old), "--allow-downgrade").exit_code == 0


@pytest.fixture
def kreg_cli(tmp_path: Path):
    from click.testing import CliRunner

    from registry.cli import cli

    def run(*args: str):
        return CliRunner().invoke(cli, ["--db", str(tmp_path / "cli-reg"), *args], catch_exceptions=False)
    return run


def test_keygen_writes_the_secret_0600_even_over_a_world_readable_file(tmp_path: Path) -> None:
    from registry.format.signing import keygen

    target = tmp_path / "key"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    (tmp_path / "key.pub").write_text("old\n")
    keygen(target, overwrite=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(bytes.fromhex(target.read_text().strip())) == 32
    fresh, _, _ = keygen(tmp_path / "new" / "dir" / "key")  # a fresh home: the directory is made
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700


def test_a_public_key_cannot_sign(tmp_path: Path, key: Path) -> None:
    from registry.format.signing import read_key

    with pytest.raises(InvalidKernelError, match="is a public key: anyone who has it could make the same signature"):
        read_key(f"{key}.pub", what="--sign")
    readable = tmp_path / "copied-key"
    readable.write_text(key.read_text())
    os.chmod(readable, 0o644)
    with pytest.raises(InvalidKernelError, match=r"readable by other users \(mode 0644\)"):
        read_key(readable, what="--sign")
    with pytest.raises(InvalidKernelError, match="not the key itself"):
        read_key(key.read_text().strip(), what="--sign")
    with pytest.raises(InvalidKernelError, match=r"is a private key \(.*\.pub sits next to it\)"):
        read_key(key, what="--trust")
    assert len(read_key(key, what="--sign")) == len(read_key(f"{key}.pub", what="--trust")) == 32


# -- records that lie -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"separable": {"column": [1.0, 1.0], "row": [1.0, 1.0]}}, "outer(column, row) differs from the values"),
        ({"separable": {"column": [1.0, float("nan")], "row": [1.0, 1.0]}}, "finite number"),
        ({"bias": [float("inf")]}, "finite number"),
        ({"description": "\x1b]0;owned\x07"}, "must not contain control characters"),
        ({"author": "\x1b]52;c;cm0gLXJmIH4=\x07"}, "must not contain control characters"),
    ],
)
def test_add_refuses_records_that_lie(reg: Registry, options: dict, reason: str) -> None:
    with pytest.raises(InvalidKernelError, match=re.escape(reason)):
        reg.add("liar", [[1.0, 2.0], [3.0, 4.0]], **options)
    assert reg.versions("liar") == []


def test_true_separable_factors_are_kept(reg: Registry) -> None:
    k = reg.add("sep", np.outer([1, 2, 1], [-1, 0, 1]).astype(np.float32),
                separable={"column": [1, 2, 1], "row": [-1, 0, 1]})
    assert k.spec.separable.column == (1.0, 2.0, 1.0)


def test_metadata_printed_by_the_cli_is_sanitized() -> None:
    """Records that predate the schema's text rule (or a damaged index) still never reach the
    terminal raw: the CLI prints metadata through registry.format.names.escape."""
    from registry.cli.kernels import _flatten
    from registry.format.names import escape

    hostile = "ok\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x07\u202eevil\x9b2J"
    shown = dict(_flatten({"provenance": {"description": hostile, "references": [hostile]}}))
    for text in shown.values():
        assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), text
        assert "\\x1b]0;pwned\\x07" in text
    assert escape("caf\u00e9 \u2603", quote=False) == "caf\u00e9 \u2603"  # printable text is kept


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"origin": "builtin"}, "origin 'builtin' is reserved"),
        ({"provenance": {"pack": {"name": "official", "sha256": "ab" * 32}}}, "provenance.pack is recorded by kreg import only"),
        ({"provenance": {"generator": {"family": "gaussian", "parameters": {"sigma": 1.0, "ksize": 3}}}},
         "the generator 'gaussian' does not make these values"),
    ],
)
def test_claims_a_writer_cannot_make(options: dict, reason: str) -> None:
    """The pure check the store's add() calls (registry.kernels.claims); add() itself is tested below."""
    from registry.kernels.claims import claim_problems

    provenance = {"origin": options.get("origin", "handmade"), **options.get("provenance", {})}
    problems = claim_problems({"provenance": provenance}, np.ones((3, 3), np.float32))
    assert any(reason in p for p in problems), problems
    assert claim_problems({"provenance": {"origin": "handmade"}}, np.ones((3, 3), np.float32)) == []


@pytest.mark.parametrize("options", [
    {"origin": "builtin"},
    {"provenance": {"pack": {"name": "official", "sha256": "ab" * 32}}},
    {"provenance": {"generator": {"family": "gaussian", "parameters": {"sigma": 1.0, "ksize": 3}}}},
])
def test_add_refuses_forged_claims(reg: Registry, options: dict) -> None:
    with pytest.raises(InvalidKernelError, match="reserved|recorded by kreg import only|does not make these values"):
        reg.add("forged", np.ones((3, 3), np.float32), **options)
